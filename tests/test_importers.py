"""Imported weights against the frameworks' own forward passes, through the exported SavedModel.

Weight files are built at test time from seeded random weights (no downloads). The references
are written with torch's own ops in float64: Caffe's bvlc_alexnet with torch.nn.functional (grouped
conv2d, local_response_norm, which divides alpha by size exactly as Caffe) on BGR mean-subtracted
NCHW input, and torchvision's alexnet() as torch.nn modules with torchvision's state_dict keys on
(x / 255 - mean) / std input (torchvision itself is not installed: its wheel pulls a CUDA torch).
They are compared with the export's `predict_images` (RGB 0..255 crops, as served).
"""

import hashlib
import importlib.resources
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
import saved_model_checks
import tensorflow as tf
from safetensors.numpy import save_file
from test_weight_formats import ALEXNET_LAYERS, ALEXNET_LRN
from train_helpers import REPO, command_reporting_tensorflow

from alexnet_keras import constants, run_dir, run_files
from alexnet_keras.config import TrainConfig
from alexnet_keras.data import labels
from alexnet_keras.data import stats as stats_lib
from alexnet_keras.importers import run_writer
from alexnet_keras.importers.caffe_format import (
    CaffeLayer,
    CaffeLRN,
    CaffeNet,
    caffemodel_bytes,
    mean_binaryproto_bytes,
)
from alexnet_keras.model import build_alexnet
from alexnet_keras.serving import export

TOLERANCE = 1e-4  # On probabilities.
BATCH = 4
CAFFE_CROP_OFFSET = (256 - 227) // 2  # Caffe's test-phase centre crop (data_transformer.cpp).


# --- Random weights and the torch references ----------------------------------------------------


def he_normal(rng, shape):
    """N(0, 2 / fan_in): activations keep their scale through ReLU layers."""
    std = np.sqrt(2.0 / np.prod(shape[1:]))
    return (rng.standard_normal(shape, dtype=np.float32) * std).astype(np.float32)


def calibrate_fc8(features, weight, bias, target_std=2.0):
    """fc8 scaled so the logits on the test images have std 2: probabilities neither near uniform
    nor one-hot, so agreement to 1e-4 means something. Logits are linear in (weight, bias)."""
    scale = target_std / np.std(features @ weight.T.astype(np.float64) + bias)
    return (weight * scale).astype(np.float32), (bias * scale).astype(np.float32)


def softmax(logits):
    exp = np.exp(logits - logits.max(axis=-1, keepdims=True))
    return exp / exp.sum(axis=-1, keepdims=True)


def caffe_blobs(seed, classes):
    """bvlc_alexnet's weight shapes {name: (weight, bias)}, fc8 with `classes` outputs."""
    rng = np.random.default_rng(seed)
    blobs = {}
    for name, _, shape, _ in ALEXNET_LAYERS:
        if shape is not None:
            shape = (classes, shape[1]) if name == "fc8" else shape
            blobs[name] = (he_normal(rng, shape), rng.normal(0, 0.5, shape[:1]).astype(np.float32))
    return blobs


def caffe_fc7(blobs, bgr):
    """bvlc_alexnet up to fc7 (after ReLU) in torch, float64; `bgr` is NCHW minus the mean."""
    import torch
    import torch.nn.functional as F

    def params(name):
        return [torch.from_numpy(a.astype(np.float64)) for a in blobs[name]]

    def conv(x, name, stride, padding, groups):
        return F.relu(F.conv2d(x, *params(name), stride=stride, padding=padding, groups=groups))

    def lrn(x):  # Caffe's norm1/norm2: local_size 5, alpha 1e-4 (divided by 5 inside), k 1.
        return F.local_response_norm(x, size=5, alpha=1e-4, beta=0.75, k=1.0)

    with torch.no_grad():
        x = torch.from_numpy(np.ascontiguousarray(bgr, np.float64))
        x = F.max_pool2d(lrn(conv(x, "conv1", 4, 0, 1)), 3, 2)
        x = F.max_pool2d(lrn(conv(x, "conv2", 1, 2, 2)), 3, 2)
        x = conv(conv(conv(x, "conv3", 1, 1, 1), "conv4", 1, 1, 2), "conv5", 1, 1, 2)
        x = torch.flatten(F.max_pool2d(x, 3, 2), 1)  # Channels first, as Caffe's fc6 reads it.
        x = F.relu(F.linear(x, *params("fc6")))
        return F.relu(F.linear(x, *params("fc7"))).numpy()


