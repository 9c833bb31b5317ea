"""Pretrained AlexNet weights from other frameworks: Caffe's bvlc_alexnet, torchvision's alexnet."""
