"""The evaluation CLI end to end (tiny subsets), and the runnable examples of export/."""

import json
import os
import subprocess
import sys

import pytest

from conftest import tiny_backbone
from tf_simsiam import export

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def tiny_export(tmp_path, size=28):
    """A tiny ResNet-18 exported as python -m tf_simsiam.train would: tmp_path/export."""
    config = {"name": "resnet18", "input_shape": [size, size, 1], "width": 4, "mean": [0.29], "std": [0.35]}
    export.export_encoder(tiny_backbone((size, size, 1)), str(tmp_path / "export"), config)


@pytest.mark.skipif(not os.path.exists("/usr/share/datasets/fashion-mnist")
                    and not os.environ.get("TF_SIMSIAM_DATA_DIR"), reason="Fashion-MNIST is not installed")
def test_evaluate_cli_runs_every_protocol_and_baseline(tmp_path):
    tiny_export(tmp_path)
    out = subprocess.run(
        [sys.executable, "-m", "tf_simsiam.evaluate", f"--export_dir={tmp_path / 'export'}",
         "--protocol=knn,linear,finetune,supervised", "--label_fraction=0.1,1", "--epochs=1", "--batch_size=64",
         "--train_size=300", "--test_size=100", f"--output_dir={tmp_path / 'eval'}"],
        capture_output=True, text=True, cwd=ROOT)
    assert out.returncode == 0, out.stderr[-3000:]
    rows = json.loads((tmp_path / "eval" / "results.json").read_text())["results"]
    seen = {(r["method"], r["protocol"], r["label_fraction"]) for r in rows}
    for method in ("simsiam", "pixels", "random"):
        assert {(method, "knn", None), (method, "knn_plain", None), (method, "linear", None)} <= seen
    for fraction in (0.1, 1.0):
        assert ("simsiam", "finetune", fraction) in seen and ("scratch", "supervised", fraction) in seen
    # 10% of ~30 per class, rounded per class
    assert next(r for r in rows if r["protocol"] == "finetune")["labelled_images"] in range(25, 36)
    for plot in ("accuracy.png", "confusion.png", "embedding.png"):
        assert (tmp_path / "eval" / plot).stat().st_size > 1000
    assert "| simsiam | linear |" in out.stdout and "| pixels | knn (k=200, t=0.1) |" in out.stdout


def test_evaluate_cli_names_bad_flags(tmp_path):
    for flags, message in ((["--protocol=linear"], "--export_dir is needed"),
                           ([f"--export_dir={tmp_path}"], "holds no encoder.json"),
                           (["--protocol=probe", f"--export_dir={tmp_path}"], "--protocol must be among"),
                           (["--protocol=supervised", "--label_fraction=2"], "--label_fraction values")):
        out = subprocess.run([sys.executable, "-m", "tf_simsiam.evaluate", *flags,
                              f"--output_dir={tmp_path / 'eval'}"], capture_output=True, text=True, cwd=ROOT)
        assert out.returncode != 0 and message in out.stderr, (flags, out.stderr[-2000:])


@pytest.mark.skipif(not os.path.exists("/usr/share/datasets/fashion-mnist"), reason="Fashion-MNIST is not installed")
def test_export_examples_run(tmp_path):
    tiny_export(tmp_path)
    env = {**os.environ, "PYTHONPATH": ROOT}
    probe = subprocess.run(
        [sys.executable, "export/examples/linear_probe.py", f"--saved_model={tmp_path / 'export' / 'saved_model'}",
         "--epochs=1", "--train_size=512", f"--output={tmp_path / 'probe.keras'}"],
        capture_output=True, text=True, cwd=ROOT, env=env)
    assert probe.returncode == 0 and "linear probe on the frozen encoder" in probe.stdout, probe.stderr[-3000:]
    tuned = subprocess.run(
        [sys.executable, "export/examples/fine_tune.py", f"--export_dir={tmp_path / 'export'}",
         "--label_fraction=0.005", "--epochs=1", "--test_size=200", f"--output={tmp_path / 'tuned.keras'}"],
        capture_output=True, text=True, cwd=ROOT, env=env)
    assert tuned.returncode == 0 and "fine-tuned on 300 labelled images" in tuned.stdout, tuned.stderr[-3000:]
    assert (tmp_path / "probe.keras").exists() and (tmp_path / "tuned.keras").exists()


@pytest.mark.skipif(not os.path.exists("/usr/share/datasets/fashion-mnist")
                    and not os.environ.get("TF_SIMSIAM_DATA_DIR"), reason="Fashion-MNIST is not installed")
def test_evaluate_resizes_images_to_the_encoders_size(tmp_path):
    tiny_export(tmp_path, 16)
    out = subprocess.run(
        [sys.executable, "-m", "tf_simsiam.evaluate", f"--export_dir={tmp_path / 'export'}", "--protocol=knn",
         "--baselines=", "--train_size=200", "--test_size=50", f"--output_dir={tmp_path / 'eval'}"],
        capture_output=True, text=True, cwd=ROOT)
    assert out.returncode == 0, out.stderr[-3000:]
    rows = json.loads((tmp_path / "eval" / "results.json").read_text())["results"]
    assert [r["protocol"] for r in rows] == ["knn", "knn_plain"] and all(0 < r["top1"] <= 1 for r in rows)


@pytest.mark.skipif(not os.path.exists("/usr/share/datasets/fashion-mnist"), reason="Fashion-MNIST is not installed")
def test_onnx_example_runs(tmp_path):
    pytest.importorskip("tf2onnx", reason="the export extra")
    config = {"name": "resnet18", "input_shape": [28, 28, 1], "width": 4, "mean": [0.29], "std": [0.35]}
    export.export_encoder(tiny_backbone((28, 28, 1)), str(tmp_path / "export"), config, formats="onnx")
    out = subprocess.run([sys.executable, "export/examples/onnx_inference.py", f"--export_dir={tmp_path / 'export'}",
                          "--train_size=300", "--test_size=100"], capture_output=True, text=True, cwd=ROOT,
                         env={**os.environ, "PYTHONPATH": ""})
    assert out.returncode == 0 and "1-nearest-neighbour top-1 on 100 test images" in out.stdout, out.stderr[-3000:]