def caffe_probabilities(blobs, bgr):
    weight, bias = blobs["fc8"]
    return softmax(caffe_fc7(blobs, bgr) @ weight.T.astype(np.float64) + bias)


def caffe_net(blobs, fc8_name="fc8"):
    """A bvlc_alexnet NetParameter in deploy.prototxt's layer order, holding `blobs`."""
    layers = []
    for name, layer_type, _, group in ALEXNET_LAYERS:
        weights = blobs.get(name, ())
        layers.append(
            CaffeLayer(
                name=fc8_name if name == "fc8" else name,
                type=layer_type,
                blobs=tuple(weights),
                group=group,
                lrn=ALEXNET_LRN if layer_type == "LRN" else None,
                num_output=weights[0].shape[0] if weights else None,
            )
        )
    return CaffeNet(name="AlexNet", version="V1", layers=tuple(layers))


def torchvision_alexnet(num_classes):
    """torchvision/models/alexnet.py's AlexNet, module for module, so its state_dict keys match."""
    import torch
    from torch import nn

    class AlexNet(nn.Module):
        def __init__(self):
            super().__init__()
            self.features = nn.Sequential(
                nn.Conv2d(3, 64, kernel_size=11, stride=4, padding=2),
                nn.ReLU(inplace=True),
                nn.MaxPool2d(kernel_size=3, stride=2),
                nn.Conv2d(64, 192, kernel_size=5, padding=2),
                nn.ReLU(inplace=True),
                nn.MaxPool2d(kernel_size=3, stride=2),
                nn.Conv2d(192, 384, kernel_size=3, padding=1),
                nn.ReLU(inplace=True),
                nn.Conv2d(384, 256, kernel_size=3, padding=1),
                nn.ReLU(inplace=True),
                nn.Conv2d(256, 256, kernel_size=3, padding=1),
                nn.ReLU(inplace=True),
                nn.MaxPool2d(kernel_size=3, stride=2),
            )
            self.avgpool = nn.AdaptiveAvgPool2d((6, 6))
            self.classifier = nn.Sequential(
                nn.Dropout(p=0.5),
                nn.Linear(256 * 6 * 6, 4096),
                nn.ReLU(inplace=True),
                nn.Dropout(p=0.5),
                nn.Linear(4096, 4096),
                nn.ReLU(inplace=True),
                nn.Linear(4096, num_classes),
            )

        def forward(self, x):
            return self.classifier(torch.flatten(self.avgpool(self.features(x)), 1))

    return AlexNet()


def torchvision_input(rgb):
    """torchvision's transform after the crop: ToTensor (/255) and Normalize, NCHW float64."""
    mean = np.asarray(constants.TORCHVISION_MEAN_RGB)
    std = np.asarray(constants.TORCHVISION_STD_RGB)
    return ((rgb.astype(np.float64) / 255.0 - mean) / std).transpose(0, 3, 1, 2)


