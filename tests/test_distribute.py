"""Distributed pretraining on CPU: 2 logical devices (MirroredStrategy) and 2 worker processes (MultiWorker)."""

import json
import os
import signal
import socket
import subprocess
import sys
import time

import numpy as np
import pytest
import tensorflow as tf

from conftest import tiny_simsiam
from tf_simsiam import distribute, optim
from tf_simsiam.data import augment, pipeline

RECIPE = augment.simsiam_cifar(16)
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def images(n=64, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (n, 16, 16, 1)).astype("uint8")


class Context:  # what tf.distribute.InputContext reports to one input pipeline
    def __init__(self, pipelines, pipeline_id, replicas):
        self.num_input_pipelines, self.input_pipeline_id, self.num_replicas_in_sync = pipelines, pipeline_id, replicas


def first(dataset, n):
    return [b.numpy() for b in dataset.take(n)]


@pytest.mark.parametrize("augment_on", ["host", "device"])
def test_replica_batches_of_one_pipeline_are_the_global_batch(augment_on):
    x = images()
    single = first(pipeline.pretrain_dataset(x, 16, RECIPE, seed=1, augment_on=augment_on), 2)
    replicas = first(pipeline.pretrain_dataset(x, 16, RECIPE, seed=1, augment_on=augment_on,
                                               input_context=Context(1, 0, 4)), 8)
    assert all(r.shape[0] == 4 for r in replicas)
    for step in range(2):
        np.testing.assert_array_equal(np.concatenate(replicas[4 * step:4 * step + 4]), single[step])


def test_each_worker_pipeline_gets_its_slice_of_the_global_batch():
    x = images()
    single = first(pipeline.pretrain_dataset(x, 16, RECIPE, seed=1, augment_on="device"), 1)[0]
    halves = [first(pipeline.pretrain_dataset(x, 16, RECIPE, seed=1, augment_on="device",
                                              input_context=Context(2, i, 2)), 1)[0] for i in range(2)]
    np.testing.assert_array_equal(np.concatenate(halves), single)
    views = [first(pipeline.pretrain_dataset(x, 16, RECIPE, seed=1, input_context=Context(2, i, 2)), 1)[0]
             for i in range(2)]
    assert views[0].shape == (8, 2, 16, 16, 1) and not np.allclose(views[0], views[1])


def test_batch_must_divide_among_replicas():
    with pytest.raises(ValueError, match="--batch_size=10 must be a multiple of the 4 replicas"):
        pipeline.pretrain_dataset(images(), 10, RECIPE, input_context=Context(1, 0, 4))


def train(strategy, sync_bn, initial, steps=3, batch=16, one_pass=True):
    with strategy.scope():
        model = tiny_simsiam(sync_bn=sync_bn, backbone_sync_bn=sync_bn)
        model.set_weights(initial)
        model.one_pass = one_pass
        model.compile(optimizer=optim.simsiam_optimizer(batch, 10, base_lr=4.0, weight_decay=5e-4))
    dataset = distribute.distribute_dataset(strategy, lambda context: pipeline.pretrain_dataset(
        images(), batch, RECIPE, seed=2, input_context=context))
    model.fit(dataset, epochs=1, steps_per_epoch=steps, verbose=0)
    return model.get_weights()


@pytest.fixture(scope="module")
def single_device_update():
    """(initial weights, weights after 3 single-device steps), the views as two passes: what 2 replicas must make."""
    initial = tiny_simsiam().get_weights()
    return initial, train(tf.distribute.get_strategy(), False, initial, one_pass=False)


def test_mirrored_update_equals_single_device_update_with_sync_bn(single_device_update):
    mirrored = distribute.get_strategy("mirrored")
    assert mirrored.num_replicas_in_sync == 2  # the two logical CPUs of conftest
    initial, single = single_device_update
    synced = train(mirrored, True, initial)  # one pass, BN synchronized per view: the two passes of one device
    per_replica = train(mirrored, False, initial)
    moved = max(np.abs(a - b).max() for a, b in zip(single, initial))
    assert moved > 1e-2  # the steps did change the weights
    for a, b in zip(synced, single):  # weights, BN moving statistics included
        np.testing.assert_allclose(a, b, rtol=1e-3, atol=1e-4)
    # without SyncBN each replica normalises with the moments of its half batch: another update
    assert max(np.abs(a - b).max() for a, b in zip(per_replica, single)) > 100 * 1e-4


def test_sync_bn_reaches_every_batch_norm_in_the_model():
    with distribute.get_strategy("mirrored").scope():
        model = tiny_simsiam(sync_bn=True, backbone_sync_bn=True)
    bns = [layer for layer in model._flatten_layers() if "BatchNormalization" in type(layer).__name__]
    assert len(bns) > 10 and all(bn.synchronized for bn in bns)


@pytest.mark.skipif(not os.path.exists("/usr/share/datasets/fashion-mnist")
                    and not os.environ.get("TF_SIMSIAM_DATA_DIR"), reason="Fashion-MNIST is not installed")
