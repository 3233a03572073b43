"""The pretraining tool end to end, in subprocesses, on a Fashion-MNIST subset at 16x16."""

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from test_export import features_in_fresh_process

TINY = ["--image_size=16", "--width=4", "--proj_dim=32", "--pred_dim=8", "--proj_layers=2", "--batch_size=64",
        "--steps_per_epoch=3", "--knn_train_size=500", "--knn_test_size=200", "--augment=simsiam_cifar"]
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

pytestmark = pytest.mark.skipif(
    not os.path.exists("/usr/share/datasets/fashion-mnist") and not os.environ.get("TF_SIMSIAM_DATA_DIR"),
    reason="Fashion-MNIST is not installed (apt-get install dataset-fashion-mnist)")


def train(model_dir, *flags, check=True, **kwargs):
    cmd = [sys.executable, "-m", "tf_simsiam.train", f"--model_dir={model_dir}", *TINY, *flags]
    out = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, **kwargs)
    if check and out.returncode:
        raise AssertionError(f"exit {out.returncode}\n{out.stdout[-3000:]}\n{out.stderr[-3000:]}")
    return out


def test_cli_trains_monitors_and_exports(tmp_path):
    run = tmp_path / "run"
    out = train(run, "--epochs=2", "--knn_every=1", "--precision=mixed_bfloat16")
    assert "kNN top-1 (k=200, t=0.1) on fashion_mnist" in out.stdout and "raw pixels" in out.stdout
    result = json.loads((run / "result.json").read_text())
    assert 0.1 < result["knn_top1"] <= 1 and 0.1 < result["pixels_knn_top1"] <= 1
    assert len(result["knn_top1_per_epoch"]) == 2 and result["precision"] == "mixed_bfloat16"
    assert (run / "flags.cfg").read_text().count("--batch_size=64") == 1
    assert os.listdir(run / "logs" / "train")  # TensorBoard events
    assert "z_std" in (run / "history.csv").read_text()
    # the SavedModel, in a process without tf_simsiam, matches the encoder rebuilt from the exported weights
    from tf_simsiam import export
    encoder = export.load_encoder(str(run / "export"))
    images = np.random.default_rng(0).integers(0, 256, (6, 16, 16, 1)).astype("uint8")
    expected = encoder(images.astype("float32") / 255.0, training=False).numpy()
    got = features_in_fresh_process(str(run / "export" / "saved_model"), images, tmp_path)
    np.testing.assert_allclose(got, expected, rtol=2e-2, atol=2e-2)  # bf16 compute in the SavedModel