def served_probabilities(model_dir, tmp_path, images, alone=False):
    """`predict_images` of the export of `model_dir` (no warmup file, for speed), which a stock
    TF Serving loads. With `alone`, also exported from its best.keras copied out of the run
    directory with no flags: the same probabilities (`predict_images`, and `serving_default` on a
    non-square JPEG, which resizes as the run did) and labels, to 1e-6, so nothing (Caffe's LRN,
    torchvision's net and resize size, the run's mean and class names) is lost on the way."""
    source = export.resolve_source(model_dir)
    result = export.export_saved_model(source, str(tmp_path), "imported", write_warmup=False)
    saved_model_checks.assert_servable(result.path)
    served = tf.saved_model.load(result.path).signatures
    outputs = served["predict_images"](images=images)
    if alone:
        keras_file = os.path.join(tmp_path, "alone", "model.keras")
        os.makedirs(os.path.dirname(keras_file))
        shutil.copyfile(run_files.model_file(model_dir), keras_file)
        source = export.resolve_source(keras_file=keras_file)
        assert source.config == run_files.load_config(model_dir)
        alone = export.export_saved_model(source, str(tmp_path), "alone", write_warmup=False)
        saved_model_checks.assert_servable(alone.path)
        by_file = tf.saved_model.load(alone.path).signatures
        pixels = np.random.default_rng(0).integers(0, 256, (300, 400, 3), dtype=np.uint8)
        jpeg = tf.io.encode_jpeg(pixels).numpy()
        calls = {"predict_images": dict(images=images), "serving_default": dict(image_bytes=[jpeg])}
        for name, inputs in calls.items():
            ours, theirs = served[name](**inputs), by_file[name](**inputs)
            np.testing.assert_allclose(
                theirs["probabilities"].numpy(), ours["probabilities"].numpy(), rtol=0, atol=1e-6
            )
            np.testing.assert_array_equal(theirs["top_k_labels"], ours["top_k_labels"])
    return outputs


def random_crops(seed, size):
    return np.random.default_rng(seed).integers(0, 256, (BATCH, size, size, 3)).astype(np.float32)


# --- Caffe: V1 with the per-channel mean, V2 fine-tuned with a mean image -----------------------


@pytest.fixture(scope="module")
def caffe_v1(tmp_path_factory):
    """bvlc_alexnet with 1000 classes, V1 file, default per-channel mean."""
    pytest.importorskip("torch")
    tmp = tmp_path_factory.mktemp("caffe_v1")
    images = random_crops(1, 227)
    mean_bgr = np.asarray(constants.CAFFE_MEAN_BGR)[:, None, None]
    bgr = images[..., ::-1].transpose(0, 3, 1, 2) - mean_bgr
    blobs = caffe_blobs(seed=1, classes=1000)
    blobs["fc8"] = calibrate_fc8(caffe_fc7(blobs, bgr), *blobs["fc8"])
    weights = tmp / "bvlc_alexnet.caffemodel"
    weights.write_bytes(caffemodel_bytes(caffe_net(blobs), "V1"))
    model_dir = str(tmp / "run")
    run_writer.import_weights("caffe", str(weights), model_dir)
    served = served_probabilities(model_dir, tmp / "exports", images, alone=True)
    return dict(
        model_dir=model_dir,
        weights=weights,
        served=served["probabilities"].numpy(),
        top_labels=served["top_k_labels"].numpy(),
        reference=caffe_probabilities(blobs, bgr),
        rgb_not_bgr=caffe_probabilities(blobs, bgr[:, ::-1]),  # A convention left out.
    )


FINE_TUNED_CLASSES = 20


