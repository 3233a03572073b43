"""BYOL: its loss against NumPy, the target network (no gradient, the moving average, the tau schedule), the
update under a strategy, saving, the CLI."""

import json
import math
import os

import numpy as np
import pytest
import tensorflow as tf

from conftest import fit_replicated, tiny_backbone
from tf_simsiam import BYOL, distribute, losses, optim
from tf_simsiam.data import augment, pipeline
from tf_simsiam.models.byol import tau_schedule

RECIPE = augment.simsiam_cifar(16)


def numpy_byol(p1, p2, t1, t2):
    """BYOL's loss: the normalised MSE 2 - 2 cos of each prediction and the other view's target, averaged over
    the batch, the two directions summed (the paper's L + L~)."""
    def normalised(x):
        return x / np.linalg.norm(x, axis=1, keepdims=True)

    def mse(p, t):
        return np.mean(np.sum((normalised(p) - normalised(t)) ** 2, axis=1))
    return mse(p1, t2) + mse(p2, t1)


def test_byol_loss_equals_numpy_and_its_extremes():
    rng = np.random.default_rng(0)
    for n, d in ((4, 8), (7, 3), (16, 32)):
        p1, p2, t1, t2 = (rng.normal(size=(n, d)).astype(np.float32) for _ in range(4))
        got = float(losses.byol_loss(p1, p2, t1, t2))
        np.testing.assert_allclose(got, numpy_byol(*(x.astype(np.float64) for x in (p1, p2, t1, t2))), rtol=1e-5)
    same = rng.normal(size=(8, 4)).astype(np.float32)
    assert abs(float(losses.byol_loss(same, same, same, same))) < 1e-6  # predictions on their targets
    assert float(losses.byol_loss(same, same, -same, -same)) == pytest.approx(8.0, rel=1e-6)  # opposite: 2 x 4


def test_tau_schedule():
    assert float(tau_schedule(0, 100)) == pytest.approx(0.996)
    assert float(tau_schedule(50, 100)) == pytest.approx(1 - 0.004 / 2)
    assert float(tau_schedule(100, 100)) == pytest.approx(1.0)
    assert float(tau_schedule(25, 100, 0.99)) == pytest.approx(1 - 0.01 * (math.cos(math.pi / 4) + 1) / 2)
    assert float(tau_schedule(70, None)) == pytest.approx(0.996)  # no total: the base throughout


def tiny(sync_bn=False, total_steps=10, tau_base=0.9):
    return BYOL(tiny_backbone((16, 16, 1), sync_bn=sync_bn), proj_dim=8, hidden_dim=16, tau_base=tau_base,
                total_steps=total_steps, sync_bn=sync_bn)


def images(n=64, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (n, 16, 16, 1)).astype("uint8")


def batch(n=16, seed=5):
    return next(iter(pipeline.pretrain_dataset(images(), n, RECIPE, seed=seed)))


def test_the_target_starts_as_the_online_network_and_gets_no_gradient():
    model = tiny()
    target_ids = {id(v) for v in model.target_backbone.weights + model.target_projector.weights}
    assert target_ids and not target_ids & {id(v) for v in model.trainable_variables}
    for target, online in model.target_pairs(statistics=True):
        np.testing.assert_array_equal(target.numpy(), online.numpy())
    x = tf.cast(batch()[:, 0], tf.float32) / 255.0
    with tf.GradientTape() as tape:
        loss, _, _ = model.objective(x, x[::-1])
    gradients = tape.gradient(loss, [t for t, _ in model.target_pairs()])
    assert all(g is None for g in gradients)


def test_after_one_step_the_target_is_the_moving_average_of_the_updated_online_network():
    model = tiny(total_steps=10, tau_base=0.9)
    model.compile(optimizer=optim.pretrain_optimizer("lars", 16, 10, base_lr=1.0))
    before = [t.numpy() for t, _ in model.target_pairs()]
    logs = model.train_on_batch(batch(), return_dict=True)
    tau = np.float32(tau_schedule(0, 10, 0.9))
    assert logs["tau"] == pytest.approx(float(tau))
    moved = 0.0
    for (target, online), old in zip(model.target_pairs(), before):
        expected = tau * old + (np.float32(1) - tau) * online.numpy()
        np.testing.assert_allclose(target.numpy(), expected, rtol=1e-6, atol=1e-7)
        moved = max(moved, float(np.abs(online.numpy() - old).max()))
    assert moved > 1e-4  # the online network did move, so the average is not trivially the old target


