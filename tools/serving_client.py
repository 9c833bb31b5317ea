"""Sends images to a running TF Serving and prints their top-5 classes.

The console script `alexnet-serving-client` runs the same code,
`alexnet_keras/cli/serving_client.py`.
"""

from alexnet_keras.cli.serving_client import main

if __name__ == "__main__":
    main()
