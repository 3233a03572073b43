"""Barlow Twins and VICReg: their losses against NumPy transcriptions of the papers' pseudo-code, the global batch
under a strategy, the models' steps, the CLI."""

import json
import os

import numpy as np
import pytest
import tensorflow as tf

from conftest import fit_replicated, tiny_backbone
from tf_simsiam import BarlowTwins, VICReg, distribute, losses, optim
from tf_simsiam.data import augment, pipeline

RECIPE = augment.simsiam_cifar(16)


def off_diagonal(m):
    return m - np.diag(np.diag(m))


def numpy_barlow_twins(z_a, z_b, lambd):
    """Barlow Twins' Algorithm 1, normalising as the official code's BN (biased variance, eps 1e-5)."""
    n, d = z_a.shape
    z_a_norm = (z_a - z_a.mean(0)) / np.sqrt(z_a.var(0) + 1e-5)
    z_b_norm = (z_b - z_b.mean(0)) / np.sqrt(z_b.var(0) + 1e-5)
    c = z_a_norm.T @ z_b_norm / n
    c_diff = (c - np.eye(d)) ** 2
    c_diff[~np.eye(d, dtype=bool)] *= lambd
    return c_diff.sum()


def numpy_vicreg(z_a, z_b, lambd=25.0, mu=25.0, nu=1.0):
    """VICReg's Algorithm 1."""
    n, d = z_a.shape
    sim_loss = np.mean((z_a - z_b) ** 2)
    std_z_a, std_z_b = np.sqrt(z_a.var(0, ddof=1) + 1e-4), np.sqrt(z_b.var(0, ddof=1) + 1e-4)
    std_loss = np.mean(np.maximum(0, 1 - std_z_a)) + np.mean(np.maximum(0, 1 - std_z_b))
    z_a, z_b = z_a - z_a.mean(0), z_b - z_b.mean(0)
    cov_z_a, cov_z_b = z_a.T @ z_a / (n - 1), z_b.T @ z_b / (n - 1)
    cov_loss = (off_diagonal(cov_z_a) ** 2).sum() / d + (off_diagonal(cov_z_b) ** 2).sum() / d
    return lambd * sim_loss + mu * std_loss + nu * cov_loss


def float32_pair(n, d, seed, scale=1.0):
    rng = np.random.default_rng(seed)
    z1, z2 = (rng.normal(size=(n, d)) * scale).astype(np.float32), (rng.normal(size=(n, d)) * scale).astype(np.float32)
    z2 = (0.6 * z1 + 0.4 * z2).astype(np.float32)  # correlated views, as after training
    return z1, z2


@pytest.mark.parametrize("n, d, lambd", [(8, 4, 5e-3), (16, 32, 5e-3), (33, 7, 0.5)])
def test_barlow_twins_loss_equals_numpy(n, d, lambd):
    z1, z2 = float32_pair(n, d, seed=d)
    loss, on, off = losses.barlow_twins_loss(z1, z2, lambd)
    np.testing.assert_allclose(float(loss), numpy_barlow_twins(z1.astype(np.float64), z2.astype(np.float64), lambd),
                               rtol=1e-5)
    np.testing.assert_allclose(float(loss), float(on) + lambd * float(off), rtol=1e-6)


def test_barlow_twins_loss_at_the_extremes():
    # identical views: every c_ii is var / (var + eps), the on-diagonal term about 0
    z = np.random.default_rng(0).normal(size=(64, 8)).astype(np.float32) * 3
    loss, on, off = losses.barlow_twins_loss(z, z)
    np.testing.assert_allclose(float(loss), numpy_barlow_twins(z.astype(np.float64), z.astype(np.float64), 5e-3),
                               rtol=1e-5)
    assert float(on) < 1e-6 and float(off) > 0  # the sample's chance correlations remain
    # collapsed outputs (one constant vector): nothing correlates, c = 0, the loss is D
    collapsed = np.ones((16, 8), np.float32) * 3.0
    loss, on, off = losses.barlow_twins_loss(collapsed, collapsed)
    np.testing.assert_allclose([float(loss), float(on), float(off)], [8.0, 8.0, 0.0], atol=1e-5)