@pytest.fixture(scope="module")
def caffe_v2(tmp_path_factory):
    """A fine-tuned bvlc_alexnet: V2 file, fc8 renamed fc8_flickr with 20 classes (as Caffe's
    fine-tuning example), a 256x256 mean image (ilsvrc_2012_mean.binaryproto's format)."""
    pytest.importorskip("torch")
    tmp = tmp_path_factory.mktemp("caffe_v2")
    rng = np.random.default_rng(2)
    mean_bgr = rng.uniform(60, 180, (3, 256, 256)).astype(np.float32)
    mean_file = tmp / "mean.binaryproto"
    mean_file.write_bytes(mean_binaryproto_bytes(mean_bgr))
    images = random_crops(2, 227)
    window = slice(CAFFE_CROP_OFFSET, CAFFE_CROP_OFFSET + 227)
    bgr = images[..., ::-1].transpose(0, 3, 1, 2) - mean_bgr[None, :, window, window]
    blobs = caffe_blobs(seed=2, classes=FINE_TUNED_CLASSES)
    blobs["fc8"] = calibrate_fc8(caffe_fc7(blobs, bgr), *blobs["fc8"])
    weights = tmp / "finetuned.caffemodel"
    weights.write_bytes(caffemodel_bytes(caffe_net(blobs, fc8_name="fc8_flickr"), "V2"))
    names = [f"style_{i}" for i in range(FINE_TUNED_CLASSES)]
    names_file = tmp / "names.txt"
    names_file.write_text("".join(f"{name}\n" for name in names))
    model_dir = str(tmp / "run")
    run_writer.import_weights("caffe", str(weights), model_dir, str(mean_file), str(names_file))
    served = served_probabilities(model_dir, tmp / "exports", images, alone=True)
    return dict(
        model_dir=model_dir,
        weights=weights,
        names=names,
        mean_bgr=mean_bgr,
        served=served["probabilities"].numpy(),
        reference=caffe_probabilities(blobs, bgr),
    )


def assert_matches_reference(run):
    difference = np.abs(run["served"] - run["reference"]).max()
    largest = run["reference"].max(axis=-1)
    print(f"max |served - reference| probability: {difference:.2e}; top-1 {largest.round(3)}")
    assert difference < TOLERANCE
    assert largest.min() > 5 / run["reference"].shape[-1]  # Far from uniform.
    np.testing.assert_array_equal(run["served"].argmax(-1), run["reference"].argmax(-1))


@pytest.mark.slow
def test_caffe_v1_per_channel_mean_matches_torch_and_writes_a_run_directory(caffe_v1):
    assert_matches_reference(caffe_v1)
    assert np.abs(caffe_v1["served"] - caffe_v1["rgb_not_bgr"]).max() > 100 * TOLERANCE
    # Serving names the classes: WordNet ids -> ImageNet's human names, in the same order.
    names = list(labels.load_imagenet_labels().values())
    top = [names[i] for i in caffe_v1["reference"].argmax(-1)]
    assert [row[0].decode() for row in caffe_v1["top_labels"]] == top
    # The run directory the import wrote (one test with the above: its fixture is built once).
    model_dir = caffe_v1["model_dir"]
    config = run_files.load_config(model_dir)
    assert (config.architecture, config.lrn_form, config.groups, config.use_lrn) == (
        "paper", "caffe", 2, True,
    )  # fmt: skip
    assert (config.dataset, config.image_size, config.resize_size, config.input_scale) == (
        "imagenet2012", 227, 256, 1.0,
    )  # fmt: skip
    assert list(run_files.load_class_names(model_dir)) == list(labels.load_imagenet_labels())
    data_stats = run_dir.load_stats(model_dir)
    assert data_stats.mean_rgb == pytest.approx((122.67891434, 116.66876762, 104.00698793))
    assert data_stats.mean_image is None
    assert data_stats.eigval == stats_lib.IMAGENET.eigval
    record = json.loads(open(os.path.join(model_dir, run_writer.IMPORT_FILE)).read())
    assert record["source_format"] == "caffe"
    assert record["weights_file"] == str(caffe_v1["weights"])
    assert record["weights_sha256"] == hashlib.sha256(caffe_v1["weights"].read_bytes()).hexdigest()
    assert any("BGR" in line for line in record["conventions"])
    best, last = (open(run_files.model_file(model_dir, c), "rb").read() for c in ("best", "last"))
    assert best == last
    assert not [name for name in os.listdir(os.path.dirname(model_dir)) if name.startswith(".")]


