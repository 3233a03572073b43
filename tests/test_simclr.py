"""SimCLR: NT-Xent against NumPy, cross-replica negatives, the model's steps, the augmentation, the CLI."""

import json
import os

import numpy as np
import pytest
import tensorflow as tf

from conftest import fit_replicated, tiny_backbone
from tf_simsiam import SimCLR, distribute, losses, optim
from tf_simsiam.data import augment, pipeline

RECIPE = augment.simclr(16, strength=0.5)


def numpy_nt_xent(z1, z2, t):
    """NT-Xent written out as in the paper's Algorithm 1: l(2k-1, 2k) + l(2k, 2k-1), over 2N."""
    z = np.empty((2 * len(z1), z1.shape[1]))
    z[0::2], z[1::2] = z1, z2  # the paper's order: views 2k-1, 2k of image k
    z = z / np.linalg.norm(z, axis=1, keepdims=True)
    s = z @ z.T
    total = 0.0
    for i in range(len(z)):
        j = i + 1 if i % 2 == 0 else i - 1
        others = [k for k in range(len(z)) if k != i]
        total += -np.log(np.exp(s[i, j] / t) / np.sum(np.exp(s[i, others] / t)))
    return total / len(z)


def test_nt_xent_equals_numpy():
    rng = np.random.default_rng(0)
    for n, dim, t in ((4, 8, 0.5), (7, 3, 0.1), (16, 32, 1.0)):
        z1, z2 = rng.normal(size=(n, dim)), rng.normal(size=(n, dim))
        got = float(losses.nt_xent(tf.constant(z1, tf.float32), tf.constant(z2, tf.float32), t))
        np.testing.assert_allclose(got, numpy_nt_xent(z1, z2, t), rtol=1e-5)


def test_nt_xent_at_the_extremes():
    n = 8
    same = tf.ones((n, 4))  # collapse: every view alike, the positive is one of 2N - 1 equal candidates
    np.testing.assert_allclose(float(losses.nt_xent(same, same, 0.5)), np.log(2 * n - 1), rtol=1e-5)
    eye = tf.eye(n)  # positives identical, all other views orthogonal
    t = 0.5
    expected = -np.log(np.exp(1 / t) / (np.exp(1 / t) + 2 * n - 2))
    np.testing.assert_allclose(float(losses.nt_xent(eye, eye, t)), expected, rtol=1e-5)
    assert float(losses.nt_xent(eye, eye, 0.01)) < 1e-6


def test_nt_xent_is_float32_under_bfloat16():
    z = tf.random.stateless_normal((6, 8), [0, 1], dtype=tf.bfloat16)
    assert losses.nt_xent(z, z[::-1], 0.5).dtype == tf.float32


def tiny_simclr(sync_bn=False):
    return SimCLR(tiny_backbone((16, 16, 1), sync_bn=sync_bn), proj_dim=16, proj_layers=2, temperature=0.5,
                  sync_bn=sync_bn)


def test_head_is_simclrs():
    model = tiny_simclr()
    dense = [layer for layer in model.projector.layers if "Dense" in type(layer).__name__]
    assert [d.units for d in dense] == [model.backbone.output_shape[-1], 16]  # hidden width = backbone width
    assert not any(d.use_bias for d in dense)
    last = model.projector.layers[-1]
    assert "BatchNormalization" in type(last).__name__ and not last.center and last.scale
    assert not model.projector.layers[-2].name.startswith("relu")


def test_both_views_go_through_as_one_batch_with_bn_over_all_2n():
    """google-research/simclr: the 2N views are one batch, so BN statistics are those of all 2N. In NumPy: the
    head's last BN (a scale, no shift) then gives z over the 2N views zero mean per channel, and each view not."""
    model = tiny_simclr()
    rng = np.random.default_rng(0)
    x1 = rng.random((16, 16, 16, 1), dtype=np.float32)
    x2 = rng.random((16, 16, 16, 1), dtype=np.float32) * 0.3 + 0.6  # other statistics than x1
    z1, z2 = (z.numpy().astype(np.float64) for z in model.forward(x1, x2, training=True))
    np.testing.assert_allclose(np.concatenate([z1, z2]).mean(0), 0, atol=1e-5)
    assert np.abs(z1.mean(0)).max() > 1e-2
    # the head in NumPy, BN with the moments of all 2N rows (biased variance, eps 1e-5 raised to the fused floor)
    features = model.backbone(np.concatenate([x1, x2]), training=True).numpy().astype(np.float64)
    w1, gamma1, beta1, _, _, w2, gamma2, _, _ = [np.asarray(w, np.float64) for w in model.projector.get_weights()]

    def bn(h, gamma, beta):
        return gamma * (h - h.mean(0)) / np.sqrt(h.var(0) + 1.001e-5) + beta

    expected = bn(np.maximum(bn(features @ w1, gamma1, beta1), 0) @ w2, gamma2, 0.0)
    np.testing.assert_allclose(np.concatenate([z1, z2]), expected, rtol=1e-4, atol=1e-4)


def images(n=64, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (n, 16, 16, 1)).astype("uint8")


def views(n=16, seed=3):
    return pipeline.pretrain_dataset(images(), n, RECIPE, seed=seed)