@pytest.mark.parametrize("n, d, scale", [(8, 4, 1.0), (16, 32, 0.3), (33, 7, 2.0)])
def test_vicreg_loss_equals_numpy(n, d, scale):
    z1, z2 = float32_pair(n, d, seed=d, scale=scale)
    loss, invariance, variance, covariance = losses.vicreg_loss(z1, z2)
    np.testing.assert_allclose(float(loss), numpy_vicreg(z1.astype(np.float64), z2.astype(np.float64)), rtol=1e-5)
    np.testing.assert_allclose(float(loss), 25 * float(invariance) + 25 * float(variance) + float(covariance),
                               rtol=1e-6)
    weighted = losses.vicreg_loss(z1, z2, 1.0, 2.0, 3.0)[0]
    np.testing.assert_allclose(float(weighted), numpy_vicreg(z1.astype(np.float64), z2.astype(np.float64), 1, 2, 3),
                               rtol=1e-5)


def test_vicreg_loss_at_the_extremes():
    # collapsed outputs: no invariance or covariance cost, the full variance hinge 2 * (1 - sqrt(eps))
    collapsed = np.ones((16, 8), np.float32)
    loss, invariance, variance, covariance = losses.vicreg_loss(collapsed, collapsed)
    np.testing.assert_allclose([float(invariance), float(variance), float(covariance)], [0, 2 * 0.99, 0], atol=1e-6)
    np.testing.assert_allclose(float(loss), 25 * 1.98, rtol=1e-6)
    # identical views spread with std above 1 in uncorrelated dimensions: only the covariance of sampling is left
    z = np.random.default_rng(1).normal(size=(512, 4)).astype(np.float32) * 3
    loss, invariance, variance, covariance = losses.vicreg_loss(z, z)
    assert float(invariance) == 0 and float(variance) == 0
    np.testing.assert_allclose(float(loss), numpy_vicreg(z.astype(np.float64), z.astype(np.float64)), rtol=1e-5)


def test_losses_are_float32_under_bfloat16():
    z = tf.random.stateless_normal((6, 8), [0, 1], dtype=tf.bfloat16)
    assert losses.barlow_twins_loss(z, z[::-1])[0].dtype == tf.float32
    assert losses.vicreg_loss(z, z[::-1])[0].dtype == tf.float32


@pytest.mark.parametrize("loss_fn", [lambda a, b: losses.barlow_twins_loss(a, b)[0],
                                     lambda a, b: losses.vicreg_loss(a, b)[0]], ids=["barlow", "vicreg"])
def test_gathered_loss_and_gradient_equal_the_single_device_ones(loss_fn):
    mirrored = distribute.get_strategy("mirrored")
    assert mirrored.num_replicas_in_sync == 2
    rng = np.random.default_rng(1)
    z1, z2 = rng.normal(size=(8, 5)).astype("float32"), rng.normal(size=(8, 5)).astype("float32")
    weight = tf.constant(rng.normal(size=(5, 5)).astype("float32"))

    def loss_and_gradient(a, b):
        with tf.GradientTape() as tape:
            tape.watch(weight)
            loss = loss_fn(a @ weight, b @ weight)
        return loss, tape.gradient(loss, weight)

    single_loss, single_grad = loss_and_gradient(tf.constant(z1), tf.constant(z2))

    def replica_fn(a, b):
        half = 4 * tf.distribute.get_replica_context().replica_id_in_sync_group
        return loss_and_gradient(a[half:half + 4], b[half:half + 4])

    per_replica_loss, per_replica_grad = mirrored.run(replica_fn, args=(tf.constant(z1), tf.constant(z2)))
    loss = mirrored.reduce(tf.distribute.ReduceOp.MEAN, per_replica_loss, axis=None)
    grad = mirrored.reduce(tf.distribute.ReduceOp.MEAN, per_replica_grad, axis=None)
    np.testing.assert_allclose(float(loss), float(single_loss), rtol=1e-5)
    np.testing.assert_allclose(grad.numpy(), single_grad.numpy(), rtol=1e-4, atol=1e-6)
    # each half alone has other batch statistics: another loss
    local = np.mean([float(loss_fn(z1[i:i + 4] @ weight, z2[i:i + 4] @ weight)) for i in (0, 4)])
    assert abs(local - float(single_loss)) > 1e-2


def tiny(method, sync_bn=False):
    backbone = tiny_backbone((16, 16, 1), sync_bn=sync_bn)
    if method == "barlow":
        return BarlowTwins(backbone, proj_dim=16, proj_layers=3, lambd=5e-3, sync_bn=sync_bn)
    return VICReg(backbone, proj_dim=16, proj_layers=3, sync_bn=sync_bn)


