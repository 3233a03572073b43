import json
import os
import subprocess
import sys

import numpy as np
import pytest

from conftest import tiny_backbone
from tf_simsiam import export

LOAD_WITHOUT_TF_SIMSIAM = """
import sys, numpy as np, tensorflow as tf
assert "tf_simsiam" not in sys.modules
model = tf.saved_model.load(sys.argv[1])
images = np.load(sys.argv[2])
np.save(sys.argv[3], model.signatures["serving_default"](images=tf.constant(images))["output_0"].numpy())
assert "tf_simsiam" not in sys.modules
"""


def features_in_fresh_process(saved_model, images, tmp_path):
    """Features from the SavedModel in a new Python process that never imports tf_simsiam."""
    np.save(tmp_path / "images.npy", images)
    env = {**os.environ, "PYTHONPATH": ""}
    subprocess.run([sys.executable, "-c", LOAD_WITHOUT_TF_SIMSIAM, saved_model, str(tmp_path / "images.npy"),
                    str(tmp_path / "features.npy")], check=True, env=env, cwd=str(tmp_path))
    return np.load(tmp_path / "features.npy")


def test_export_reloads_without_tf_simsiam_and_gives_the_same_features(tmp_path):
    backbone = tiny_backbone((16, 16, 1), mean=[0.3], std=[0.3])
    backbone(np.random.rand(8, 16, 16, 1).astype("float32"), training=True)  # move the BN statistics
    config = {"name": "resnet18", "width": 4, "mean": [0.3], "std": [0.3]}
    path = export.export_encoder(backbone, str(tmp_path / "export"), config)
    images = np.random.default_rng(0).integers(0, 256, (5, 16, 16, 1)).astype("uint8")
    expected = backbone(images.astype("float32") / 255.0, training=False).numpy()
    got = features_in_fresh_process(os.path.join(path, "saved_model"), images, tmp_path)
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)
    rebuilt = export.load_encoder(path)  # for fine-tuning
    np.testing.assert_allclose(rebuilt(images.astype("float32") / 255.0).numpy(), expected, atol=1e-5)
    with open(os.path.join(path, "encoder.json")) as f:
        assert json.load(f)["feature_dim"] == 32


def test_tfsmlayer_in_a_keras_classifier(tmp_path):
    import keras
    path = export.export_encoder(tiny_backbone((16, 16, 1)), str(tmp_path / "export"),
                                 {"name": "resnet18", "width": 4})
    inputs = keras.Input((16, 16, 1), dtype="uint8")
    features = keras.layers.TFSMLayer(os.path.join(path, "saved_model"), call_endpoint="serve")(inputs)
    classifier = keras.Model(inputs, keras.layers.Dense(3)(features))
    assert classifier(np.zeros((2, 16, 16, 1), "uint8")).shape == (2, 3)


def test_failed_export_leaves_the_earlier_one_intact(tmp_path):
    target = str(tmp_path / "export")
    export.export_encoder(tiny_backbone((16, 16, 1)), target, {"name": "resnet18", "width": 4})
    before = sorted(os.listdir(target))
    with pytest.raises(TypeError):
        export.export_encoder(tiny_backbone((16, 16, 1)), target, {"name": "resnet18", "width": object()})
    assert sorted(os.listdir(target)) == before
    assert [p for p in os.listdir(tmp_path) if p != "export"] == []  # no staging left behind
