"""MoCo v2: its InfoNCE against NumPy, the queue (order, wrap, every replica's keys), the key encoder (no gradient,
the moving average), the update under a strategy, saving, the CLI."""

import json
import os

import numpy as np
import pytest
import tensorflow as tf

from conftest import fit_replicated, tiny_backbone
from tf_simsiam import MoCoV2, distribute, losses, optim
from tf_simsiam.data import augment, pipeline

RECIPE = augment.simsiam_cifar(16)


def numpy_moco(q, k, queue, t):
    """MoCo's Algorithm 1: l_pos = q.k, l_neg = q.queue^T, logits = [l_pos, l_neg] / t, labels 0, cross-entropy
    averaged over the queries (q and k l2-normalised, the queue's keys as stored)."""
    q = q / np.linalg.norm(q, axis=1, keepdims=True)
    k = k / np.linalg.norm(k, axis=1, keepdims=True)
    logits = np.concatenate([np.sum(q * k, 1, keepdims=True), q @ queue.T], axis=1) / t
    logits = logits - logits.max(1, keepdims=True)
    return np.mean(np.log(np.exp(logits).sum(1)) - logits[:, 0])


def unit_rows(rng, n, d):
    x = rng.normal(size=(n, d))
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def test_moco_loss_equals_numpy_and_its_extremes():
    rng = np.random.default_rng(0)
    for n, d, size, t in ((4, 8, 16, 0.2), (7, 3, 5, 0.07), (16, 32, 64, 1.0)):
        q, k = rng.normal(size=(n, d)), rng.normal(size=(n, d))
        queue = unit_rows(rng, size, d)
        loss, _ = losses.moco_loss(q.astype(np.float32), k.astype(np.float32), queue.astype(np.float32), t)
        np.testing.assert_allclose(float(loss), numpy_moco(q, k, queue, t), rtol=1e-5)
    collapsed = np.ones((8, 4), np.float32)  # every query, key and negative the same: chance among 1 + K
    loss, _ = losses.moco_loss(collapsed, collapsed, collapsed[:6] / 2.0, 0.2)
    assert float(loss) == pytest.approx(np.log(7), rel=1e-5)
    q = np.eye(4, dtype=np.float32)  # the key is the query, the negatives orthogonal: loss log(1 + K e^(-1/t))
    loss, accuracy = losses.moco_loss(q[:2], q[:2], q[2:], 0.2)
    assert float(loss) == pytest.approx(np.log(1 + 2 * np.exp(-5)), rel=1e-5) and float(accuracy) == 1.0


def tiny(queue_size=12, momentum=0.9, symmetric=True):
    return MoCoV2(tiny_backbone((16, 16, 1)), proj_dim=8, queue_size=queue_size, momentum=momentum,
                  symmetric=symmetric)


def images(n=64, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (n, 16, 16, 1)).astype("uint8")


def batch(n=4, seed=5):
    return next(iter(pipeline.pretrain_dataset(images(), n, RECIPE, seed=seed)))


def test_the_queue_holds_the_newest_keys_in_order_and_wraps():
    model = tiny(queue_size=10)
    initial = model.queue.numpy()
    np.testing.assert_allclose(np.linalg.norm(initial, axis=1), 1, rtol=1e-6)  # random unit keys to start
    rng = np.random.default_rng(1)
    first, second = rng.normal(size=(6, 8)).astype(np.float32), rng.normal(size=(6, 8)).astype(np.float32)
    model.enqueue(first)
    queue = model.queue.numpy()
    np.testing.assert_allclose(queue[:6], first / np.linalg.norm(first, axis=1, keepdims=True), rtol=1e-6)
    np.testing.assert_array_equal(queue[6:], initial[6:])
    assert int(model.queue_pointer.numpy()) == 6
    model.enqueue(second)  # 4 at the end, then the oldest 2 at the start are overwritten
    queue, unit = model.queue.numpy(), second / np.linalg.norm(second, axis=1, keepdims=True)
    np.testing.assert_allclose(queue[6:], unit[:4], rtol=1e-6)
    np.testing.assert_allclose(queue[:2], unit[4:], rtol=1e-6)
    np.testing.assert_allclose(queue[2:6], first[2:] / np.linalg.norm(first[2:], axis=1, keepdims=True), rtol=1e-6)
    assert int(model.queue_pointer.numpy()) == 2
    with pytest.raises(ValueError, match="queue_size"):
        model.enqueue(np.ones((11, 8), np.float32))


