"""Regenerates alexnet_keras/data/imagenet_labels.txt (ImageNet synset -> human name).

    sudo apt-get install wordnet-base     # WordNet 3.0, the version ImageNet's ids refer to
    python tools/make_imagenet_labels.py  # ~1 s; rewrites the shipped data file

The class order is TFDS's imagenet2012 `labels.txt` (label index = line number), read from the
installed tensorflow_datasets package; names are the synsets' lemmas from WordNet's data.noun.
"""

from __future__ import annotations

import os

from absl import app, flags

from alexnet_keras.cli import common
from alexnet_keras.data import labels


def define_flags() -> None:
    flags.DEFINE_string(
        "wordnet_data_noun",
        "/usr/share/wordnet/data.noun",
        "WordNet 3.0 data.noun (Debian package wordnet-base).",
    )
    flags.DEFINE_string(
        "synsets_file", None, "Synsets in label order (default: TFDS imagenet2012 labels.txt)."
    )
    flags.DEFINE_string(
        "output",
        os.path.join(os.path.dirname(labels.__file__), labels.IMAGENET_LABELS_FILE),
        "Where to write the labels file.",
    )


def tfds_imagenet_synsets_file() -> str:
    """TFDS's shipped imagenet2012 label list (1000 synset ids, one per line, in label order)."""
    import importlib.resources

    return str(
        importlib.resources.files("tensorflow_datasets") / "datasets/imagenet2012/labels.txt"
    )


def _main(argv: list[str]) -> None:
    del argv
    synsets_file = flags.FLAGS.synsets_file or tfds_imagenet_synsets_file()
    with open(synsets_file) as f:
        synsets = [line.strip() for line in f if line.strip()]
    data_noun = flags.FLAGS.wordnet_data_noun
    if not os.path.exists(data_noun):
        raise app.UsageError(
            f"--wordnet_data_noun={data_noun} does not exist. Install WordNet 3.0 "
            "(`sudo apt-get install wordnet-base`) or pass the path of its data.noun."
        )
    with open(data_noun, encoding="latin-1") as f:
        names = labels.wordnet_noun_names(f, synsets)
    with open(flags.FLAGS.output, "w", encoding="utf-8") as f:
        f.write(labels.format_labels_file(synsets, names))
    print(f"Wrote {len(synsets)} labels to {flags.FLAGS.output}")


def main() -> None:
    """`python tools/make_imagenet_labels.py`; console script `alexnet-make-imagenet-labels`."""
    common.run(define_flags, _main, tensorflow=False)


if __name__ == "__main__":
    main()
