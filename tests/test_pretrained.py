"""The encoders shipped with the package (tf_simsiam.pretrained): offline loading, the recorded features, the CLIs'
pretrained:NAME."""

import configparser
import fnmatch
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from tf_simsiam import export, pretrained

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NAME = "fashion_mnist"
HAS_FASHION_MNIST = os.path.exists("/usr/share/datasets/fashion-mnist") or os.environ.get("TF_SIMSIAM_DATA_DIR")

# A new process with no network: any connection attempt raises, so loading must come from the package's files.
LOAD_OFFLINE = """
import socket, sys
def refuse(*args, **kwargs):
    raise OSError("network access attempted")
socket.socket.connect = socket.socket.connect_ex = refuse
socket.create_connection = refuse
import numpy as np
import tensorflow as tf
from tf_simsiam import pretrained
encoder = pretrained.load(sys.argv[1])
shape = pretrained.info(sys.argv[1])["input_shape"]
np.save(sys.argv[2], encoder.serve(tf.constant(pretrained.check_images(shape))).numpy())
"""


def assert_recorded(features, recorded):
    # float32 through ~20 conv/BN layers: summation order (oneDNN's kernels differ between CPU kinds) moves the
    # features by ~1e-5 relative; other weights or preprocessing move them by O(1). 1e-3 of their scale separates.
    recorded = np.asarray(recorded, np.float32)
    np.testing.assert_allclose(features, recorded, rtol=1e-3, atol=1e-3 * float(np.abs(recorded).max()))


def test_load_works_offline_in_a_fresh_process_and_gives_the_recorded_features(tmp_path):
    out = subprocess.run([sys.executable, "-c", LOAD_OFFLINE, NAME, str(tmp_path / "features.npy")],
                         capture_output=True, text=True, cwd=str(tmp_path))
    assert out.returncode == 0, out.stderr[-3000:]
    features = np.load(tmp_path / "features.npy")
    info = pretrained.info(NAME)
    assert features.shape == (4, info["feature_dim"]) and features.dtype == np.float32
    assert np.abs(features).max() > 0 and features.std(0).max() > 0  # distinct images, distinct features
    assert_recorded(features, info["check"]["features"])


def test_backbone_is_the_trainable_keras_encoder_with_the_same_features():
    backbone = pretrained.backbone(NAME)
    info = pretrained.info(NAME)
    assert backbone.input_shape[1:] == tuple(info["input_shape"]) and backbone.trainable_weights
    images = pretrained.check_images(info["input_shape"]).astype("float32") / 255.0
    assert_recorded(backbone(images, training=False).numpy(), info["check"]["features"])


def test_pretrained_names_resolve_and_unknown_ones_are_refused_naming_the_flag():
    assert pretrained.resolve(f"pretrained:{NAME}") == pretrained.path(NAME)
    assert pretrained.resolve("runs/x/export") == "runs/x/export" and pretrained.resolve("") == ""
    with pytest.raises(ValueError, match=r"--export_dir=pretrained:nope: no pretrained encoder 'nope': "
                                         r"tf_simsiam ships fashion_mnist"):
        pretrained.resolve("pretrained:nope", "--export_dir")


def test_every_shipped_file_is_package_data_and_within_the_size_limit():
    setup = configparser.ConfigParser()
    setup.read(os.path.join(ROOT, "setup.cfg"))
    patterns = setup["options.package_data"]["tf_simsiam.pretrained"].split()
    for name in pretrained.NAMES:
        directory = pretrained.path(name)
        files = [os.path.relpath(os.path.join(d, f), os.path.dirname(directory))
                 for d, _, names in os.walk(directory) for f in names]
        assert {export.CONFIG_FILE, export.WEIGHTS_FILE, pretrained.INFO_FILE} <= {os.path.basename(f) for f in files}
        left_out = [f for f in files if not any(fnmatch.fnmatch(f, p) for p in patterns)]
        assert not left_out, f"not in setup.cfg's package_data: {left_out}"
        assert sum(os.path.getsize(os.path.join(os.path.dirname(directory), f)) for f in files) <= 10 * 2**20


@pytest.mark.skipif(not HAS_FASHION_MNIST, reason="Fashion-MNIST is not installed")
def test_the_clis_start_from_pretrained_name(tmp_path):
    import h5py
    info = pretrained.info(NAME)
    shape = info["input_shape"]
    # pretraining from it: a learning rate too small to move any weight ends at the shipped kernels
    run = tmp_path / "run"
    out = subprocess.run(
        [sys.executable, "-m", "tf_simsiam.train", f"--model_dir={run}", f"--image_size={shape[0]}",
         f"--width={info['width']}", "--proj_dim=32", "--pred_dim=8", "--batch_size=32", "--steps_per_epoch=2",
         "--epochs=1", "--knn_every=0", "--base_lr=1e-9", f"--init_from=pretrained:{NAME}"],
        capture_output=True, text=True, cwd=ROOT)
    assert out.returncode == 0, out.stderr[-3000:]
    assert f"backbone initialised from pretrained:{NAME}" in out.stderr
    assert json.loads((run / "result.json").read_text())["init_from"] == f"pretrained:{NAME}"
    with h5py.File(os.path.join(pretrained.path(NAME), export.WEIGHTS_FILE)) as start, \
            h5py.File(run / "export" / export.WEIGHTS_FILE) as end:
        kernels = []
        start.visititems(lambda name, obj: kernels.append(name) if getattr(obj, "ndim", 0) == 4 else None)
        assert len(kernels) > 10
        for name in kernels:
            np.testing.assert_allclose(end[name][()], start[name][()], atol=1e-6, err_msg=name)
    # evaluating (or fine-tuning) it: --init_from is evaluate's alias of --export_dir
    out = subprocess.run(
        [sys.executable, "-m", "tf_simsiam.evaluate", f"--init_from=pretrained:{NAME}", "--protocol=knn",
         "--baselines=", "--train_size=300", "--test_size=100", f"--output_dir={tmp_path / 'eval'}"],
        capture_output=True, text=True, cwd=ROOT)
    assert out.returncode == 0, out.stderr[-3000:]
    rows = json.loads((tmp_path / "eval" / "results.json").read_text())["results"]
    assert {(r["method"], r["protocol"]) for r in rows} >= {("simsiam", "knn")}
    out = subprocess.run([sys.executable, "-m", "tf_simsiam.evaluate", "--export_dir=pretrained:nope",
                          f"--output_dir={tmp_path / 'bad'}"], capture_output=True, text=True, cwd=ROOT)
    assert out.returncode != 0 and "--export_dir=pretrained:nope: no pretrained encoder" in out.stderr
