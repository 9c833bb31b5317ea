"""Reads PyTorch state_dicts (e.g. torchvision's alexnet weights) into NumPy arrays.

.safetensors files need only the `safetensors` package; .pth/.pt/.bin files are torch pickles, so
they need PyTorch (loaded with weights_only=True, which refuses to run arbitrary pickled code).
"""

from __future__ import annotations

import os
import pickle
import zipfile
from collections.abc import Mapping
from pathlib import Path

import numpy as np

_TORCH_SUFFIXES = (".pth", ".pt", ".bin")
_SAFETENSORS_SUFFIX = ".safetensors"
# Where training checkpoints commonly nest the state_dict next to epoch, optimizer state, ...
_CHECKPOINT_KEYS = ("state_dict", "model")


def read_state_dict(path: str | os.PathLike[str]) -> dict[str, np.ndarray]:
    """The file's tensors by name, keys unchanged ("features.0.weight"), floats as float32."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path} does not exist (or is not a file)")
    suffix = Path(path).suffix.lower()
    if suffix == _SAFETENSORS_SUFFIX:
        arrays = _read_safetensors(path)
    elif suffix in _TORCH_SUFFIXES:
        arrays = _read_torch(path)
    else:
        accepted = ", ".join((_SAFETENSORS_SUFFIX, *_TORCH_SUFFIXES))
        raise ValueError(f"{path} has an unknown extension {suffix!r}: expected one of {accepted}")
    if not arrays:
        raise ValueError(f"{path} holds no tensors: expected a state_dict of names -> tensors")
    return {name: _as_float32(array) for name, array in arrays.items()}


def _read_safetensors(path: str | os.PathLike[str]) -> dict[str, np.ndarray]:
    from safetensors import SafetensorError
    from safetensors.numpy import load_file

    try:
        return load_file(path)
    except (SafetensorError, TypeError) as error:  # TypeError: a dtype NumPy lacks (bfloat16).
        raise ValueError(
            f"{path} is not a readable safetensors file: expected a header and tensors NumPy "
            f"can hold ({error})"
        ) from error


def _read_torch(path: str | os.PathLike[str]) -> dict[str, np.ndarray]:
    try:
        import torch
    except ImportError as error:
        raise ImportError(
            f"Reading {path} needs PyTorch (a .pth is a torch pickle): pip install "
            "'alexnet_keras[torch]' (the CPU wheel is enough), or convert it to .safetensors, "
            "which needs no torch."
        ) from error
    try:
        loaded = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, EOFError, RuntimeError) as error:
        raise ValueError(_not_loadable(path, error)) from error
    state_dict = _unwrap_checkpoint(loaded)
    if not isinstance(state_dict, Mapping):
        raise ValueError(
            f"{path} holds a {type(loaded).__name__}: expected a state_dict (a mapping of names "
            f"to tensors) or a checkpoint with one under {' or '.join(_CHECKPOINT_KEYS)}"
        )
    return {name: _to_numpy(path, name, value, torch.Tensor) for name, value in state_dict.items()}


def _not_loadable(path: str | os.PathLike[str], error: Exception) -> str:
    # torch's own message suggests weights_only=False, unsafe advice for a file of unknown origin.
    if isinstance(error, pickle.UnpicklingError) and zipfile.is_zipfile(path):
        return (
            f"{path} is a torch file holding more than tensors (a whole pickled nn.Module?), "
            "which weights_only loading refuses: expected a state_dict; re-save it with "
            "torch.save(model.state_dict(), path)"
        )
    return f"{path} is not a PyTorch weights file: expected torch.save() output of a state_dict"


def _unwrap_checkpoint(loaded: object) -> object:
    if isinstance(loaded, Mapping):
        for key in _CHECKPOINT_KEYS:
            if isinstance(loaded.get(key), Mapping):
                return loaded[key]
    return loaded


def _to_numpy(
    path: str | os.PathLike[str], name: object, value: object, tensor_type: type
) -> np.ndarray:
    if not isinstance(name, str) or not isinstance(value, tensor_type):
        raise ValueError(
            f"{path} is not a state_dict: expected names -> tensors, found {name!r}: "
            f"{type(value).__name__}"
        )
    tensor = value.detach().cpu()
    # .float() first: NumPy has no bfloat16, and the result is float32 anyway.
    return (tensor.float() if tensor.is_floating_point() else tensor).numpy()


def _as_float32(array: np.ndarray) -> np.ndarray:
    """Floating arrays as float32; integer buffers (BatchNorm's num_batches_tracked) keep theirs."""
    if np.issubdtype(array.dtype, np.floating):
        return array.astype(np.float32, copy=False)
    return array
