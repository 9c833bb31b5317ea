"""`python -m alexnet_keras.predict IMAGE... --saved_model=DIR`: top-5 classes (see `cli/`)."""

from alexnet_keras.cli.predict import main

if __name__ == "__main__":
    main()