def test_a_step_enqueues_its_keys_from_the_key_encoder_and_uses_the_queue_before_them():
    model = tiny(queue_size=12)
    x = tf.cast(batch()[:, 0], tf.float32) / 255.0
    x1, x2 = x, x[::-1]
    queue_before = model.queue.numpy()

    def keys(view):
        return tf.math.l2_normalize(model.key_projector(model.key_backbone(view, training=True), training=True), -1)
    k1, k2 = keys(x1).numpy(), keys(x2).numpy()
    q1, q2 = (model.projector(model.backbone(v, training=True), training=True).numpy() for v in (x1, x2))
    loss, _, extra = model.objective(x1, x2, training=True)
    expected = (numpy_moco(q1, k2, queue_before, 0.2) + numpy_moco(q2, k1, queue_before, 0.2)) / 2
    assert float(loss) == pytest.approx(expected, rel=1e-4)
    np.testing.assert_allclose(model.queue.numpy()[:8], np.concatenate([k1, k2]), rtol=1e-4, atol=1e-5)
    assert int(model.queue_pointer.numpy()) == 8
    model.objective(x1, x2, training=False)  # evaluation enqueues nothing
    assert int(model.queue_pointer.numpy()) == 8
    asymmetric = tiny(queue_size=12, symmetric=False)
    asymmetric.objective(x1, x2, training=True)
    assert int(asymmetric.queue_pointer.numpy()) == 4  # k2 only


def test_the_key_encoder_gets_no_gradient_and_follows_the_query_encoder_by_its_momentum():
    model = tiny(momentum=0.9)
    key_ids = {id(v) for v in model.key_backbone.weights + model.key_projector.weights}
    assert key_ids and not key_ids & {id(v) for v in model.trainable_variables}
    for key, query in model.key_pairs(statistics=True):
        np.testing.assert_array_equal(key.numpy(), query.numpy())
    x = tf.cast(batch()[:, 0], tf.float32) / 255.0
    with tf.GradientTape() as tape:
        loss, _, _ = model.objective(x, x[::-1], training=False)
    assert all(g is None for g in tape.gradient(loss, [k for k, _ in model.key_pairs()]))
    model.compile(optimizer=optim.pretrain_optimizer("sgd", 4, 10, base_lr=1.0))
    before = [k.numpy() for k, _ in model.key_pairs()]
    model.train_on_batch(batch(), return_dict=True)
    moved = 0.0
    for (key, query), old in zip(model.key_pairs(), before):
        np.testing.assert_allclose(key.numpy(), np.float32(0.9) * old + np.float32(0.1) * query.numpy(),
                                   rtol=1e-6, atol=1e-7)
        moved = max(moved, float(np.abs(query.numpy() - old).max()))
    assert moved > 1e-4


def test_under_two_replicas_the_queue_holds_the_keys_of_both_in_replica_order():
    strategy = distribute.get_strategy("mirrored")
    assert strategy.num_replicas_in_sync == 2
    with strategy.scope():
        model = tiny(queue_size=12)
    rng = np.random.default_rng(2)
    keys = [rng.normal(size=(3, 8)).astype(np.float32) for _ in range(2)]
    values = strategy.experimental_distribute_values_from_function(
        lambda context: tf.constant(keys[context.replica_id_in_sync_group]))
    tf.function(lambda v: strategy.run(model.enqueue, args=(v,)))(values)
    expected = np.concatenate([k / np.linalg.norm(k, axis=1, keepdims=True) for k in keys])
    for queue in strategy.experimental_local_results(model.queue.value):
        np.testing.assert_allclose(queue.numpy()[:6], expected, rtol=1e-6)
    assert [int(p.numpy()) for p in strategy.experimental_local_results(model.queue_pointer.value)] == [6, 6]