def test_a_run_killed_mid_epoch_resumes_at_its_last_step_and_ends_like_an_uninterrupted_one(tmp_path):
    flags = ["--epochs=4", "--knn_every=0", "--seed=3", "--checkpoint_every_steps=2"]  # 3 steps an epoch
    straight = tmp_path / "straight"
    train(straight, *flags)
    run = tmp_path / "run"
    proc = subprocess.Popen([sys.executable, "-m", "tf_simsiam.train", f"--model_dir={run}", *TINY, *flags],
                            cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while not (run / "checkpoints" / "step-8.weights.h5").exists():  # mid-epoch 3
        assert proc.poll() is None and time.time() < deadline, "the run ended before it could be killed"
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    saved = sorted(int(p.name[5:-11]) for p in (run / "checkpoints").glob("step-*.weights.h5"))
    assert saved[-1] >= 8  # every 2 steps and at epoch ends
    newest = run / "checkpoints" / f"step-{saved[-1]}.weights.h5"
    newest.write_bytes(newest.read_bytes()[:1000])  # and the newest is damaged: the one before it is used
    out = train(run, *flags, "--steps_per_execution=2")  # several steps per call: the same batches, checkpoints
    assert f"{newest} cannot be read" in out.stderr
    assert f"resuming at step {saved[-2]} of 12" in out.stderr
    result = json.loads((run / "result.json").read_text())
    assert result["resumed_from_step"] == saved[-2] and saved[-1] - saved[-2] <= 2  # at most 2 steps lost
    assert result["steps_per_execution"] == 2 and result["jit_compile"] is False
    import h5py
    with h5py.File(straight / "checkpoints" / "step-12.weights.h5") as a, \
            h5py.File(run / "checkpoints" / "step-12.weights.h5") as b:
        names = []
        a.visititems(lambda name, obj: names.append(name) if isinstance(obj, h5py.Dataset) else None)
        for name in names:  # the same batches, data order and augmentations: the same weights
            np.testing.assert_allclose(a[name][()], b[name][()], rtol=1e-4, atol=1e-5, err_msg=name)
    history = (run / "history.csv").read_text().splitlines()
    assert [int(row.split(",")[0]) for row in history[1:]][-2:] == [3, 4]


def test_a_diverging_run_stops_with_an_error_and_exports_nothing(tmp_path):
    run = tmp_path / "run"
    out = train(run, "--epochs=2", "--knn_every=0", "--base_lr=1e12", "--checkpoint_every_steps=1", check=False)
    assert out.returncode != 0
    assert "error: the loss is nan at step" in out.stderr and "Try a smaller --base_lr (now 1000000000000.0)" \
        in out.stderr, out.stderr[-2000:]
    assert not (run / "export").exists() and not (run / "result.json").exists()
    assert json.loads((run / "config.json").read_text())["base_lr"] == 1e12


def test_an_unusable_model_dir_is_one_line(tmp_path):
    (tmp_path / "file").write_text("not a directory")
    out = train(tmp_path / "file", "--epochs=1", check=False)
    assert out.returncode != 0 and "Traceback" not in out.stderr
    assert f"error: --model_dir={tmp_path / 'file'} is a file, not a directory" in out.stderr


@pytest.fixture(scope="module")
def one_epoch_run(tmp_path_factory):
    """A finished one-epoch run, shared by the tests that only read it (or are refused writing to it)."""
    run = tmp_path_factory.mktemp("one_epoch") / "run"
    train(run, "--epochs=1", "--knn_every=0")
    return run


def test_export_on_demand(tmp_path, one_epoch_run):
    run = one_epoch_run
    out = subprocess.run([sys.executable, "-m", "tf_simsiam.export", f"--model_dir={run}",
                          f"--export_dir={tmp_path / 'again'}", "--export_formats=litert"],
                         capture_output=True, text=True, cwd=ROOT)
    assert out.returncode == 0, out.stderr[-2000:]
    assert (tmp_path / "again" / "saved_model" / "saved_model.pb").exists()
    assert (tmp_path / "again" / "encoder.tflite").stat().st_size > 1000
    encoder = json.loads((tmp_path / "again" / "encoder.json").read_text())
    assert encoder["precision"] == "float32" and set(encoder["files"]) == {"saved_model", "litert"}
    missing = subprocess.run([sys.executable, "-m", "tf_simsiam.export", f"--model_dir={tmp_path / 'none'}"],
                             capture_output=True, text=True, cwd=ROOT)
    assert missing.returncode != 0 and "not a tf_simsiam training run" in missing.stderr


def test_init_from_an_export_starts_the_backbone_from_its_weights(tmp_path, one_epoch_run):
    import h5py
    export_dir = one_epoch_run / "export"
    run = tmp_path / "run"
    # a learning rate too small to move any weight: the backbone ends where it started
    out = train(run, "--epochs=1", "--knn_every=0", "--seed=7", "--base_lr=1e-9", f"--init_from={export_dir}")
    assert f"backbone initialised from {export_dir}" in out.stderr
    assert json.loads((run / "result.json").read_text())["init_from"] == str(export_dir)

    def kernels(path):
        with h5py.File(path) as f:
            found = {}
            f.visititems(lambda name, obj: found.__setitem__(name, obj[()])
                         if isinstance(obj, h5py.Dataset) and obj.ndim == 4 else None)
            return found
    start, end = kernels(export_dir / "encoder.weights.h5"), kernels(run / "export" / "encoder.weights.h5")
    assert len(start) > 10 and start.keys() == end.keys()
    for name in start:
        np.testing.assert_allclose(end[name], start[name], atol=1e-6, err_msg=name)
    encoder = json.loads((export_dir / "encoder.json").read_text())
    assert json.loads((run / "config.json").read_text())["encoder"]["mean"] == encoder["mean"]
    # an export of another shape is refused before anything is trained, naming the flag
    out = train(tmp_path / "wide", "--epochs=1", "--width=8", f"--init_from={export_dir}", check=False)
    assert out.returncode != 0 and "give --width as the export's" in out.stderr
    out = train(tmp_path / "none", "--epochs=1", f"--init_from={tmp_path}", check=False)
    assert out.returncode != 0 and f"--init_from={tmp_path}: no encoder.json" in out.stderr


@pytest.mark.parametrize("flag, message", [
    ("--dataset=bogus", "unknown --dataset='bogus'"),
    ("--dataset=folder:/no/such/dir", "folder:/no/such/dir: no such folder"),
    ("--batch_size=0", "flag --batch_size=0: 0 is not a positive integer"),
    ("--crop_min_scale=1.5", "--crop_min_scale must be in (0, 1]"),
])
def test_bad_input_is_named_and_fails(tmp_path, flag, message):
    out = train(tmp_path / "run", "--epochs=1", flag, check=False)
    assert out.returncode != 0
    assert message in out.stderr


def test_a_run_with_other_settings_is_not_overwritten(one_epoch_run):
    run = one_epoch_run
    before = (run / "checkpoints" / "checkpoint.json").read_text()
    out = train(run, "--epochs=1", "--knn_every=0", "--width=8", check=False)
    assert out.returncode != 0 and "holds a run with other settings (--width=4 there, 8 now)" in out.stderr
    assert (run / "checkpoints" / "checkpoint.json").read_text() == before


def image_folder(path, count, classes=(), size=(20, 20)):
    """A folder of `count` PNG files (in class sub-folders if `classes`), images the test makes."""
    from test_sources import write_image
    for i in range(count):
        sub = classes[i % len(classes)] if classes else ""
        write_image(os.path.join(str(path), sub, f"{i:04d}.png"), size=size, seed=i)
    return path


def test_an_unlabelled_folder_trains_with_the_default_flags_and_says_the_knn_monitor_is_off(tmp_path):
    images = image_folder(tmp_path / "images", 200)
    out = train(tmp_path / "run", "--epochs=1", f"--dataset=folder:{images}")  # --knn_every left at its default
    assert "the kNN monitor is off" in out.stderr and "--knn_dataset=folder:PATH" in out.stderr
    result = json.loads((tmp_path / "run" / "result.json").read_text())
    assert result["knn_top1"] is None and result["final_z_std"] > 0
    assert (tmp_path / "run" / "export" / "saved_model" / "saved_model.pb").exists()
    assert os.listdir(tmp_path / "run" / "logs" / "train") and (tmp_path / "run" / "checkpoints").exists()


def test_knn_dataset_monitors_an_unlabelled_run(tmp_path):
    images = image_folder(tmp_path / "images", 200)
    labelled = image_folder(tmp_path / "labelled", 60, classes=("a", "b"))
    out = train(tmp_path / "run", "--epochs=1", f"--dataset=folder:{images}", f"--knn_dataset=folder:{labelled}")
    assert "the kNN monitor is off" not in out.stderr
    result = json.loads((tmp_path / "run" / "result.json").read_text())
    assert 0 <= result["knn_top1"] <= 1 and len(result["knn_top1_per_epoch"]) == 1
    bad = train(tmp_path / "run2", "--epochs=1", f"--dataset=folder:{images}", f"--knn_dataset=folder:{images}",
                check=False)
    assert bad.returncode != 0 and f"--knn_dataset=folder:{images} has no labels" in bad.stderr


def test_a_folder_over_the_memory_budget_trains_streamed_with_the_folder_recipe(tmp_path):
    from test_folders import mixed_folder
    images = tmp_path / "photos"
    mixed_folder(str(images), count=150)
    run = tmp_path / "run"
    cmd = [sys.executable, "-m", "tf_simsiam.train", "--flagfile=configs/folder.cfg", f"--dataset=folder:{images}",
           f"--model_dir={run}", "--memory_budget_gb=0.0001", *TINY, "--epochs=1", "--augment=simsiam_imagenet"]
    out = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "150 images streamed from disk" in out.stderr and "skipping unreadable image" in out.stderr
    assert "broken.jpg" in out.stderr and "the kNN monitor is off" in out.stderr
    result = json.loads((run / "result.json").read_text())
    assert result["final_z_std"] > 0 and (run / "export" / "saved_model" / "saved_model.pb").exists()
    assert json.loads((run / "config.json").read_text())["encoder"]["input_shape"] == [16, 16, 3]


def test_a_folder_of_unreadable_files_exits_with_their_paths(tmp_path):
    broken = tmp_path / "broken"
    broken.mkdir()
    for i in range(2):
        (broken / f"{i}.jpg").write_bytes(b"\xff\xd8 not really")
    out = train(tmp_path / "run", f"--dataset=folder:{broken}", check=False)
    assert out.returncode != 0 and f"none of its 2 image files can be read: {broken}/0.jpg" in out.stderr
    assert not (tmp_path / "run" / "config.json").exists()  # stopped before the run began
