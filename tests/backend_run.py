"""Runs the model under the Keras backend of this process (KERAS_BACKEND) for test_backends.py.

    python tests/backend_run.py DIR [--check-only]      (or `main(DIR)` in a TensorFlow process)

Loads DIR/base.keras (saved under TensorFlow) and writes its logits on DIR/images.npy; takes
one `fit` step and saves the result as DIR/after_<backend>.keras with its logits; loads every
other backend's after_*.keras found in DIR and writes whether its logits equal the ones that
backend wrote. Prints one JSON line.
"""

import glob
import json
import os
import sys

import keras
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import alexnet_keras.layers  # noqa: E402, F401  Registers the layers.


def main(directory: str, check_only: bool = False) -> dict:
    backend = keras.backend.backend()
    images = np.load(os.path.join(directory, "images.npy"))
    labels = np.load(os.path.join(directory, "labels.npy"))
    result = {"backend": backend, "tensorflow_imported": "tensorflow" in sys.modules}
    if not check_only:
        model = keras.saving.load_model(os.path.join(directory, "base.keras"))
        np.save(os.path.join(directory, f"logits_{backend}.npy"), model.predict(images, verbose=0))
        model.compile(
            optimizer=keras.optimizers.SGD(0.01, momentum=0.9),
            loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        )
        result["loss"] = float(model.fit(images, labels, epochs=1, verbose=0).history["loss"][0])
        model.save(os.path.join(directory, f"after_{backend}.keras"))
        np.save(os.path.join(directory, f"after_{backend}.npy"), model.predict(images, verbose=0))
    result["loaded"] = {}
    for path in sorted(glob.glob(os.path.join(directory, "after_*.keras"))):
        other = os.path.basename(path)[len("after_") : -len(".keras")]
        if other == backend:
            continue
        # compile=False: the file's architecture and weights; its compile config (jit_compile
        # as the saving backend resolved it) would put torch through a ~20 s torch.compile.
        logits = keras.saving.load_model(path, compile=False).predict(images, verbose=0)
        expected = np.load(path[: -len(".keras")] + ".npy")
        result["loaded"][other] = float(np.abs(logits - expected).max() / np.abs(expected).max())
    return result


if __name__ == "__main__":
    print(json.dumps(main(sys.argv[1], "--check-only" in sys.argv[2:])))
