"""`python -m alexnet_keras.evaluate --model_dir=DIR`: top-1/top-5 error of a run (`cli/`)."""

from alexnet_keras.cli.evaluate import main

if __name__ == "__main__":
    main()
