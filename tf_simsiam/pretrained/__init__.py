"""Encoders pretrained with tf_simsiam that ship with the package, usable offline.

    from tf_simsiam import pretrained
    encoder = pretrained.load("fashion_mnist")        # the SavedModel: encoder.serve(uint8 images) -> features
    backbone = pretrained.backbone("fashion_mnist")   # the trainable Keras backbone, for fine-tuning

The CLIs take `pretrained:NAME` wherever they take an export directory (`--init_from`, `--export_dir`). Each encoder
is an export (tf_simsiam.export) with `pretrained.json` beside it: the run it comes from and the features of a fixed
batch (`check_images`), which a fresh load must reproduce. `scripts/ship_pretrained.py` writes one from a run.
"""

import json
import os

import numpy as np

from tf_simsiam import export

NAMES = ("fashion_mnist",)  # the encoders shipped (a directory of this package each)
PREFIX = "pretrained:"
INFO_FILE = "pretrained.json"
_HERE = os.path.dirname(os.path.abspath(__file__))


def path(name):
    """The export directory of the shipped encoder `name`."""
    if name not in NAMES:
        raise ValueError(f"no pretrained encoder {name!r}: tf_simsiam ships {', '.join(NAMES)}")
    directory = os.path.join(_HERE, name)
    if not os.path.isfile(os.path.join(directory, export.CONFIG_FILE)):
        raise FileNotFoundError(f"the pretrained encoder {name!r} is missing from this install ({directory}): "
                                f"reinstall tf_simsiam")
    return directory


def resolve(spec, flag="--init_from"):
    """An export directory from what a flag gives: `pretrained:NAME` (a shipped encoder) or a directory."""
    if spec and spec.startswith(PREFIX):
        try:
            return path(spec[len(PREFIX):])
        except (ValueError, FileNotFoundError) as error:
            raise ValueError(f"{flag}={spec}: {error}") from None
    return spec


def info(name):
    """What the shipped encoder `name` records: its encoder.json (input_shape, feature_dim, width, mean, std, ...)
    and its pretrained.json (the run it was exported from, the epoch, the check features)."""
    with open(os.path.join(path(name), export.CONFIG_FILE)) as f:
        encoder = json.load(f)
    with open(os.path.join(path(name), INFO_FILE)) as f:
        return {**encoder, **json.load(f)}


def load(name):
    """The shipped encoder `name` as a SavedModel (plain TensorFlow): `.serve(images)` maps uint8 images
    (N, H, W, C) to float32 features (N, D)."""
    import tensorflow as tf
    return tf.saved_model.load(os.path.join(path(name), export.FILES["saved_model"]))


def backbone(name):
    """The shipped encoder `name` as a trainable Keras backbone (its input: float images in [0, 1])."""
    return export.load_encoder(path(name))


def check_images(input_shape, n=4, seed=0):
    """The fixed batch whose features pretrained.json records: `n` seeded uint8 images of `input_shape`."""
    return np.random.default_rng(seed).integers(0, 256, size=(n, *input_shape), dtype=np.uint8)
