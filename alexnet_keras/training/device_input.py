"""What the training input sends to the device: `--input_dtype=auto|float32|uint8`.

uint8: each crop travels as uint8 with its per-image RGB shift (minus the mean, plus the PCA
lighting offset; `preprocessing.preprocess_for_train(uint8_pixels=True)`), and the train step
casts and adds them on the replica's device (`TrainingModel.train_step`): a quarter of the bytes.
"""

from __future__ import annotations

from alexnet_keras.config import TrainConfig
from alexnet_keras.data import stats


def sends_uint8(config: TrainConfig, data_stats: stats.DatasetStats) -> bool:
    """--input_dtype: whether training crops go to the device as uint8 (with their RGB shifts).

    auto: uint8 unless the statistics have a mean image (a per-pixel shift, host only). On a GPU
    the float32 batch's host-to-device copy (79 MB at 128 x 227 px) is 4x the uint8 one; on a CPU
    the batches the input threads write are 4x smaller too, and training from JPEGs measured as
    fast or faster (float32 +7%, bfloat16 +0-4%, AMX Xeon, BUILD_NOTES).
    """
    if config.input_dtype == "uint8" and data_stats.mean_image is not None:
        raise ValueError(
            "--input_dtype=uint8 is invalid with a mean image in --stats_file (a per-pixel "
            "shift, applied on the host): expected float32 or auto."
        )
    if config.input_dtype == "auto":
        return data_stats.mean_image is None
    return config.input_dtype == "uint8"