def test_cli_under_mirrored_strategy_monitors_checkpoints_and_exports(tmp_path):
    from test_train_cli import train
    run = tmp_path / "run"
    out = train(run, "--epochs=2", "--knn_every=1", "--batch_size=32", "--steps_per_epoch=2", "--num_cpu_devices=2")
    assert "MirroredStrategy: 2 replica(s), global batch 32 (16 per replica), synchronized BN" in out.stderr
    result = json.loads((run / "result.json").read_text())
    assert result["replicas"] == 2 and result["sync_bn"] and result["strategy"] == "MirroredStrategy"
    assert len(result["knn_top1_per_epoch"]) == 2 and 0 < result["knn_top1"] <= 1
    assert (run / "checkpoints" / "step-4.weights.h5").exists() and (run / "export" / "saved_model").exists()
    odd = train(tmp_path / "odd", "--batch_size=33", "--num_cpu_devices=2", check=False)
    assert odd.returncode != 0 and "--batch_size=33 must be a multiple of the 2 replicas" in odd.stderr


def test_strategy_names_and_errors(monkeypatch):
    assert distribute.get_strategy("default").num_replicas_in_sync == 1
    assert isinstance(distribute.get_strategy("auto"), type(tf.distribute.get_strategy()))
    assert distribute.is_chief(distribute.get_strategy("mirrored"))
    with pytest.raises(ValueError, match="--strategy must be one of"):
        distribute.get_strategy("horovod")
    monkeypatch.delenv("TF_CONFIG", raising=False)
    with pytest.raises(ValueError, match="needs the TF_CONFIG"):
        distribute.get_strategy("multi_worker")
    monkeypatch.setenv("TF_CONFIG", "{not json")
    with pytest.raises(ValueError, match="TF_CONFIG is not valid JSON"):
        distribute.get_strategy("auto")


def test_auto_precision_is_bf16_only_where_the_hardware_computes_it(tmp_path):
    avx2 = tmp_path / "avx2"
    avx2.write_text("processor\t: 0\nflags\t\t: fpu sse2 avx2 fma\n")
    bf16 = tmp_path / "bf16"
    bf16.write_text("processor\t: 0\nflags\t\t: fpu sse2 avx2 avx512f avx512_bf16\n")
    assert not distribute.cpu_has_native_bf16(str(avx2)) and distribute.cpu_has_native_bf16(str(bf16))
    assert not distribute.cpu_has_native_bf16(str(tmp_path / "missing"))
    if not tf.config.list_physical_devices("GPU"):
        assert distribute.resolve_precision("auto", cpuinfo=str(avx2)) == "float32"
        assert distribute.resolve_precision("auto", cpuinfo=str(bf16)) == "mixed_bfloat16"
    assert distribute.resolve_precision("mixed_bfloat16", cpuinfo=str(avx2)) == "mixed_bfloat16"  # asked for
    with pytest.raises(ValueError, match="--precision must be one of"):
        distribute.resolve_precision("float16")


