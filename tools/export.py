"""Exports a trained run as a TF Serving SavedModel.

The console script `alexnet-export` runs the same code (`alexnet_keras/cli/export.py`).
"""

from alexnet_keras.cli.export import main

if __name__ == "__main__":
    main()
