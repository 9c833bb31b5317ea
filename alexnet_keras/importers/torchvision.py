"""torchvision's `alexnet()` state_dict (.pth or .safetensors) mapped onto
`build_alexnet(architecture="torchvision")`.

torchvision's net (models/alexnet.py, "One weird trick", Krizhevsky 2014) takes (x / 255 - mean) /
std per RGB channel at 224x224. The mapping is exact:
- conv kernels (out, in, kh, kw) -> (kh, kw, in, out); fc weights (out, in) -> (in, out), fc6's
  rows permuted from torch's channels-first flatten of the 6x6x256 pool to our channels-last one;
- the per-channel 1 / (255 std) is folded into conv1's kernel and 255 mean goes to stats.json, so
  the served network takes RGB 0..255 minus the mean like ours. This holds at conv1's zero-padded
  border too: a zero of (x / 255 - mean) / std is a zero of x - 255 mean.
"""

from __future__ import annotations

import numpy as np

from alexnet_keras import constants
from alexnet_keras.data import stats as stats_lib
from alexnet_keras.importers import imported, torch_format

# torchvision's module paths -> (our layer, weight shape); fc8 may have any number of classes.
ALEXNET_KEYS = {
    "features.0": ("conv1", (64, 3, 11, 11)),
    "features.3": ("conv2", (192, 64, 5, 5)),
    "features.6": ("conv3", (384, 192, 3, 3)),
    "features.8": ("conv4", (256, 384, 3, 3)),
    "features.10": ("conv5", (256, 256, 3, 3)),
    "classifier.1": ("fc6", (4096, 9216)),
    "classifier.4": ("fc7", (4096, 4096)),
    "classifier.6": ("fc8", (None, 4096)),
}


def load(path: str) -> imported.ImportedNet:
    """Reads and validates a torchvision alexnet state_dict into an ImportedNet.

    Raises:
        ValueError: naming the file and the missing/unexpected keys, or a key and its expected
            and found shapes.
        ImportError: for a .pth without PyTorch installed.
        FileNotFoundError: for a missing file.
    """
    state_dict = torch_format.read_state_dict(path)
    _check_keys(state_dict, path)
    std = np.asarray(constants.TORCHVISION_STD_RGB, np.float64)
    mean = np.asarray(constants.TORCHVISION_MEAN_RGB, np.float64)
    weights = {}
    for prefix, (name, shape) in ALEXNET_KEYS.items():
        weight, bias = state_dict[f"{prefix}.weight"], state_dict[f"{prefix}.bias"]
        if not imported.shape_matches(weight.shape, shape):
            raise _shape_error(path, f"{prefix}.weight", name, shape, weight.shape)
        if bias.shape != weight.shape[:1]:
            raise _shape_error(path, f"{prefix}.bias", name, weight.shape[:1], bias.shape)
        if name.startswith("conv"):
            kernel = imported.conv_kernel(weight.astype(np.float64))
            if name == "conv1":  # Its input is (x / 255 - mean) / std, ours x - 255 mean.
                kernel = kernel / (255.0 * std)[None, None, :, None]
        else:
            kernel = imported.fc_kernel(weight, channels_first_input=name == "fc6")
        weights[name] = (np.ascontiguousarray(kernel, np.float32), bias.astype(np.float32))
    imagenet = stats_lib.IMAGENET
    data_stats = stats_lib.DatasetStats(
        mean_rgb=tuple(float(v) for v in 255.0 * mean),
        eigval=imagenet.eigval,
        eigvec=imagenet.eigvec,
        source=(
            f"torchvision alexnet: (x / 255 - {constants.TORCHVISION_MEAN_RGB}) / "
            f"{constants.TORCHVISION_STD_RGB}, 1 / (255 std) folded into conv1; "
            f"PCA: {imagenet.source}"
        ),
    )
    size, resize = constants.TORCHVISION_IMAGE_SIZE, constants.TORCHVISION_RESIZE_SIZE
    return imported.ImportedNet(
        format="torchvision",
        architecture="torchvision",
        lrn_form="paper",
        groups=1,
        use_lrn=False,
        image_size=size,
        resize_size=resize,
        layers=weights,
        num_classes=int(state_dict["classifier.6.weight"].shape[0]),
        stats=data_stats,
        conventions=(
            f"input (x / 255 - mean) / std: 1 / (255 std), std {constants.TORCHVISION_STD_RGB}, "
            "folded into conv1's kernel per input channel (exact, also at the zero padding)",
            f"mean subtraction on the 0..255 scale: 255 x {constants.TORCHVISION_MEAN_RGB}",
            "conv kernels (out, in, kh, kw) -> (kh, kw, in, out); fc (out, in) -> (in, out)",
            "fc6 rows: torch's channels-first flatten of avgpool (c, h, w) -> channels-last",
            "one column, no LRN, dropout before fc6 and fc7 (torchvision's classifier)",
            f"input {size}x{size} centre crops of the shorter side resized to {resize}",
        ),
        details={"state_dict_keys": len(state_dict)},
    )


def _check_keys(state_dict: dict[str, np.ndarray], path: str) -> None:
    expected = {f"{prefix}.{kind}" for prefix in ALEXNET_KEYS for kind in ("weight", "bias")}
    missing = sorted(expected - set(state_dict), key=_key_order)
    unexpected = sorted(set(state_dict) - expected)
    if not missing and not unexpected:
        return
    problems = []
    if missing:
        problems.append(f"missing keys: {', '.join(missing)}")
    if unexpected:
        problems.append(f"unexpected keys: {', '.join(unexpected)}")
        if all(key.startswith("module.") for key in unexpected):
            problems.append("saved from nn.DataParallel? strip the 'module.' prefix")
    raise ValueError(
        f"{path} is not torchvision's alexnet() state_dict (features.0/3/6/8/10 and "
        f"classifier.1/4/6, weight and bias each): {'; '.join(problems)}"
    )


def _shape_error(
    path: str, key: str, layer: str, expected: tuple[int | None, ...], found: tuple[int, ...]
) -> ValueError:
    return ValueError(
        f"{path}: {key} ({layer}) does not match torchvision's alexnet: expected shape "
        f"{imported.describe_shape(expected)}, found {imported.describe_shape(found)}"
    )


def _key_order(key: str) -> tuple:
    """features.10 after features.8, as in the module."""
    prefix, _ = key.rsplit(".", 1)
    return list(ALEXNET_KEYS).index(prefix), key
