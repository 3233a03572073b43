import keras
import numpy as np
import pytest
import tensorflow as tf

from tf_simsiam.models.batch_norm import BatchNormalization, batch_norm


@pytest.mark.parametrize("sync_bn", [False, True])
@pytest.mark.parametrize("shape", [(16, 4, 4, 3), (16, 5)])
def test_bn_matches_keras_bn_and_updates_unbiased_variance(shape, sync_bn):
    # both paths, the fused kernel and synchronized BN on one replica, compute the same as Keras' BN
    x = tf.Variable(np.random.default_rng(0).normal(2, 3, size=shape).astype("float32"))
    ours, theirs = batch_norm(sync_bn), keras.layers.BatchNormalization(momentum=0.9, epsilon=1e-5)
    ours.build(shape), theirs.build(shape)
    weights = [np.array([0.5, 2.0, -1.0, 1.5, 1.0][:shape[-1]], "float32")] + ours.get_weights()[1:]
    ours.set_weights(weights), theirs.set_weights(weights)
    channel_weights = np.arange(1, shape[-1] + 1, dtype="float32")
    with tf.GradientTape(persistent=True) as tape:
        y_ours, y_theirs = ours(x, training=True), theirs(x, training=True)
        l_ours = tf.reduce_sum(y_ours ** 2 * channel_weights)
        l_theirs = tf.reduce_sum(y_theirs ** 2 * channel_weights)
    np.testing.assert_allclose(y_ours, y_theirs, atol=1e-5)
    for a, b in zip(tape.gradient(l_ours, [x] + ours.trainable_variables),
                    tape.gradient(l_theirs, [x] + theirs.trainable_variables)):
        np.testing.assert_allclose(a, b, rtol=1e-3, atol=1e-3)
    n = np.prod(shape[:-1])
    flat = x.numpy().reshape(-1, shape[-1])
    np.testing.assert_allclose(ours.moving_mean.numpy(), 0.1 * flat.mean(0), rtol=1e-5)
    # like torch.nn.BatchNorm: the running variance takes the unbiased batch variance
    np.testing.assert_allclose(ours.moving_variance.numpy(), 0.9 + 0.1 * flat.var(0) * n / (n - 1), rtol=1e-5)
    np.testing.assert_allclose(ours(x, training=False), (x - ours.moving_mean) / np.sqrt(
        ours.moving_variance + 1.001e-5) * weights[0], atol=1e-5)


def test_bfloat16_activations_stay_bfloat16():
    keras.mixed_precision.set_global_policy("mixed_bfloat16")
    layer = batch_norm()
    y = layer(np.random.rand(4, 3, 3, 2).astype("float32"), training=True)
    assert y.dtype == tf.bfloat16 and layer.gamma.dtype == "float32"


def test_synchronized_bn_is_not_fused_and_serialises():
    layer = batch_norm(sync_bn=True, affine=False, zero_init=True)
    assert not layer._can_fuse(tf.zeros((2, 3, 3, 4)), None)
    clone = BatchNormalization.from_config(layer.get_config())
    assert clone.synchronized and not clone.center and not clone.scale and clone.momentum == 0.9