def train(strategy, initial, steps=3, batch_size=8, sync_bn=False):
    def build():
        model = MoCoV2(tiny_backbone((16, 16, 1), sync_bn=sync_bn), proj_dim=8, queue_size=32, momentum=0.9)
        model.set_weights(initial)
        model.compile(optimizer=optim.pretrain_optimizer("sgd", batch_size, 10, base_lr=1.0, weight_decay=1e-4))
        return model
    return fit_replicated(strategy, build, images(), RECIPE, steps, batch_size)


def test_mirrored_update_with_synchronized_bn_is_the_single_device_update_with_the_same_queue():
    # per-replica BN differs from one device's by design (MoCo's shuffling BN is there to break that leak), so
    # the backbone and head are compared with BN synchronized; the queue must hold the same keys
    initial = tiny(queue_size=32).get_weights()
    single, _ = train(tf.distribute.get_strategy(), initial)
    synced, history = train(distribute.get_strategy("mirrored"), initial, sync_bn=True)
    assert "contrastive_accuracy" in history
    assert int(synced.queue_pointer.numpy()) == int(single.queue_pointer.numpy()) == 48 % 32
    for a, b in zip(synced.get_weights(), single.get_weights()):
        np.testing.assert_allclose(a, b, rtol=1e-3, atol=1e-4)


def test_the_model_round_trips_with_its_queue_and_key_encoder(tmp_path):
    import keras
    tf.keras.utils.set_random_seed(0)
    model = tiny(queue_size=64)
    model.compile(optimizer=optim.pretrain_optimizer("sgd", 16, 100, base_lr=0.5))
    for seed in range(3):
        model.train_on_batch(batch(16, seed=seed))
    path = str(tmp_path / "mocov2.keras")
    model.save(path)
    again = keras.models.load_model(path)
    np.testing.assert_array_equal(again.queue.numpy(), model.queue.numpy())  # the queue as saved
    assert int(again.queue_pointer.numpy()) == int(model.queue_pointer.numpy())
    for (a, _), (b, _) in zip(model.key_pairs(statistics=True), again.key_pairs(statistics=True)):
        np.testing.assert_array_equal(a.numpy(), b.numpy())


@pytest.mark.skipif(not os.path.exists("/usr/share/datasets/fashion-mnist")
                    and not os.environ.get("TF_SIMSIAM_DATA_DIR"), reason="Fashion-MNIST is not installed")
def test_cli_trains_monitors_resumes_and_exports_mocov2(tmp_path):
    from test_train_cli import train as cli
    from tf_simsiam import pretrain
    run = tmp_path / "run"
    flags = ("--method=mocov2", "--proj_dim=8", "--queue_size=320", "--base_lr=0.3", "--epochs=2", "--knn_every=1")
    cli(run, *flags)
    result = json.loads((run / "result.json").read_text())
    assert result["method"] == "mocov2" and 0 <= result["final_contrastive_accuracy"] <= 1
    assert 0.1 < result["knn_top1"] <= 1 and (run / "export" / "saved_model").exists()
    assert "contrastive_accuracy" in (run / "history.csv").read_text().splitlines()[0]
    _, _, model, epoch = pretrain.load_run(str(run))  # the checkpoint holds the queue and its pointer
    assert epoch == 2 and int(model.queue_pointer.numpy()) == 6 * 128 % 320  # 6 steps of 2 x 64 keys
    (run / "checkpoints" / "step-6.weights.h5").unlink()
    out = cli(run, *flags)
    assert "resuming at step 3 of 6" in out.stderr
    out = cli(tmp_path / "small", "--method=mocov2", "--queue_size=100", check=False)  # 128 keys a step
    assert out.returncode != 0 and "--queue_size=100" in out.stderr


def test_weights_loaded_into_the_query_backbone_restart_the_key_encoder_from_them(tmp_path):
    donor, model = tiny(), tiny()
    path = str(tmp_path / "backbone.weights.h5")
    donor.backbone.save_weights(path)
    model.backbone.load_weights(path)
    model.restart_momentum_networks()
    for key, query in model.key_pairs(statistics=True):
        np.testing.assert_array_equal(key.numpy(), query.numpy())
    assert not model.key_backbone.trainable_variables
