"""Regenerates the ImageNet class names from WordNet 3.0.

The console script `alexnet-make-imagenet-labels` runs the same code,
`alexnet_keras/cli/make_imagenet_labels.py`.
"""

from alexnet_keras.cli.make_imagenet_labels import main

if __name__ == "__main__":
    main()
