import logging

import numpy as np
import tensorflow as tf
import pytest

from conftest import tiny_simsiam
from tf_simsiam import callbacks, evaluation
from tf_simsiam.data import sources


def numpy_knn(train, train_labels, test, k, t, classes):
    train = train / np.linalg.norm(train, axis=1, keepdims=True)
    test = test / np.linalg.norm(test, axis=1, keepdims=True)
    predictions = []
    for row in test @ train.T:
        nearest = np.argsort(-row)[:k]
        votes = np.zeros(classes)
        for i in nearest:
            votes[train_labels[i]] += np.exp(row[i] / t)
        predictions.append(votes.argmax())
    return np.array(predictions)


def test_weighted_knn_matches_numpy():
    rng = np.random.default_rng(0)
    train, test = rng.normal(size=(300, 8)), rng.normal(size=(50, 8))
    labels = rng.integers(0, 4, 300)
    got = evaluation.knn_classify(train, labels, test, 4, k=20, temperature=0.1, chunk_size=16)
    np.testing.assert_array_equal(got, numpy_knn(train, labels, test, 20, 0.1, 4))


def test_knn_separates_separable_features():
    rng = np.random.default_rng(1)
    centres = rng.normal(size=(3, 16)) * 5
    labels = np.arange(90) % 3
    features = centres[labels] + rng.normal(size=(90, 16))
    assert evaluation.knn_accuracy(features[:60], labels[:60], features[60:], labels[60:], k=10) == 1.0


def split(n=64, seed=0):
    rng = np.random.default_rng(seed)
    return sources.from_arrays(rng.integers(0, 256, (n, 16, 16, 1)), np.arange(n) % 4)


def test_knn_monitor_logs_accuracy_and_pixel_baseline(caplog):
    caplog.set_level(logging.INFO, logger="tf_simsiam")
    monitor = callbacks.KNNMonitor(split(), split(seed=1), every=2, k=5)
    monitor.set_model(tiny_simsiam())
    monitor.set_params({"epochs": 3})
    monitor.on_train_begin()
    assert 0 <= monitor.pixel_top1 <= 1 and "raw pixels" in caplog.text
    logs = {}
    monitor.on_epoch_end(0, logs)
    assert "knn_top1" not in logs  # not an evaluation epoch
    monitor.on_epoch_end(1, logs)
    assert 0 <= logs["knn_top1"] <= 1
    monitor.on_epoch_end(2, logs)  # the last epoch is always evaluated
    assert [epoch for epoch, _ in monitor.history] == [2, 3]
    assert [epoch for epoch, _ in monitor.feature_std_history] == [2, 3] and logs["feature_std"] > 0


def test_feature_std_is_z_std_of_the_test_features_and_zero_for_a_constant_encoder():
    import keras
    monitor = callbacks.KNNMonitor(split(), split(seed=1), k=5)
    images = split(seed=1).images.reshape(64, -1).astype(np.float32)
    flat = keras.Sequential([keras.layers.Flatten()])
    unit = images / np.linalg.norm(images, axis=1, keepdims=True)
    expected = unit.std(axis=0).mean()  # std over the images of l2-normalised features, averaged over channels
    np.testing.assert_allclose(monitor.evaluate(flat)[1], expected, rtol=1e-5)
    constant = keras.Sequential([keras.layers.Flatten(), keras.layers.Lambda(lambda x: 0 * x + 1)])
    assert monitor.evaluate(constant)[1] < 1e-6


def test_knn_monitor_traces_its_encoder_once_and_follows_its_training():
    model = tiny_simsiam()
    monitor = callbacks.KNNMonitor(split(n=48), split(n=40, seed=1), k=5, batch_size=32)  # full + partial batches
    monitor.set_model(model)
    first = monitor.evaluate()
    features = monitor._features[1]
    traces = features._call.experimental_get_tracing_count()
    assert traces <= 2  # one per batch shape (32, and the remainders 16 and 8 once generalised)
    assert monitor.evaluate() == first and features._call.experimental_get_tracing_count() == traces
    backbone = model.backbone
    backbone.set_weights([1.5 * w + 0.1 for w in backbone.get_weights()])  # as a train step would
    fresh = callbacks.KNNMonitor(split(n=48), split(n=40, seed=1), k=5, batch_size=32)
    np.testing.assert_allclose(monitor.evaluate(backbone), fresh.evaluate(backbone), rtol=1e-6)
    assert monitor._features[1] is features and features._call.experimental_get_tracing_count() == traces
    np.testing.assert_array_equal(evaluation.extract_features(features, split().images, 32),
                                  evaluation.extract_features(backbone, split().images, 32))


def test_features_and_knn_on_two_replicas_equal_one_device():
    from tf_simsiam import distribute
    mirrored = distribute.get_strategy("mirrored")
    assert mirrored.num_replicas_in_sync == 2
    with mirrored.scope():
        model = tiny_simsiam(sync_bn=True, backbone_sync_bn=True)
    model.backbone(np.random.default_rng(0).random((8, 16, 16, 1), dtype=np.float32), training=True)
    alone = tiny_simsiam()
    alone.set_weights(model.get_weights())
    images = split(n=45).images  # batches of 32 and a padded remainder of 13
    on_replicas = evaluation.extract_features(model.backbone, images, 32, strategy=mirrored)
    one = evaluation.extract_features(alone.backbone, images, 32)
    assert on_replicas.shape == one.shape == (45, 32)
    np.testing.assert_allclose(on_replicas, one, rtol=1e-5, atol=1e-6)
    uint8_encoder = lambda x: model.backbone(tf.cast(x, tf.float32) / 255.0, training=False)  # noqa: E731
    np.testing.assert_allclose(evaluation.encode_all(uint8_encoder, images, 32, strategy=mirrored), one,
                               rtol=1e-5, atol=1e-6)
    monitor = callbacks.KNNMonitor(split(n=48), split(n=40, seed=1), k=5, batch_size=32)
    monitor.set_model(model)  # built under the strategy: the monitor uses its replicas
    assert monitor.evaluate()[0] == callbacks.KNNMonitor(split(n=48), split(n=40, seed=1), k=5,
                                                         batch_size=32).evaluate(alone.backbone)[0]
    assert monitor._features[1].strategy is mirrored


def test_knn_monitor_needs_labels():
    with pytest.raises(ValueError, match="labelled"):
        callbacks.KNNMonitor(sources.from_arrays(np.zeros((4, 8, 8, 1))), split())


def test_collapse_monitor_warns(caplog):
    monitor = callbacks.CollapseMonitor(dim=100)
    monitor.on_epoch_end(0, {"z_std": 0.09})
    assert not caplog.records
    monitor.on_epoch_end(1, {"z_std": 0.001})
    assert "COLLAPSE WARNING" in caplog.text and monitor.collapsed_epochs == [2]