@pytest.mark.slow
def test_caffe_v2_fine_tuned_with_mean_image_matches_torch_and_needs_class_names(
    caffe_v2, tmp_path
):
    assert_matches_reference(caffe_v2)
    model_dir = caffe_v2["model_dir"]
    assert list(run_files.load_class_names(model_dir)) == caffe_v2["names"]
    record = json.loads(open(os.path.join(model_dir, run_writer.IMPORT_FILE)).read())
    assert record["fc8_layer"] == "fc8_flickr" and record["caffe_file_version"] == "V2"
    mean_image = run_dir.load_stats(model_dir).mean_image_array
    np.testing.assert_allclose(mean_image, caffe_v2["mean_bgr"][::-1].transpose(1, 2, 0), atol=1e-3)
    # Without class names, or with too few, the import is refused and writes nothing.
    with pytest.raises(ValueError, match="fc8 has 20 classes, not ImageNet's 1000.*--class_names"):
        run_writer.import_weights("caffe", str(caffe_v2["weights"]), str(tmp_path / "run"))
    names = tmp_path / "names.json"
    names.write_text(json.dumps(["a", "b"]))
    with pytest.raises(ValueError, match="names.json has 2 names but fc8 has 20 outputs"):
        run_writer.import_weights(
            "caffe", str(caffe_v2["weights"]), str(tmp_path / "run"), class_names=str(names)
        )
    assert_nothing_written(tmp_path, str(tmp_path / "run"))


def test_default_class_names_are_sorted_wordnet_ids_in_tfds_order():
    """Caffe's synsets.txt and torchvision's ImageFolder number ImageNet's classes by sorted WordNet
    id. The default class names (the shipped labels file; test_caffe_run_directory checks an
    import writes them) must be that order, and TFDS's imagenet2012 labels.txt (its ClassLabel
    names, so the order evaluate's labels come in) too."""
    tfds_file = (
        importlib.resources.files("tensorflow_datasets") / "datasets/imagenet2012/labels.txt"
    )
    tfds_order = tfds_file.read_text().split()
    assert len(tfds_order) == 1000 and tfds_order == sorted(tfds_order)
    assert list(labels.load_imagenet_labels()) == tfds_order


# --- torchvision: a .pth in process, a .safetensors through the command line ---------------------


@pytest.fixture(scope="module")
def torchvision_weights(tmp_path_factory):
    """A seeded torchvision alexnet's state_dict as .pth and .safetensors, and its reference."""
    torch = pytest.importorskip("torch")
    tmp = tmp_path_factory.mktemp("torchvision")
    torch.manual_seed(3)
    net = torchvision_alexnet(1000)
    for module in net.modules():
        if isinstance(module, torch.nn.Conv2d | torch.nn.Linear):
            torch.nn.init.kaiming_normal_(module.weight, nonlinearity="relu")
            torch.nn.init.normal_(module.bias, 0.0, 0.5)
    images = random_crops(3, 224)
    inputs = torch.from_numpy(torchvision_input(images))
    net = net.double().eval()
    with torch.no_grad():
        fc7 = net.classifier[:6](net.avgpool(net.features(inputs)).flatten(1)).numpy()
        fc8 = net.classifier[6]
        weight, bias = calibrate_fc8(fc7, fc8.weight.numpy(), fc8.bias.numpy())
        fc8.weight.copy_(torch.from_numpy(weight)), fc8.bias.copy_(torch.from_numpy(bias))
        state_dict = {key: value.float() for key, value in net.state_dict().items()}
        net.load_state_dict(state_dict)  # The reference uses the float32 weights the files hold.
        reference = softmax(net(inputs).numpy())
        bgr_not_rgb = softmax(net(inputs.flip(1)).numpy())
    pth, safetensors = tmp / "alexnet.pth", tmp / "alexnet.safetensors"
    torch.save(state_dict, pth)
    save_file({key: value.numpy() for key, value in state_dict.items()}, str(safetensors))
    return dict(
        tmp=tmp, pth=pth, safetensors=safetensors, images=images, reference=reference,
        bgr_not_rgb=bgr_not_rgb,
    )  # fmt: skip