def test_gathered_loss_and_gradient_equal_the_single_device_ones():
    mirrored = distribute.get_strategy("mirrored")
    assert mirrored.num_replicas_in_sync == 2
    rng = np.random.default_rng(1)
    z1, z2 = rng.normal(size=(8, 5)).astype("float32"), rng.normal(size=(8, 5)).astype("float32")
    weight = tf.constant(rng.normal(size=(5, 5)).astype("float32"))

    def loss_and_gradient(a, b):
        with tf.GradientTape() as tape:
            tape.watch(weight)
            loss = losses.nt_xent(a @ weight, b @ weight, 0.5)
        return loss, tape.gradient(loss, weight)

    single_loss, single_grad = loss_and_gradient(tf.constant(z1), tf.constant(z2))

    def replica_fn(a, b):
        context = tf.distribute.get_replica_context()
        half = 4 * context.replica_id_in_sync_group
        return loss_and_gradient(a[half:half + 4], b[half:half + 4])

    per_replica_loss, per_replica_grad = mirrored.run(replica_fn, args=(tf.constant(z1), tf.constant(z2)))
    loss = mirrored.reduce(tf.distribute.ReduceOp.MEAN, per_replica_loss, axis=None)
    grad = mirrored.reduce(tf.distribute.ReduceOp.MEAN, per_replica_grad, axis=None)
    np.testing.assert_allclose(float(loss), float(single_loss), rtol=1e-5)
    np.testing.assert_allclose(grad.numpy(), single_grad.numpy(), rtol=1e-4, atol=1e-6)
    # without gathering, each half only sees its own negatives: another loss
    local = np.mean([numpy_nt_xent(z1[i:i + 4] @ weight.numpy(), z2[i:i + 4] @ weight.numpy(), 0.5)
                     for i in (0, 4)])
    assert abs(local - float(single_loss)) > 1e-2


def train(strategy, initial, steps=3, batch=16):
    def build():
        model = tiny_simclr(sync_bn=strategy.num_replicas_in_sync > 1)
        model.backbone.set_weights(initial[0])
        model.projector.set_weights(initial[1])
        model.compile(optimizer=optim.pretrain_optimizer("lars", batch, 10, base_lr=2.0, weight_decay=1e-4))
        return model
    model, history = fit_replicated(strategy, build, images(), RECIPE, steps, batch)
    return model.get_weights(), history


def test_mirrored_simclr_update_equals_single_device_update():
    start = tiny_simclr()
    initial = (start.backbone.get_weights(), start.projector.get_weights())
    single, _ = train(tf.distribute.get_strategy(), initial)
    mirrored, history = train(distribute.get_strategy("mirrored"), initial)
    assert 0 <= history["contrastive_accuracy"][0] <= 1
    moved = max(np.abs(a - b).max() for a, b in zip(single, initial[0] + initial[1]))
    assert moved > 1e-3
    for a, b in zip(mirrored, single):
        np.testing.assert_allclose(a, b, rtol=1e-3, atol=1e-4)


def test_a_few_steps_lower_the_loss():
    tf.keras.utils.set_random_seed(0)
    model = tiny_simclr()
    model.compile(optimizer=optim.pretrain_optimizer("lars", 32, 200, base_lr=1.0))
    batch = next(iter(pipeline.pretrain_dataset(images(), 32, RECIPE, seed=5)))
    first = model.train_on_batch(batch, return_dict=True)
    for _ in range(25):
        last = model.train_on_batch(batch, return_dict=True)
    assert last["loss"] < first["loss"] - 0.1, (first, last)
    assert last["contrastive_accuracy"] > first["contrastive_accuracy"]
    held_out = model.evaluate(batch, batch_size=32, return_dict=True, verbose=0)  # test_step, inference mode
    assert set(held_out) == {"loss", "z_std", "contrastive_accuracy"} and np.isfinite(held_out["loss"])


def test_simclr_recipe():
    recipe = augment.simclr(224)
    assert recipe.crop_scale == (0.08, 1.0) and recipe.jitter == pytest.approx((0.8, 0.8, 0.8, 0.2))
    assert recipe.jitter_prob == 0.8 and recipe.grayscale_prob == 0.2
    assert recipe.blur_prob == 0.5 and recipe.kernel_size() == 23  # 10% of 224, odd
    small = augment.simclr(32, strength=0.5)
    assert small.blur_prob == 0.0 and small.jitter == pytest.approx((0.4, 0.4, 0.4, 0.1))
    x = images(8)
    a, b = augment.two_views(x, RECIPE, [0, 1]).numpy().transpose(1, 0, 2, 3, 4)
    assert a.shape == (8, 16, 16, 1) and not np.allclose(a, b)


def test_lr_scaling():
    assert optim.scaled_learning_rate(0.3, 512) == pytest.approx(0.6)
    assert optim.scaled_learning_rate(0.075, 4096, "sqrt") == pytest.approx(0.075 * 64)
    with pytest.raises(ValueError, match="--lr_scaling"):
        optim.scaled_learning_rate(0.3, 512, "cubic")


@pytest.mark.skipif(not os.path.exists("/usr/share/datasets/fashion-mnist")
                    and not os.environ.get("TF_SIMSIAM_DATA_DIR"), reason="Fashion-MNIST is not installed")
def test_cli_trains_simclr_and_exports(tmp_path):
    from test_train_cli import train as cli
    run = tmp_path / "run"
    out = cli(run, "--method=simclr", "--augment=simclr", "--crop_min_scale=0.08", "--color_strength=0.5",
              "--proj_dim=16", "--temperature=0.5", "--base_lr=0.3", "--epochs=2", "--knn_every=1")
    result = json.loads((run / "result.json").read_text())
    assert result["method"] == "simclr" and 0 <= result["final_contrastive_accuracy"] <= 1
    assert 0.1 < result["knn_top1"] <= 1 and (run / "export" / "saved_model").exists()
    assert "kNN top-1" in out.stdout
    again = cli(run, "--method=simsiam", check=False)
    assert again.returncode != 0 and "--method='simclr' there" in again.stderr
