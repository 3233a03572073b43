"""BatchNormalization for tf_simsiam: PyTorch's defaults, TF's fused kernel, synchronized on request.

Keras 3's BatchNormalization computes its moments and the normalisation as separate ops in float32; TF's fused
kernel (FusedBatchNormV3, oneDNN on CPU, cuDNN on GPU) does the same in one op and keeps bfloat16 activations,
which makes the whole SimSiam step markedly faster (see benchmarks/train_step.py). The fused kernel is used for
per-replica BN on 2-D and 4-D inputs.

Synchronized BN (`synchronized=True`, the paper's SyncBN; `sync_bn="auto"`, the default of every model and
backbone, turns it on for layers built under a distribution strategy with several replicas): in training, each replica's per-channel sums
of x and x^2 and its count are all-reduced (one collective per layer), so every replica normalises with the
moments of the global batch, exactly as one device would on that batch.

Like PyTorch's BatchNorm, the running variance is updated with the unbiased batch variance, on both paths.

Views in one batch (`with views_in_batch(2):`): a method that runs its two views through the network as one
batch of 2B (one pass: one set of kernels, one SyncBN all-reduce per layer instead of two) still takes BN
statistics per view, as two passes do (SimSiam's official code): in training each layer normalises each of the
batch's 2 equal parts with that part's moments (synchronized per part under SyncBN) and updates its moving
statistics once per part, in order, exactly as two successive passes would.
"""

import contextlib
import threading

import keras
import tensorflow as tf

_views = threading.local()


@contextlib.contextmanager
def views_in_batch(count):
    """Inside the block, BN in training takes its statistics per each of `count` equal parts of the batch."""
    before = getattr(_views, "count", 1)
    _views.count = int(count)
    try:
        yield
    finally:
        _views.count = before


def _parts():
    return getattr(_views, "count", 1)

FUSED_MIN_EPSILON = 1.001e-5  # the fused kernel's floor (cuDNN's); PyTorch's default 1e-5 is raised to it


@keras.saving.register_keras_serializable(package="tf_simsiam")
class BatchNormalization(keras.layers.BatchNormalization):
    """keras.layers.BatchNormalization computed with the fused kernel where it can be."""

    def _can_fuse(self, inputs, mask):
        rank = len(inputs.shape)
        return (not self.synchronized and mask is None and not self.renorm and rank in (2, 4)
                and self.axis in (-1, rank - 1))

    def call(self, inputs, training=None, mask=None):
        if self.synchronized and training and self.trainable and mask is None and not self.renorm:
            return self._synchronized_call(inputs)
        if training and self.trainable and _parts() > 1:
            if not self._can_fuse(inputs, mask):
                raise ValueError(f"{self.name}: statistics per view need a 2-D or 4-D input with channels last, "
                                 f"no mask and no renorm")
            return tf.concat([self._fused_call(part, training) for part in tf.split(inputs, _parts())], 0)
        if not self._can_fuse(inputs, mask):
            return super().call(inputs, training=training, mask=mask)
        return self._fused_call(inputs, training)

    def _fused_call(self, inputs, training):
        channels = inputs.shape[-1]
        x = inputs if len(inputs.shape) == 4 else tf.reshape(inputs, [-1, 1, 1, channels])
        if x.dtype not in (tf.float32, tf.bfloat16, tf.float16):
            x = tf.cast(x, tf.float32)
        gamma = self.gamma.value if self.scale else tf.ones([channels], tf.float32)
        beta = self.beta.value if self.center else tf.zeros([channels], tf.float32)
        epsilon = max(self.epsilon, FUSED_MIN_EPSILON)
        if training and self.trainable:
            y, mean, variance = tf.compat.v1.nn.fused_batch_norm(
                x, gamma, beta, epsilon=epsilon, data_format="NHWC", is_training=True)
            self.moving_mean.assign(self.moving_mean * self.momentum + mean * (1.0 - self.momentum))
            self.moving_variance.assign(
                self.moving_variance * self.momentum + variance * (1.0 - self.momentum))
        else:
            y, _, _ = tf.compat.v1.nn.fused_batch_norm(
                x, gamma, beta, mean=self.moving_mean.value, variance=self.moving_variance.value,
                epsilon=epsilon, data_format="NHWC", is_training=False)
        if len(inputs.shape) == 2:
            y = tf.reshape(y, [-1, channels])
        return tf.cast(y, self.compute_dtype)


    def _synchronized_call(self, inputs):
        x = tf.cast(inputs, tf.float32)
        rank = len(x.shape)
        axes = [i for i in range(rank) if i != self.axis % rank]
        parts = tf.split(x, _parts()) if _parts() > 1 else [x]
        local = tf.concat([tf.concat([tf.reduce_sum(p, axes), tf.reduce_sum(tf.square(p), axes),
                                      tf.cast(tf.reduce_prod(tf.gather(tf.shape(p), axes)), tf.float32)[None]], 0)
                           for p in parts], 0)
        context = tf.distribute.get_replica_context()
        if context is not None and context.num_replicas_in_sync > 1:
            local = context.all_reduce(tf.distribute.ReduceOp.SUM, local)  # one collective for all the parts
        channels = x.shape[self.axis]
        shape = [1] * rank
        shape[self.axis] = channels
        gamma = tf.reshape(self.gamma.value, shape) if self.scale else None
        beta = tf.reshape(self.beta.value, shape) if self.center else None
        outputs = []
        for i, part in enumerate(parts):
            sums = local[i * (2 * channels + 1):(i + 1) * (2 * channels + 1)]
            total, squares, n = sums[:channels], sums[channels:2 * channels], sums[-1]
            mean = total / n
            variance = tf.maximum(squares / n - tf.square(mean), 0.0)
            outputs.append(tf.nn.batch_normalization(part, tf.reshape(mean, shape), tf.reshape(variance, shape),
                                                     beta, gamma, max(self.epsilon, FUSED_MIN_EPSILON)))
            unbiased = variance * n / tf.maximum(n - 1.0, 1.0)
            self.moving_mean.assign(self.moving_mean * self.momentum + mean * (1.0 - self.momentum))
            self.moving_variance.assign(self.moving_variance * self.momentum + unbiased * (1.0 - self.momentum))
        y = outputs[0] if len(outputs) == 1 else tf.concat(outputs, 0)
        return tf.cast(y, self.compute_dtype)


def resolve_sync_bn(sync_bn):
    """Whether BN is synchronized: True or False as given; "auto" when built under a distribution strategy with
    several replicas (the paper's SyncBN wherever there is more than one)."""
    if sync_bn == "auto":
        return tf.distribute.has_strategy() and tf.distribute.get_strategy().num_replicas_in_sync > 1
    if not isinstance(sync_bn, bool):
        raise ValueError(f"sync_bn must be True, False or 'auto', got {sync_bn!r}")
    return sync_bn


def batch_norm(sync_bn="auto", affine=True, zero_init=False, center=None, name=None):
    """BN with PyTorch's defaults (its momentum 0.1 is 0.9 here, eps 1e-5); zero_init sets gamma to 0;
    center=False drops beta alone (SimCLR's last head layer); sync_bn as resolve_sync_bn."""
    return BatchNormalization(
        momentum=0.9, epsilon=1e-5, center=affine if center is None else center, scale=affine,
        synchronized=resolve_sync_bn(sync_bn),
        gamma_initializer="zeros" if zero_init else "ones", name=name)