def free_ports(n):
    sockets = [socket.socket() for _ in range(n)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def worker_env(ports, index):
    cluster = {"worker": [f"127.0.0.1:{p}" for p in ports]}
    env = dict(os.environ, TF_CONFIG=json.dumps({"cluster": cluster, "task": {"type": "worker", "index": index}}),
               TF_CPP_MIN_LOG_LEVEL="2", CUDA_VISIBLE_DEVICES="")
    return env


WORKER = """
import sys, keras, numpy as np
from tf_simsiam import SimSiam, distribute, optim
from tf_simsiam.data import augment, pipeline
from tf_simsiam.models import backbones
strategy = distribute.get_strategy("multi_worker")
keras.utils.set_random_seed(0)
with strategy.scope():
    model = SimSiam(backbones.resnet18((16, 16, 1), width=4, sync_bn=True), proj_dim=32, pred_dim=8,
                    proj_layers=2, sync_bn=True)
    model.compile(optimizer=optim.simsiam_optimizer(16, 6, base_lr=1.0))
images = np.random.default_rng(0).integers(0, 256, (64, 16, 16, 1)).astype("uint8")
dataset = distribute.distribute_dataset(strategy, lambda context: pipeline.pretrain_dataset(
    images, 16, augment.simsiam_cifar(16), seed=0, input_context=context))
model.fit(dataset, epochs=2, steps_per_epoch=3, verbose=0)
np.savez(sys.argv[1], *model.get_weights())
"""


def test_two_worker_processes_end_with_identical_weights(tmp_path):
    ports = free_ports(2)
    procs = [subprocess.Popen([sys.executable, "-c", WORKER, str(tmp_path / f"w{i}.npz")], cwd=ROOT,
                              env=worker_env(ports, i), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
             for i in range(2)]
    outputs = [p.communicate(timeout=300)[0] for p in procs]
    assert all(p.returncode == 0 for p in procs), "\n".join(o[-3000:] for o in outputs)
    w0, w1 = (np.load(tmp_path / f"w{i}.npz") for i in range(2))
    assert len(w0.files) > 10
    for name in w0.files:
        np.testing.assert_array_equal(w0[name], w1[name])


@pytest.mark.skipif(not os.path.exists("/usr/share/datasets/fashion-mnist")
                    and not os.environ.get("TF_SIMSIAM_DATA_DIR"), reason="Fashion-MNIST is not installed")
def test_killed_worker_and_restarted_cluster_complete_the_planned_epochs(tmp_path):
    from test_train_cli import TINY
    run = tmp_path / "run"
    cmd = [sys.executable, "-m", "tf_simsiam.train", f"--model_dir={run}", *TINY, "--steps_per_epoch=8",
           "--epochs=4", "--knn_every=0", "--strategy=multi_worker", "--checkpoint_every_steps=3"]

    def start_cluster():
        ports = free_ports(2)
        return [subprocess.Popen(cmd, cwd=ROOT, env=worker_env(ports, i), stdout=subprocess.PIPE,
                                 stderr=subprocess.STDOUT, text=True) for i in range(2)]

    chief, worker = start_cluster()
    deadline = time.time() + 300
    while not (run / "checkpoints" / "step-3.weights.h5").exists():
        assert chief.poll() is None and time.time() < deadline, chief.communicate()[0][-3000:]
        time.sleep(0.2)
    assert worker.poll() is None, "the run ended before the worker could be killed"
    worker.send_signal(signal.SIGKILL)  # a worker dies mid-training: the chief can't go on alone ...
    worker.wait()
    time.sleep(2)
    chief.send_signal(signal.SIGKILL)  # ... and is restarted with it, as a cluster manager would
    chief.wait()
    done_before = json.loads((run / "checkpoints" / "checkpoint.json").read_text())["step"]
    assert 3 <= done_before < 32

    procs = start_cluster()
    outputs = [p.communicate(timeout=600)[0] for p in procs]
    assert all(p.returncode == 0 for p in procs), "\n".join(o[-3000:] for o in outputs)
    result = json.loads((run / "result.json").read_text())
    assert result["resumed_from_step"] == done_before and result["replicas"] == 2
    assert f"resuming at step {done_before} of 32" in outputs[0]
    history = (run / "history.csv").read_text().splitlines()
    assert [int(row.split(",")[0]) for row in history[1:]][-1] == 4
    assert (run / "export" / "saved_model").exists()


def test_a_model_built_under_several_replicas_gets_sync_bn_without_being_told(single_device_update):
    from tf_simsiam import SimSiam
    from tf_simsiam.models import backbones
    mirrored = distribute.get_strategy("mirrored")

    def batch_norms(model):
        return [layer for layer in model._flatten_layers() if "BatchNormalization" in type(layer).__name__]

    with mirrored.scope():
        model = SimSiam(backbones.resnet18((16, 16, 1), width=4), proj_dim=32, pred_dim=8, proj_layers=2)
    assert len(batch_norms(model)) > 10 and all(bn.synchronized for bn in batch_norms(model))
    alone = SimSiam(backbones.resnet18((16, 16, 1), width=4), proj_dim=32, pred_dim=8, proj_layers=2)
    assert not any(bn.synchronized for bn in batch_norms(alone))  # one replica: the fused per-replica kernel
    # and "auto" under 2 replicas makes the single-device update
    initial, single = single_device_update
    for a, b in zip(train(mirrored, "auto", initial), single):
        np.testing.assert_allclose(a, b, rtol=1e-3, atol=1e-4)


def test_accelerator_defaults_for_xla_and_steps_per_execution(monkeypatch):
    one, mirrored = tf.distribute.get_strategy(), distribute.get_strategy("mirrored")
    assert distribute.resolve_jit_compile("auto", one) is False  # CPUs: off
    assert distribute.resolve_steps_per_execution("auto", one, 500) == 1
    assert distribute.resolve_jit_compile("true", one) is True and distribute.resolve_jit_compile("false", one) is False
    with pytest.raises(ValueError, match="--jit_compile=true does not work with several CPU replicas"):
        distribute.resolve_jit_compile("true", mirrored)
    assert distribute.resolve_steps_per_execution("4", one, 500) == 4
    for bad in ("0", "two", "1.5"):
        with pytest.raises(ValueError, match="--steps_per_execution must be 'auto' or a positive integer"):
            distribute.resolve_steps_per_execution(bad, one, 500)
    monkeypatch.setattr(distribute, "device_kind", lambda strategy: "gpu")
    assert distribute.resolve_jit_compile("auto", one) is True and distribute.resolve_jit_compile("auto", mirrored) \
        is False  # one GPU: on; several: not run here, off
    assert distribute.resolve_steps_per_execution("auto", one, 500) == 16
    assert distribute.resolve_steps_per_execution("auto", one, 5) == 5  # never more than an epoch
    monkeypatch.setattr(distribute, "device_kind", lambda strategy: "tpu")
    assert distribute.resolve_jit_compile("auto", one) is True
    assert distribute.resolve_steps_per_execution("auto", one, 500) == 128