def train(strategy, initial, steps=3, batch_size=16):
    def build():
        model = tiny(sync_bn=strategy.num_replicas_in_sync > 1)
        model.set_weights(initial)
        model.compile(optimizer=optim.pretrain_optimizer("lars", batch_size, 10, base_lr=1.0, weight_decay=1e-4))
        return model
    model, history = fit_replicated(strategy, build, images(), RECIPE, steps, batch_size)
    return model.get_weights(), history


def test_mirrored_byol_update_equals_single_device_update():
    initial = tiny().get_weights()
    single, _ = train(tf.distribute.get_strategy(), initial)
    mirrored, history = train(distribute.get_strategy("mirrored"), initial)
    assert "tau" in history
    assert max(np.abs(a - b).max() for a, b in zip(single, initial)) > 1e-3
    for a, b in zip(mirrored, single):  # online and target weights alike
        np.testing.assert_allclose(a, b, rtol=1e-3, atol=1e-4)


def test_a_few_steps_lower_the_loss_and_the_model_round_trips(tmp_path):
    import keras
    tf.keras.utils.set_random_seed(0)
    model = tiny(total_steps=100)
    model.compile(optimizer=optim.pretrain_optimizer("lars", 32, 100, base_lr=1.0))
    data = batch(32)
    first = model.train_on_batch(data, return_dict=True)
    for _ in range(25):
        last = model.train_on_batch(data, return_dict=True)
    assert last["loss"] < first["loss"] - 0.1, (first, last)
    path = str(tmp_path / "byol.keras")
    model.save(path)
    again = keras.models.load_model(path)
    # the target as saved, not a new copy
    for (a, _), (b, _) in zip(model.target_pairs(statistics=True), again.target_pairs(statistics=True)):
        np.testing.assert_array_equal(a.numpy(), b.numpy())
    assert not np.allclose(model.target_projector.weights[0].numpy(), model.projector.weights[0].numpy())


@pytest.mark.skipif(not os.path.exists("/usr/share/datasets/fashion-mnist")
                    and not os.environ.get("TF_SIMSIAM_DATA_DIR"), reason="Fashion-MNIST is not installed")
def test_cli_trains_resumes_byol_with_its_target_and_exports_the_online_backbone(tmp_path):
    from test_train_cli import train as cli
    from tf_simsiam import pretrain
    run = tmp_path / "run"
    flags = ("--method=byol", "--proj_dim=8", "--hidden_dim=16", "--base_lr=0.3", "--epochs=2", "--knn_every=1")
    cli(run, *flags)
    result = json.loads((run / "result.json").read_text())
    assert result["method"] == "byol" and 0.996 < result["final_tau"] < 1
    assert 0.1 < result["knn_top1"] <= 1 and (run / "export" / "saved_model").exists()
    assert "tau" in (run / "history.csv").read_text().splitlines()[0]
    encoder = json.loads((run / "export" / "encoder.json").read_text())
    assert encoder["feature_dim"] == 32  # the backbone's features, not a head's
    _, _, model, epoch = pretrain.load_run(str(run))  # the checkpoint holds the target: a moving average
    assert epoch == 2
    gaps = [float(np.abs(t.numpy() - o.numpy()).max()) for t, o in model.target_pairs()]
    assert max(gaps) > 1e-4  # the target lags the online network (a copy of it would give 0)
    (run / "checkpoints" / "step-6.weights.h5").unlink()  # the last checkpoint lost: resume from epoch 1's
    out = cli(run, *flags)
    assert "resuming at step 3 of 6" in out.stderr


def test_weights_loaded_into_the_online_backbone_restart_the_target_from_them(tmp_path):
    # as --init_from does: the target must start from the loaded weights, not from the random ones
    donor, model = tiny(), tiny()
    path = str(tmp_path / "backbone.weights.h5")
    donor.backbone.save_weights(path)
    model.backbone.load_weights(path)
    assert not np.array_equal(model.target_backbone.weights[0].numpy(), model.backbone.weights[0].numpy())
    model.restart_momentum_networks()
    for target, online in model.target_pairs(statistics=True):
        np.testing.assert_array_equal(target.numpy(), online.numpy())
    assert not model.target_backbone.trainable_variables  # still frozen