@pytest.mark.slow
def test_torchvision_pth_matches_torch(torchvision_weights):
    run = torchvision_weights
    model_dir = str(run["tmp"] / "pth_run")
    run_writer.import_weights("torchvision", str(run["pth"]), model_dir)
    served = served_probabilities(model_dir, run["tmp"] / "pth_exports", run["images"], alone=True)
    probabilities = served["probabilities"].numpy()
    assert_matches_reference(dict(served=probabilities, reference=run["reference"]))
    assert np.abs(probabilities - run["bgr_not_rgb"]).max() > 100 * TOLERANCE
    config = run_files.load_config(model_dir)
    assert (config.architecture, config.groups, config.use_lrn) == ("torchvision", 1, False)
    assert (config.image_size, config.resize_size) == (224, 256)
    mean = run_dir.load_stats(model_dir).mean_rgb
    assert mean == pytest.approx([255 * m for m in constants.TORCHVISION_MEAN_RGB])


def run_cli(*args, timeout=300):
    """tools/import_weights.py ARGS; its stdout ends with `tensorflow loaded: True|False`."""
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    env["PYTHONPATH"] = REPO + os.pathsep + env.get("PYTHONPATH", "")
    script = os.path.join(REPO, "tools", "import_weights.py")
    command = command_reporting_tensorflow(script, *args)
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=timeout)


@pytest.mark.slow
def test_cli_imports_safetensors_and_export_works(torchvision_weights):
    """The command end to end into an existing empty directory, then export of what it wrote."""
    run = torchvision_weights
    model_dir = run["tmp"] / "cli_run"
    model_dir.mkdir()
    result = run_cli(
        "--format=torchvision", f"--weights={run['safetensors']}", f"--model_dir={model_dir}"
    )
    assert result.returncode == 0, result.stderr
    assert f"into {model_dir}: 1000 classes, architecture=torchvision" in result.stdout
    assert "python tools/export.py --model_dir=" in result.stdout
    assert sorted(os.listdir(model_dir)) == sorted(
        [run_files.CONFIG_FILE, run_files.CLASS_NAMES_FILE, run_files.STATS_FILE,
         run_files.BEST_FILE, run_files.LAST_FILE, run_writer.IMPORT_FILE]
    )  # fmt: skip
    served = served_probabilities(str(model_dir), run["tmp"] / "cli_exports", run["images"])
    assert_matches_reference(dict(served=served["probabilities"].numpy(), **run))


def test_cli_bad_input_is_one_line_before_tensorflow_loads():
    result = run_cli("--format=onnx", "--weights=alexnet.onnx", "--model_dir=/nonexistent/run")
    assert result.returncode == 2
    assert result.stderr == "Error: --format=onnx is invalid: expected caffe or torchvision\n"
    assert result.stdout == "tensorflow loaded: False\n"


# --- Bad input: one clear error, nothing written ------------------------------------------------

SMALL_FC = {"fc6": (8, 9216), "fc7": (8, 8), "fc8": (4, 8)}


def small_caffe_net(change=None, order=None):
    """bvlc_alexnet's convolutions with tiny fc layers (validation stops before fc6), edited."""
    layers = []
    for name, layer_type, shape, group in ALEXNET_LAYERS:
        shape = SMALL_FC.get(name, shape)
        blobs = () if shape is None else (np.zeros(shape, np.float32), np.zeros(shape[0]))
        layer = dict(
            name=name, type=layer_type, blobs=tuple(np.asarray(b, np.float32) for b in blobs),
            group=group, lrn=ALEXNET_LRN if layer_type == "LRN" else None,
        )  # fmt: skip
        layer.update((change or {}).get(name, {}))
        if layer.pop("drop", False):
            continue
        layers.append(CaffeLayer(**layer))
    if order:
        layers.sort(key=lambda layer: order.index(layer.name) if layer.name in order else -1)
    return CaffeNet(name="AlexNet", version="V2", layers=tuple(layers))


def write_caffemodel(tmp_path, net):
    path = tmp_path / "bad.caffemodel"
    path.write_bytes(caffemodel_bytes(net, "V2"))
    return str(path)


