"""The paper's AlexNet (Krizhevsky et al., 2012, Sec. 3, Fig. 2) as a functional Keras model, and
the two published variants whose weights can be imported: Caffe's bvlc_alexnet (the paper's net
with Caffe's LRN) and torchvision's alexnet() (Krizhevsky 2014, "One weird trick")."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import keras

from alexnet_keras import constants
from alexnet_keras.config import ARCHITECTURES, LRN_FORMS
from alexnet_keras.layers import (
    AdaptiveAveragePooling2D,
    ColumnDropout,
    GroupedConv2D,
    GroupedDense,
    GroupedMaxPool2D,
    LocalResponseNormalization,
)

# Layer names are part of the checkpoint and serving contract: keep them stable.
LAYER_NAMES = (
    "conv1", "lrn1", "pool1", "conv2", "lrn2", "pool2", "conv3", "conv4", "conv5", "pool5",
    "fc6", "drop6", "fc7", "drop7", "fc8",
)  # fmt: skip
# torchvision's alexnet(): no LRN; `avgpool` is its AdaptiveAvgPool2d((6, 6)); its classifier drops
# out BEFORE fc6 and fc7, so "dropN" drops layer N's output: drop5 pool5's (via avgpool), drop6
# fc6's (the paper's drop6 too), and nothing drops fc7's.
TORCHVISION_LAYER_NAMES = (
    "conv1", "pool1", "conv2", "pool2", "conv3", "conv4", "conv5", "pool5", "avgpool",
    "drop5", "fc6", "drop6", "fc7", "fc8",
)  # fmt: skip
KERNEL_INITIALIZERS = ("paper", "he_normal", "glorot_uniform")
BIAS_INITIALIZERS = ("paper", "zeros")


def _kernel_initializer(name: str, seed: int | None, index: int) -> keras.initializers.Initializer:
    layer_seed = None if seed is None else seed + index  # Distinct but reproducible per layer.
    if name == "paper":  # Sec. 5: zero-mean Gaussian with standard deviation 0.01.
        return keras.initializers.RandomNormal(0.0, constants.INIT_STDDEV, seed=layer_seed)
    if name == "he_normal":
        return keras.initializers.HeNormal(seed=layer_seed)
    return keras.initializers.GlorotUniform(seed=layer_seed)


def build_alexnet(
    num_classes: int = constants.NUM_CLASSES,
    input_shape: Sequence[int] | None = None,
    dropout: float = 0.5,
    fc_units: int = constants.FC_UNITS,
    groups: int = 2,
    use_lrn: bool = True,
    architecture: str = "paper",
    lrn_form: str = "paper",
    dropout_form: str = "paper",
    kernel_initializer: str = "paper",
    bias_initializer: str = "paper",
    seed: int | None = None,
    input_scale: float = 1.0,
    name: str = "alexnet",
    kernel_policy: object = None,
) -> keras.Model:
    """Builds the paper's AlexNet or a published variant; the model outputs float32 logits
    (serving adds the softmax).

    Why 227 and not 224: the paper says 224x224x3, but conv1 (11x11, stride 4, no padding) maps
    224 to 54.25, not the 55x55x96 the paper reports; 227 gives exactly (227 - 11) / 4 + 1 = 55,
    as in Caffe's bvlc_alexnet and cuda-convnet. With 227 the maps are 55x55x96, 27x27x96,
    27x27x256, 13x13x256, 13x13x384, 13x13x384, 13x13x256, 6x6x256, and with 1000 classes the net
    has 60,965,224 parameters. Any square input from 67 up works (pool5 shrinks, and fc6's input
    size follows), for small-image datasets.

    With LRN, conv1's and conv2's ReLU runs inside lrn1 and lrn2 (`relu=True`, its gradient
    folded into LRN's last backward pass), so those two layers' outputs are pre-activation.

    `groups=2` is the paper's two-column net: conv2, conv4 and conv5 see only their own column's
    maps, LRN normalizes within a column, and the columns meet at conv3 and the fc layers (Sec.
    3.2); fc6-fc8 are split by output units into the two columns (as fc6 and fc7 were on the
    paper's GPUs), each unit reading both columns. Each column's weights are their own draw.
    `groups=1` is the one-column net (same parameter count for conv1, conv3 and fc, more for the
    grouped layers). `training/towers.py` runs column g, forward and backward, on its own device
    (the paper's model parallelism).

    `lrn_form="caffe"` is Caffe's bvlc_alexnet: the paper's net with Caffe's LRN (k=1, alpha 1e-4
    divided by n=5, beta 0.75) across ALL channels of both columns, as bvlc_alexnet ran on one GPU;
    convolutions keep the paper's grouping. 60,965,224 parameters. On the paper's two devices that
    LRN would need an exchange between the columns the paper never made, so towers refuse it.

    `architecture="torchvision"` is torchvision's `alexnet()`: conv1 64@11x11/4 padding 2, pool,
    conv2 192@5x5 padding 2, pool, conv3 384, conv4 256, conv5 256 (3x3, padding 1), pool5,
    adaptive average pooling to 6x6 (`avgpool`), then dropout, fc6, dropout, fc7, fc8; ReLU after
    every conv and fc6/fc7, no LRN, one column (`groups=1`, `use_lrn=False` must be passed).
    Default input 224 (55x55 after conv1, 6x6 at pool5); 61,100,840 parameters with 1000 classes.
    Layer names: `TORCHVISION_LAYER_NAMES`.

    Args:
        num_classes: size of fc8.
        input_shape: `(size, size, 3)`, size >= 67; default 227 (paper), 224 (torchvision).
        dropout: rate of drop6 and drop7 (torchvision: drop5 and drop6); paper: 0.5.
        fc_units: units of fc6 and fc7 (paper: 4096); fewer make small nets for small data
            and the test suite's tiny runs.
        groups: 1 or 2 columns (2 = paper).
        use_lrn: whether lrn1 and lrn2 are present (identity layers are not inserted).
        architecture: "paper" (Fig. 2) or "torchvision".
        lrn_form: "paper" (Sec. 3.3, within a column) or "caffe" (bvlc_alexnet's).
        dropout_form: "paper" (Sec. 4.2: outputs times 1 - rate at test time) or "inverted"
            (kept units divided by 1 - rate while training: Keras, Caffe and torch, whose
            imported weights need it); see `ColumnDropout`.
        kernel_initializer: "paper" (N(0, 0.01)), "he_normal" or "glorot_uniform".
        bias_initializer: "paper" (1 in conv2, conv4, conv5, fc6, fc7; 0 elsewhere) or "zeros".
        seed: makes the initialization reproducible.
        input_scale: multiplies the (mean-subtracted, 0..255) input first; 1.0 = paper. He or
            Glorot initializers assume unit-scale inputs, so pair them with ~1/64. Part of the
            model, so serving applies it too.
        name: model name.
        kernel_policy: an `alexnet_keras.kernels.KernelPolicy` (TensorFlow only): faster
            kernels for the same result, chosen by the training command; None keeps every
            layer's reference `call` (what export, evaluation and the other backends run).
    """
    if architecture not in ARCHITECTURES:
        raise ValueError(
            f"`architecture` must be one of {ARCHITECTURES}. "
            f"Received: architecture={architecture!r}"
        )
    if lrn_form not in LRN_FORMS:
        raise ValueError(f"`lrn_form` must be one of {LRN_FORMS}. Received: lrn_form={lrn_form!r}")
    torchvision = architecture == "torchvision"
    if input_shape is None:
        size = constants.TORCHVISION_IMAGE_SIZE if torchvision else constants.IMAGE_SIZE
        input_shape = (size, size, 3)
    input_shape = tuple(input_shape)
    if len(input_shape) != 3 or input_shape[0] != input_shape[1] or input_shape[2] != 3:
        raise ValueError(
            f"`input_shape` must be (size, size, 3). Received: input_shape={input_shape}"
        )
    if input_shape[0] < constants.MIN_IMAGE_SIZE:
        raise ValueError(
            f"`input_shape` must be at least {constants.MIN_IMAGE_SIZE}x{constants.MIN_IMAGE_SIZE} "
            f"(smaller inputs pool to nothing before fc6). Received: input_shape={input_shape}"
        )
    if not isinstance(num_classes, int) or num_classes < 2:
        raise ValueError(
            f"`num_classes` must be an integer >= 2. Received: num_classes={num_classes}"
        )
    if not isinstance(fc_units, int) or fc_units < groups:
        raise ValueError(
            f"`fc_units` must be an integer >= groups ({groups}). Received: fc_units={fc_units}"
        )
    if not 0.0 <= dropout < 1.0:
        raise ValueError(f"`dropout` must be in [0, 1). Received: dropout={dropout}")
    if groups not in (1, 2):
        raise ValueError(f"`groups` must be 1 or 2. Received: groups={groups}")
    if torchvision and (groups != 1 or use_lrn):
        raise ValueError(
            "architecture='torchvision' is one column without LRN: pass groups=1 and "
            f"use_lrn=False. Received: groups={groups}, use_lrn={use_lrn}"
        )
    if lrn_form == "caffe" and not use_lrn:
        raise ValueError(
            f"lrn_form='caffe' chooses the LRN formula, so it needs use_lrn=True. Received: "
            f"use_lrn={use_lrn}"
        )
    if dropout_form not in constants.DROPOUT_FORMS:
        raise ValueError(
            f"`dropout_form` must be one of {constants.DROPOUT_FORMS}. "
            f"Received: dropout_form={dropout_form!r}"
        )
    if kernel_initializer not in KERNEL_INITIALIZERS:
        raise ValueError(
            f"`kernel_initializer` must be one of {KERNEL_INITIALIZERS}. "
            f"Received: kernel_initializer={kernel_initializer!r}"
        )
    if bias_initializer not in BIAS_INITIALIZERS:
        raise ValueError(
            f"`bias_initializer` must be one of {BIAS_INITIALIZERS}. "
            f"Received: bias_initializer={bias_initializer!r}"
        )

    def init(layer_name: str) -> dict:
        unit_bias = bias_initializer == "paper" and layer_name in constants.LAYERS_WITH_UNIT_BIAS
        return dict(
            kernel_initializer=_kernel_initializer(
                kernel_initializer, seed, LAYER_NAMES.index(layer_name)
            ),
            bias_initializer="ones" if unit_bias else "zeros",
        )

    def conv(
        layer_name: str,
        filters: int,
        size: int,
        strides: int = 1,
        padding: str | int = "same",
        split_input: bool = True,
        activation: str | None = "relu",
    ) -> GroupedConv2D:
        return GroupedConv2D(
            filters, size, strides=strides, padding=padding, groups=groups, split_input=split_input,
            activation=activation, name=layer_name, **init(layer_name),
        )  # fmt: skip

    def dense(layer_name: str, units: int, **kwargs) -> GroupedDense:
        return GroupedDense(units, groups=groups, name=layer_name, **init(layer_name), **kwargs)

    def lrn(layer_name: str) -> Callable:
        if not use_lrn:
            return lambda x: x
        if lrn_form == "caffe":  # Our alpha is not divided by n, Caffe's is.
            return LocalResponseNormalization(
                constants.CAFFE_LRN_DEPTH_RADIUS, constants.CAFFE_LRN_K,
                constants.CAFFE_LRN_ALPHA / constants.CAFFE_LRN_LOCAL_SIZE,
                constants.CAFFE_LRN_BETA, groups=1, relu=True, name=layer_name,
            )  # fmt: skip
        return LocalResponseNormalization(groups=groups, relu=True, name=layer_name)

    def pool(layer_name: str) -> GroupedMaxPool2D:
        return GroupedMaxPool2D(3, 2, groups=groups, name=layer_name)

    def drop(layer_name: str) -> ColumnDropout:
        return ColumnDropout(dropout, form=dropout_form, name=layer_name)

    if not input_scale > 0:
        raise ValueError(f"`input_scale` must be positive. Received: input_scale={input_scale}")
    images = keras.Input(shape=input_shape, name="images")
    x = images
    if input_scale != 1.0:
        x = keras.layers.Rescaling(input_scale, name="input_scale")(x)
    if torchvision:
        # torchvision/models/alexnet.py. Its paddings 2 and 1 of the stride-1 convs are "same";
        # conv1's padding 2 at stride 4 is not (same would give 56 at 224, torch 55).
        x = pool("pool1")(conv("conv1", 64, 11, strides=4, padding=2)(x))
        x = pool("pool2")(conv("conv2", 192, 5)(x))
        x = conv("conv5", 256, 3)(conv("conv4", 256, 3)(conv("conv3", 384, 3)(x)))
        x = pool("pool5")(x)
        x = AdaptiveAveragePooling2D(constants.TORCHVISION_POOLED_SIZE, name="avgpool")(x)
        x = drop("drop5")(x)
        x = dense("fc6", fc_units, activation="relu")(x)
        x = drop("drop6")(x)
        x = dense("fc7", fc_units, activation="relu")(x)
        logits = dense("fc8", num_classes, dtype="float32")(x)
        return _with_kernels(keras.Model(images, logits, name=name), kernel_policy)
    # conv1 and conv3 read their whole input in both columns, so they are not grouped (Fig. 2).
    # With LRN, conv1's and conv2's ReLU runs inside lrn1/lrn2 (its gradient folded into theirs).
    activation = None if use_lrn else "relu"
    conv1 = conv(
        "conv1", 96, 11, strides=4, padding="valid", split_input=False, activation=activation
    )
    x = pool("pool1")(lrn("lrn1")(conv1(x)))
    x = conv("conv2", 256, 5, activation=activation)(x)
    x = pool("pool2")(lrn("lrn2")(x))
    x = conv("conv3", 384, 3, split_input=False)(x)
    x = conv("conv4", 384, 3)(x)
    x = conv("conv5", 256, 3)(x)
    x = pool("pool5")(x)
    # fc6-fc8 split by output units, every unit reading both columns (fc6 flattens pool5).
    x = dense("fc6", fc_units, activation="relu")(x)
    x = drop("drop6")(x)
    x = dense("fc7", fc_units, activation="relu")(x)
    x = drop("drop7")(x)
    # Logits in float32 even under a mixed-precision policy, so the softmax and loss are stable.
    logits = dense("fc8", num_classes, dtype="float32")(x)
    return _with_kernels(keras.Model(images, logits, name=name), kernel_policy)


def _with_kernels(model: keras.Model, kernel_policy: object) -> keras.Model:
    if kernel_policy is not None:
        from alexnet_keras import kernels  # TensorFlow's: imported only when asked for.

        kernels.apply(model, kernel_policy)
    return model
