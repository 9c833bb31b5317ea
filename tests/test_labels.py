"""The shipped ImageNet class names and the WordNet parser that regenerates them."""

import importlib.resources

import pytest

from alexnet_keras.data import labels

# Real data.noun lines (WordNet 3.0), shortened after the word list.
DATA_NOUN = [
    "  1 This software and database is being provided to you, the LICENSEE, by  \n",
    "01440764 05 n 02 tench 0 Tinca_tinca 0 002 @ 01439121 n 0000 | freshwater fish\n",
    "02012849 05 n 01 crane 0 004 @ 02000954 n 0000 | large long-necked wading bird\n",
    "03126707 06 n 01 crane 0 002 @ 03316406 n 0000 | lifts and moves heavy objects\n",
]


def test_wordnet_parser():
    names = labels.wordnet_noun_names(DATA_NOUN, ["n02012849", "n01440764", "n03126707"])
    assert names == ["crane", "tench, Tinca tinca", "crane"]
    with pytest.raises(ValueError, match="n09999999"):
        labels.wordnet_noun_names(DATA_NOUN, ["n09999999"])
    text = labels.format_labels_file(["n01440764"], ["tench, Tinca tinca"])
    assert text == "n01440764\ttench, Tinca tinca\n"


def test_shipped_file_is_in_tfds_label_order():
    shipped = labels.load_imagenet_labels()
    tfds_order = (
        importlib.resources.files("tensorflow_datasets") / "datasets/imagenet2012/labels.txt"
    ).read_text()
    assert list(shipped) == tfds_order.split()
    assert len(shipped) == 1000
    assert shipped["n01440764"] == "tench, Tinca tinca"
    assert shipped["n15075141"] == "toilet tissue, toilet paper, bathroom tissue"
    assert all(shipped.values())


def test_display_names():
    assert labels.display_names(["n01440764", "n01443537"]) == [
        "tench, Tinca tinca",
        "goldfish, Carassius auratus",
    ]
    assert labels.display_names(["T-shirt/top", "Trouser"]) == ["T-shirt/top", "Trouser"]
    assert labels.display_names(["n01440764", "n00000000"]) == ["n01440764", "n00000000"]