def images(n=64, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (n, 16, 16, 1)).astype("uint8")


def test_projector_is_the_papers():
    model = tiny("barlow")
    dense = [layer for layer in model.projector.layers if "Dense" in type(layer).__name__]
    assert [d.units for d in dense] == [16, 16, 16] and not any(d.use_bias for d in dense)
    assert "Dense" in type(model.projector.layers[-1]).__name__  # no BN or ReLU after the last layer


def train(method, strategy, initial, steps=3, batch=16):
    def build():
        model = tiny(method, sync_bn=strategy.num_replicas_in_sync > 1)
        model.set_weights(initial)
        model.compile(optimizer=optim.pretrain_optimizer("lars", batch, 10, base_lr=0.5, weight_decay=1e-4))
        return model
    model, history = fit_replicated(strategy, build, images(), RECIPE, steps, batch)
    return model.get_weights(), history


@pytest.mark.parametrize("method", ["barlow", "vicreg"])
def test_mirrored_update_equals_single_device_update(method):
    initial = tiny(method).get_weights()
    single, _ = train(method, tf.distribute.get_strategy(), initial)
    mirrored, history = train(method, distribute.get_strategy("mirrored"), initial)
    assert set(tiny(method).extra_metrics) <= set(history)
    moved = max(np.abs(a - b).max() for a, b in zip(single, initial))
    assert moved > 1e-3
    for a, b in zip(mirrored, single):
        np.testing.assert_allclose(a, b, rtol=1e-3, atol=1e-4)


@pytest.mark.parametrize("method", ["barlow", "vicreg"])
def test_a_few_steps_lower_the_loss(method):
    tf.keras.utils.set_random_seed(0)
    model = tiny(method)
    model.compile(optimizer=optim.pretrain_optimizer("lars", 32, 200, base_lr=0.5))
    batch = next(iter(pipeline.pretrain_dataset(images(), 32, RECIPE, seed=5)))
    first = model.train_on_batch(batch, return_dict=True)
    for _ in range(25):
        last = model.train_on_batch(batch, return_dict=True)
    assert last["loss"] < 0.8 * first["loss"], (first, last)
    held_out = model.evaluate(batch, batch_size=32, return_dict=True, verbose=0)  # test_step, inference mode
    assert set(held_out) == {"loss", "z_std", *model.extra_metrics} and np.isfinite(held_out["loss"])


def test_models_round_trip_through_keras_save(tmp_path):
    import keras
    for method in ("barlow", "vicreg"):
        model = tiny(method)
        path = str(tmp_path / f"{method}.keras")
        model.save(path)
        again = keras.models.load_model(path)
        assert type(again) is type(model) and again.get_config()["proj_dim"] == 16
        x = images(4).astype("float32") / 255
        np.testing.assert_allclose(again(x).numpy(), model(x).numpy(), atol=1e-6)


@pytest.mark.skipif(not os.path.exists("/usr/share/datasets/fashion-mnist")
                    and not os.environ.get("TF_SIMSIAM_DATA_DIR"), reason="Fashion-MNIST is not installed")
@pytest.mark.parametrize("method, terms", [("barlow", ("on_diagonal", "off_diagonal")),
                                           ("vicreg", ("invariance", "variance", "covariance"))])
def test_cli_trains_monitors_resumes_and_exports(tmp_path, method, terms):
    from test_train_cli import train as cli
    run = tmp_path / "run"
    flags = (f"--method={method}", "--proj_dim=32", "--proj_layers=3", "--base_lr=0.3", "--epochs=2",
             "--knn_every=1")
    out = cli(run, *flags)
    result = json.loads((run / "result.json").read_text())
    assert result["method"] == method and all(result[f"final_{term}"] is not None for term in terms)
    assert 0.1 < result["knn_top1"] <= 1 and (run / "export" / "saved_model").exists()
    assert "kNN top-1" in out.stdout and terms[0] in (run / "history.csv").read_text().splitlines()[0]
    if method == "vicreg":  # the last checkpoint lost: the same command resumes from the one of epoch 1
        for path in (run / "checkpoints").glob("step-6.weights.h5"):
            path.unlink()
        out = cli(run, *flags)
        assert "resuming at step 3 of 6" in out.stderr
        assert json.loads((run / "result.json").read_text())["resumed_from_step"] == 3
