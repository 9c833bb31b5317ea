"""alexnet_keras: AlexNet (Krizhevsky, Sutskever, Hinton, 2012) in TensorFlow/Keras 3."""

__version__ = "0.1.0"
