"""Imports Caffe bvlc_alexnet or torchvision alexnet weights as a run directory.

Same code as `alexnet_keras/cli/import_weights.py`.
"""

from alexnet_keras.cli.import_weights import main

if __name__ == "__main__":
    main()
