"""`python -m alexnet_keras.train --flagfile=flags.txt`: the training command (`cli/train.py`)."""

from alexnet_keras.cli.train import main

if __name__ == "__main__":
    main()
