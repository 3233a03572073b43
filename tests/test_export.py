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
        export.export_encoder(tiny_backbone((16, 16, 1)), target, {"name": "resnet18", "width": 4, "note": object()})
    assert sorted(os.listdir(target)) == before
    assert [p for p in os.listdir(tmp_path) if p != "export"] == []  # no staging left behind


def test_an_encoder_trained_in_mixed_bfloat16_exports_float32(tmp_path):
    import keras
    import tensorflow as tf
    from conftest import tiny_simsiam
    from tf_simsiam import optim
    keras.mixed_precision.set_global_policy("mixed_bfloat16")
    model = tiny_simsiam()
    model.compile(optimizer=optim.simsiam_optimizer(batch_size=8, total_steps=3, base_lr=0.5))
    views = np.random.default_rng(0).random((8, 2, 16, 16, 1), dtype=np.float32)
    model.fit(tf.data.Dataset.from_tensors(views).repeat(3), verbose=0)
    assert model.backbone.get_layer("stem_conv").compute_dtype == "bfloat16"
    config = {"name": "resnet18", "width": 4}
    path = export.export_encoder(model.backbone, str(tmp_path / "export"), config)
    assert keras.mixed_precision.global_policy().name == "mixed_bfloat16"  # the caller's policy is left alone
    keras.mixed_precision.set_global_policy("float32")
    loaded = tf.saved_model.load(os.path.join(path, "saved_model"))
    assert {v.dtype for v in loaded.variables} == {tf.float32}
    graph = loaded.signatures["serving_default"].graph.as_graph_def()
    functions = [graph.node] + [f.node_def for f in graph.library.function]
    assert not any("bfloat16" in str(node.attr) for nodes in functions for node in nodes)  # no bf16 compute
    reference = tiny_backbone()  # a float32 rebuild with the trained weights
    reference.set_weights(model.backbone.get_weights())
    images = np.random.default_rng(1).integers(0, 256, (6, 16, 16, 1)).astype("uint8")
    expected = reference(images.astype("float32") / 255.0, training=False).numpy()
    got = loaded.serve(images).numpy()
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6 * np.abs(expected).max())
    with open(os.path.join(path, "encoder.json")) as f:
        assert json.load(f)["precision"] == "float32"
    bf16 = export.export_encoder(model.backbone, str(tmp_path / "bf16"), config, precision="mixed_bfloat16")
    with open(os.path.join(bf16, "encoder.json")) as f:
        assert json.load(f)["precision"] == "mixed_bfloat16"
    loaded_bf16 = tf.saved_model.load(os.path.join(bf16, "saved_model"))
    assert not np.allclose(loaded_bf16.serve(images).numpy(), expected, rtol=1e-4)  # asked for: bfloat16


ONNX_AND_LITERT_WITHOUT_TF_SIMSIAM = """
import sys, numpy as np
import onnxruntime
from ai_edge_litert.interpreter import Interpreter
export_dir, images = sys.argv[1], np.load(sys.argv[2])
session = onnxruntime.InferenceSession(export_dir + "/encoder.onnx", providers=["CPUExecutionProvider"])
assert [i.name for i in session.get_inputs()] == ["images"]
(onnx_features,) = session.run(["output_0"], {"images": images})
litert = Interpreter(export_dir + "/encoder.tflite").get_signature_runner("serving_default")
(litert_features,) = litert(images=images).values()
np.save(sys.argv[3], np.stack([onnx_features, litert_features]))
assert "tf_simsiam" not in sys.modules and "tensorflow" not in sys.modules
"""


def test_onnx_and_litert_exports_give_the_saved_models_features(tmp_path):
    pytest.importorskip("tf2onnx", reason="the export extra")
    import tensorflow as tf
    backbone = tiny_backbone((16, 16, 1), mean=[0.3], std=[0.3])
    backbone(np.random.rand(8, 16, 16, 1).astype("float32"), training=True)  # move the BN statistics
    path = export.export_encoder(backbone, str(tmp_path / "export"), {"name": "resnet18", "width": 4},
                                 formats="saved_model,onnx,litert")
    with open(os.path.join(path, "encoder.json")) as f:
        assert json.load(f)["files"] == {"saved_model": "saved_model", "onnx": "encoder.onnx",
                                         "litert": "encoder.tflite"}
    images = np.random.default_rng(0).integers(0, 256, (5, 16, 16, 1)).astype("uint8")
    loaded = tf.saved_model.load(os.path.join(path, "saved_model"))
    expected = loaded.serve(images).numpy()
    np.save(tmp_path / "images.npy", images)
    subprocess.run([sys.executable, "-c", ONNX_AND_LITERT_WITHOUT_TF_SIMSIAM, path, str(tmp_path / "images.npy"),
                    str(tmp_path / "features.npy")], check=True, env={**os.environ, "PYTHONPATH": ""},
                   cwd=str(tmp_path))
    for got in np.load(tmp_path / "features.npy"):
        np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4 * np.abs(expected).max())


def test_unknown_export_format_is_named():
    with pytest.raises(ValueError, match="--export_formats.*'torchscript'"):
        export.parse_formats("saved_model,torchscript")
    assert export.parse_formats("litert") == ("saved_model", "litert")


def test_the_export_library_imports_no_training_code():
    code = ("import sys, tf_simsiam.export; "
            "assert not {'tf_simsiam.pretrain', 'tf_simsiam.train', 'tf_simsiam.run_dir', 'tf_simsiam.callbacks'} "
            "& set(sys.modules), sorted(m for m in sys.modules if m.startswith('tf_simsiam'))")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=os.path.dirname(os.path.dirname(__file__)))
