"""Pretrained AlexNet weights from other frameworks: Caffe's bvlc_alexnet, torchvision's alexnet."""

FORMATS = ("caffe", "torchvision")  # Here, free of TensorFlow: the command checks --format first.


def check_format(weights_format: str) -> None:
    """Raises ValueError naming `--format` unless it is one of FORMATS."""
    if weights_format not in FORMATS:
        raise ValueError(f"--format={weights_format} is invalid: expected {' or '.join(FORMATS)}")
