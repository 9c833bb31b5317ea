"""Pictures of a trained run: filters, predictions, neighbours, curves.

The console script `alexnet-visualize` runs the same code (`alexnet_keras/cli/visualize.py`).
"""

from alexnet_keras.cli.visualize import main

if __name__ == "__main__":
    main()
