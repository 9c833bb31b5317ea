"""Facts from the paper that training, export and serving share; each is defined only here."""

# Sec. 3.3: local response normalization, b = a / (k + alpha * sum(a^2))^beta over n adjacent maps.
LRN_K = 2.0
LRN_N = 5
LRN_DEPTH_RADIUS = (LRN_N - 1) // 2  # TF counts the neighbours on one side: n = 2 * radius + 1.
LRN_ALPHA = 1e-4
LRN_BETA = 0.75

# Sec. 2 and 4.1: images are rescaled to 256x256 and the network sees 227x227 crops (see model.py
# for why 227 and not the paper's stated 224).
RESIZE_SIZE = 256
IMAGE_SIZE = 227
MIN_IMAGE_SIZE = 67  # The smallest square input for which pool5 is still at least 1x1.

NUM_CLASSES = 1000
NUM_PARAMETERS = 60_965_224  # With NUM_CLASSES classes, two groups and 227x227x3 input.

# Sec. 5: weights N(0, 0.01); biases 1 in conv2, conv4, conv5 and the hidden fc layers, else 0.
INIT_STDDEV = 0.01
LAYERS_WITH_UNIT_BIAS = ("conv2", "conv4", "conv5", "fc6", "fc7")