def assert_nothing_written(tmp_path, model_dir):
    assert not os.path.exists(model_dir)
    assert not [name for name in os.listdir(tmp_path) if name.startswith(".")]


@pytest.mark.parametrize(
    "change,message",
    [
        (
            {
                "conv2": dict(
                    blobs=(np.zeros((256, 96, 5, 5), np.float32), np.zeros(256, np.float32))
                )
            },
            r"layer 'conv2' does not match bvlc_alexnet: expected Convolution \(group 2\) with "
            r"weights \(256, 48, 5, 5\) and bias \(256\), found Convolution with "
            r"\(256, 96, 5, 5\) and \(256\)",
        ),
        ({"conv4": dict(group=1)}, "layer 'conv4' does not match bvlc_alexnet: expected group 2"),
        (
            {"conv5": dict(drop=True)},
            "it has no layer 'conv5': expected Convolution \\(group 2\\) with weights",
        ),
        (
            {"norm2": dict(lrn=CaffeLRN(local_size=5, alpha=2e-4, beta=0.75, k=1.0))},
            "layer 'norm2' does not match bvlc_alexnet: expected CaffeLRN",
        ),
        ({"conv3": dict(type="Deconvolution")}, "layer 'conv3' .*found Deconvolution"),
    ],
)
def test_caffemodel_not_bvlc_alexnet(tmp_path, change, message):
    model_dir = str(tmp_path / "run")
    with pytest.raises(ValueError, match=message):
        run_writer.import_weights(
            "caffe", write_caffemodel(tmp_path, small_caffe_net(change)), model_dir
        )
    assert_nothing_written(tmp_path, model_dir)


def test_caffenet_is_refused(tmp_path):
    """bvlc_reference_caffenet has bvlc_alexnet's shapes but pools before LRN."""
    order = [name for name, *_ in ALEXNET_LAYERS]
    norm, pool = order.index("norm1"), order.index("pool1")
    order[norm], order[pool] = "pool1", "norm1"
    path = write_caffemodel(tmp_path, small_caffe_net(order=order))
    with pytest.raises(ValueError, match="'pool1' comes before 'norm1', as in CaffeNet"):
        run_writer.import_weights("caffe", path, str(tmp_path / "run"))


def test_extra_weighted_layer_is_named(tmp_path):
    net = small_caffe_net()
    fc9 = CaffeLayer("fc9", "InnerProduct", (np.zeros((2, 4), np.float32), np.zeros(2, np.float32)))
    path = write_caffemodel(tmp_path, CaffeNet(net.name, net.version, (*net.layers, fc9)))
    with pytest.raises(ValueError, match=r"weighted layers it lacks: 'fc9' \(InnerProduct\)"):
        run_writer.import_weights("caffe", path, str(tmp_path / "run"))


def test_not_a_caffemodel(tmp_path):
    path = tmp_path / "alexnet.caffemodel"
    path.write_bytes(np.random.default_rng(0).bytes(2000))
    with pytest.raises(ValueError, match="is not a Caffe model"):
        run_writer.import_weights("caffe", str(path), str(tmp_path / "run"))
    assert_nothing_written(tmp_path, str(tmp_path / "run"))


TORCHVISION_KEYS = [
    f"{prefix}.{kind}"
    for prefix in (
        "features.0",
        "features.3",
        "features.6",
        "features.8",
        "features.10",
        "classifier.1",
        "classifier.4",
        "classifier.6",
    )  # fmt: skip
    for kind in ("weight", "bias")
]


def write_state_dict(tmp_path, keys, shapes=None):
    path = tmp_path / "state.safetensors"
    arrays = {key: np.zeros((shapes or {}).get(key, (2, 2)), np.float32) for key in keys}
    save_file(arrays, str(path))
    return str(path)


