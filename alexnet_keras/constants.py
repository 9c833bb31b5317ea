"""Facts that training, export, serving and the importers share; each is defined only here.

The paper's, and the published conventions of the frameworks whose AlexNet weights we import.
"""

# Sec. 3.3: local response normalization, b = a / (k + alpha * sum(a^2))^beta over n adjacent maps.
LRN_K = 2.0
LRN_N = 5
LRN_DEPTH_RADIUS = (LRN_N - 1) // 2  # TF counts the neighbours on one side: n = 2 * radius + 1.
LRN_ALPHA = 1e-4
LRN_BETA = 0.75

# Caffe's LRN, which bvlc_alexnet was trained with (its deploy.prototxt: local_size 5, alpha 1e-4,
# beta 0.75; k defaults to 1): b = a / (k + alpha / n * sum(a^2))^beta, alpha DIVIDED by n
# (lrn_layer.cpp), over all channels of the layer (one GPU, no columns). The paper's formula with
# CAFFE_LRN_ALPHA / CAFFE_LRN_LOCAL_SIZE = 2e-5 as its alpha and k = 1 is the same function.
CAFFE_LRN_K = 1.0
CAFFE_LRN_LOCAL_SIZE = 5
CAFFE_LRN_DEPTH_RADIUS = (CAFFE_LRN_LOCAL_SIZE - 1) // 2
CAFFE_LRN_ALPHA = 1e-4
CAFFE_LRN_BETA = 0.75

# Sec. 2 and 4.1: images are rescaled to 256x256 and the network sees 227x227 crops (see model.py
# for why 227 and not the paper's stated 224).
RESIZE_SIZE = 256
IMAGE_SIZE = 227
MIN_IMAGE_SIZE = 67  # The smallest square input for which pool5 is still at least 1x1.

# Sec. 4.2: dropout zeroes units while training and multiplies every output by 1 - rate at test
# time ("paper"); Keras, Caffe and torch divide the kept units by 1 - rate while training instead
# ("inverted"), and their weights need that form.
DROPOUT_FORMS = ("paper", "inverted")

# The faster TensorFlow kernels `--kernels` can switch on (alexnet_keras/kernels/__init__.py says
# what each is); `auto` picks them for the host, `reference` runs every layer's own `call`.
KERNELS = (
    "lrn", "portable_lrn", "grouped_conv", "conv1_space_to_depth", "winograd", "bias_add",
)  # fmt: skip

NUM_CLASSES = 1000
FC_UNITS = 4096  # fc6 and fc7 (Sec. 3.5), 2048 on each GPU.
NUM_PARAMETERS = 60_965_224  # With NUM_CLASSES classes, two groups and 227x227x3 input.

# Caffe's bvlc_alexnet input: BGR pixels on the 0..255 scale minus the mean. The per-channel mean
# is that of ilsvrc_2012_mean (the 256x256 mean image bvlc_alexnet trained with), as Caffe's
# examples/00-classification.ipynb prints it for python/caffe/imagenet/ilsvrc_2012_mean.npy.
CAFFE_MEAN_BGR = (104.00698793, 116.66876762, 122.67891434)

# torchvision's alexnet() ("One weird trick", Krizhevsky 2014): input (x / 255 - mean) / std per
# RGB channel, evaluated on the 224 centre crop of images resized to 256 on the shorter side.
TORCHVISION_MEAN_RGB = (0.485, 0.456, 0.406)
TORCHVISION_STD_RGB = (0.229, 0.224, 0.225)
TORCHVISION_RESIZE_SIZE = 256
TORCHVISION_IMAGE_SIZE = 224
TORCHVISION_POOLED_SIZE = 6  # Its AdaptiveAvgPool2d((6, 6)) before the classifier.
TORCHVISION_NUM_PARAMETERS = 61_100_840  # With NUM_CLASSES classes.

# Sec. 5: weights N(0, 0.01); biases 1 in conv2, conv4, conv5 and the hidden fc layers, else 0.
INIT_STDDEV = 0.01
LAYERS_WITH_UNIT_BIAS = ("conv2", "conv4", "conv5", "fc6", "fc7")
