"""FLOPs of a Keras model's forward pass per example, counted from its layers, and a matmul rate to set them against.

Counted: the multiply-adds of every Conv2D and Dense (2 FLOPs each), layers inside nested models included; BN,
ReLU, pooling and the loss are left out (a few percent of a ResNet's). A train step costs about 3 forward passes
(the backward pass computes the gradients of the activations and of the weights, each about one forward pass).
"""

import time

import keras
import numpy as np


def _layers(model):
    for layer in model.layers:
        if isinstance(layer, keras.Model):  # a nested Functional or Sequential model
            yield from _layers(layer)
        else:
            yield layer


def forward_flops(model):
    """FLOPs of one example's forward pass through `model` (built), from its Conv2D and Dense layers."""
    total = 0
    for layer in _layers(model):
        if isinstance(layer, keras.layers.Conv2D):
            kh, kw, cin_per_group, cout = layer.kernel.shape
            out_h, out_w = layer.output.shape[1:3]
            total += 2 * out_h * out_w * kh * kw * cin_per_group * cout
        elif isinstance(layer, keras.layers.Dense):
            fan_in, units = layer.kernel.shape
            total += 2 * fan_in * units
    return int(total)


def simsiam_step_flops(model):
    """FLOPs of one pair's SimSiam train step: both views through f (backbone + projector) and h, times 3."""
    return 3 * 2 * (forward_flops(model.backbone) + forward_flops(model.projector) + forward_flops(model.predictor))


def matmul_flops_per_sec(n=4096, dtype="float32", repeats=3):
    """TensorFlow's n x n matmul rate on this machine (the best of `repeats` after a warm-up)."""
    import tensorflow as tf
    rng = np.random.default_rng(0)
    a = tf.constant(rng.random((n, n), dtype=np.float32), dtype=dtype)
    b = tf.constant(rng.random((n, n), dtype=np.float32), dtype=dtype)
    matmul = tf.function(lambda x, y: tf.reduce_sum(tf.cast(tf.matmul(x, y)[:1, :1], tf.float32)))
    float(matmul(a, b))
    best = min(_timed(lambda: float(matmul(a, b))) for _ in range(repeats))
    return 2 * n ** 3 / best


def _timed(fn):
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start
