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
"""

import keras
import tensorflow as tf

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
        if not self._can_fuse(inputs, mask):
            return super().call(inputs, training=training, mask=mask)
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
        axes = [i for i in range(len(x.shape)) if i != self.axis % len(x.shape)]
        count = tf.cast(tf.reduce_prod(tf.gather(tf.shape(x), axes)), tf.float32)
        local = tf.concat([tf.reduce_sum(x, axes), tf.reduce_sum(tf.square(x), axes), count[None]], 0)
        context = tf.distribute.get_replica_context()
        if context is not None and context.num_replicas_in_sync > 1:
            local = context.all_reduce(tf.distribute.ReduceOp.SUM, local)
        channels = x.shape[self.axis]
        total, squares, n = local[:channels], local[channels:2 * channels], local[-1]
        mean = total / n
        variance = tf.maximum(squares / n - tf.square(mean), 0.0)
        shape = [1] * len(x.shape)
        shape[self.axis] = channels
        gamma = tf.reshape(self.gamma.value, shape) if self.scale else None
        beta = tf.reshape(self.beta.value, shape) if self.center else None
        y = tf.nn.batch_normalization(x, tf.reshape(mean, shape), tf.reshape(variance, shape), beta, gamma,
                                      max(self.epsilon, FUSED_MIN_EPSILON))
        unbiased = variance * n / tf.maximum(n - 1.0, 1.0)
        self.moving_mean.assign(self.moving_mean * self.momentum + mean * (1.0 - self.momentum))
        self.moving_variance.assign(self.moving_variance * self.momentum + unbiased * (1.0 - self.momentum))
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