def test_state_dict_missing_and_unexpected_keys(tmp_path):
    keys = [k for k in TORCHVISION_KEYS if not k.startswith("features.6")] + ["features.1.weight"]
    with pytest.raises(
        ValueError,
        match=r"is not torchvision's alexnet\(\) state_dict .*missing keys: features\.6\.bias, "
        r"features\.6\.weight; unexpected keys: features\.1\.weight",
    ):
        run_writer.import_weights(
            "torchvision", write_state_dict(tmp_path, keys), str(tmp_path / "r")
        )
    data_parallel = ["module." + key for key in TORCHVISION_KEYS]
    with pytest.raises(ValueError, match="nn.DataParallel\\? strip the 'module.' prefix"):
        run_writer.import_weights(
            "torchvision", write_state_dict(tmp_path, data_parallel), str(tmp_path / "r")
        )
    assert_nothing_written(tmp_path, str(tmp_path / "r"))


def test_state_dict_wrong_shape_names_key_and_shapes(tmp_path):
    shapes = {"features.0.weight": (64, 3, 7, 7), "features.0.bias": (64,)}
    path = write_state_dict(tmp_path, TORCHVISION_KEYS, shapes)
    with pytest.raises(
        ValueError,
        match=r"features\.0\.weight \(conv1\) does not match torchvision's alexnet: expected "
        r"shape \(64, 3, 11, 11\), found \(64, 3, 7, 7\)",
    ):
        run_writer.import_weights("torchvision", path, str(tmp_path / "run"))


def test_pth_without_torch_says_what_to_install(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "torch", None)  # `import torch` raises ImportError.
    path = tmp_path / "alexnet.pth"
    path.write_bytes(b"PK\x03\x04")
    with pytest.raises(ImportError, match=r"pip install 'alexnet_keras\[torch\]'"):
        run_writer.import_weights("torchvision", str(path), str(tmp_path / "run"))


def test_pth_that_is_not_a_state_dict(tmp_path):
    pytest.importorskip("torch")
    path = tmp_path / "alexnet.pth"
    path.write_bytes(np.random.default_rng(1).bytes(500))
    with pytest.raises(ValueError, match="is not a PyTorch weights file"):
        run_writer.import_weights("torchvision", str(path), str(tmp_path / "run"))


@pytest.mark.parametrize(
    "args,error,message",
    [
        (("onnx", "w.onnx"), ValueError, "--format=onnx is invalid: expected caffe or torchvision"),
        (("caffe", "nowhere.caffemodel"), FileNotFoundError, "nowhere.caffemodel does not exist"),
        (("torchvision", "w.safetensors", "mean.npy"), ValueError, "only for --format=caffe"),
    ],
)
def test_bad_arguments(tmp_path, args, error, message):
    weights_format, weights, *mean = args
    with pytest.raises(error, match=message):
        run_writer.import_weights(
            weights_format, str(tmp_path / weights), str(tmp_path / "run"), *mean
        )


def test_non_empty_model_dir_is_refused_untouched(tmp_path):
    model_dir = tmp_path / "run"
    model_dir.mkdir()
    (model_dir / "notes.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="exists and is not an empty directory"):
        run_writer.import_weights("caffe", str(tmp_path / "nowhere.caffemodel"), str(model_dir))
    assert os.listdir(model_dir) == ["notes.txt"]
    assert not [name for name in os.listdir(tmp_path) if name.startswith(".")]


def test_failure_mid_write_leaves_nothing(tmp_path, monkeypatch):
    """A failure after best.keras is written: no run directory, no temporary sibling, and the
    parent directories the writer made are gone too."""
    model = build_alexnet(4, (67, 67, 3), kernel_initializer="he_normal", seed=0)
    config = TrainConfig(image_size=67)

    def disk_full(*args):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(run_writer.shutil, "copyfile", disk_full)
    model_dir = tmp_path / "runs" / "imported"
    with pytest.raises(OSError, match="No space left"):
        run_writer.write_run_dir(
            str(model_dir), model, config, list("abcd"), stats_lib.IMAGENET, {"format": "test"}
        )
    assert os.listdir(tmp_path) == []
