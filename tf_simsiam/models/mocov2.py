"""MoCo v2 (Chen, Fan, Girshick and He, 2020) as a keras.Model sharing SimSiam's trainer (tf_simsiam.models.two_views).

    for x in loader:                            # a global batch of N images
        v1, v2 = aug(x), aug(x)                 # two views (MoCo v2's augmentations: SimSiam's ImageNet recipe)
        q1, q2 = g(f(v1)), g(f(v2))             # queries: backbone f, MLP head g
        k1, k2 = g'(f'(v1)), g'(f'(v2))         # keys: the momentum encoder f', g', no gradient
        L = (InfoNCE(q1, k2, queue) + InfoNCE(q2, k1, queue)) / 2    # symmetrised, as SimSiam's Table 4
        L.backward(); update(f, g)              # SGD in the paper
        f', g' = m f' + (1 - m) f, m g' + (1 - m) g                  # m = 0.999
        enqueue(k1, k2); dequeue the oldest     # a queue of K = 65,536 keys, k1 of all replicas then k2

InfoNCE(q, k, queue) = -log exp(q.k / t) / (exp(q.k / t) + sum over the queue exp(q.n / t)), t = 0.2. Under a
strategy the keys of every replica are enqueued (losses.cross_replica_concat), so each replica's queue is the same.
Asymmetric (`symmetric=False`): MoCo's own loss, InfoNCE(q1, k2, queue), and k2 enqueued. Only the backbone f is
exported.
"""

import keras
import numpy as np
import tensorflow as tf

from tf_simsiam import losses
from tf_simsiam.models import heads
from tf_simsiam.models.two_views import TwoViewModel, momentum_copy, momentum_pairs, momentum_update


@keras.saving.register_keras_serializable(package="tf_simsiam")
class MoCoV2(TwoViewModel):
    """MoCo v2: a query encoder (backbone f, MLP head g) trained with InfoNCE against keys from a momentum encoder
    (f', g') and a queue of the keys of earlier batches.

    Args:
      backbone: a keras.Model mapping images (H, W, C) in [0, 1] to pooled features (D,); the key encoder's
        backbone is a clone of it.
      proj_dim: the head's output (128 in the paper); its hidden width is the backbone's feature width.
      queue_size: K, the keys kept as negatives (65,536 in the paper); at least the keys of one step.
      momentum: m of the key encoder's moving average (0.999 in the paper).
      temperature: t of InfoNCE (0.2 in MoCo v2).
      symmetric: both views as queries (SimSiam's Table 4 symmetrises MoCo v2), or MoCo's one direction.
      seed: of the queue's random initial keys.
      augment: an optional tf_simsiam.data.augment.TwoViews layer, for views made on the device.
    """

    extra_metrics = ("contrastive_accuracy",)

    def __init__(self, backbone, proj_dim=128, queue_size=65536, momentum=0.999, temperature=0.2, symmetric=True,
                 seed=0, augment=None, name="mocov2", **kwargs):
        super().__init__(backbone, augment=augment, name=name, **kwargs)
        if not 0 <= momentum <= 1:
            raise ValueError(f"momentum must be in [0, 1], got {momentum}")
        if not temperature > 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        if queue_size <= 0:
            raise ValueError(f"queue_size must be positive, got {queue_size}")
        features = backbone.output_shape[-1]
        self.projector = heads.mocov2_head(features, proj_dim, name="projector")
        self.key_backbone = keras.models.clone_model(backbone)
        self.key_projector = heads.mocov2_head(features, proj_dim, name="key_projector")
        self.momentum, self.temperature, self.symmetric = float(momentum), float(temperature), bool(symmetric)
        self._config = dict(proj_dim=proj_dim, queue_size=queue_size, momentum=self.momentum,
                            temperature=self.temperature, symmetric=self.symmetric, seed=seed)
        # the keys, oldest overwritten first; every replica's copy is written with the same gathered keys
        keys = np.random.default_rng(seed).normal(size=(queue_size, proj_dim))
        self.queue = self.add_weight(
            shape=(queue_size, proj_dim), dtype="float32", autocast=False, trainable=False, name="queue",
            initializer=keras.initializers.Constant(keys / np.linalg.norm(keys, axis=1, keepdims=True)),
            aggregation="only_first_replica")
        self.queue_pointer = self.add_weight(shape=(), dtype="int32", initializer="zeros", trainable=False,
                                             name="queue_pointer", aggregation="only_first_replica")
        self.build(backbone.input_shape)
        self.restart_momentum_networks()

    def build(self, input_shape):
        features = self.backbone.output_shape[-1]
        self.projector.build((None, features))
        self.key_projector.build((None, features))
        self.built = True

    def restart_momentum_networks(self):
        momentum_copy([self.key_backbone, self.key_projector], [self.backbone, self.projector])

    def key_pairs(self, statistics=False):
        """(key encoder variable, query encoder variable) of the backbones and heads (two_views.momentum_pairs)."""
        return momentum_pairs([self.key_backbone, self.key_projector], [self.backbone, self.projector], statistics)

    def enqueue(self, *keys):
        """Writes each of `keys` (a view's keys), l2-normalised and gathered from every replica in replica order,
        over the oldest entries of the queue, in order: the queue does not depend on how a batch is split."""
        keys = tf.concat([losses.cross_replica_concat(tf.math.l2_normalize(tf.cast(k, tf.float32), axis=-1))
                          for k in keys], 0)
        size = self.queue.shape[0]
        count = keys.shape[0]
        if count is not None and count > size:
            raise ValueError(f"a step's {count} keys do not fit in a queue of {size}: raise queue_size "
                             f"(--queue_size) to at least {count}")
        count = tf.shape(keys)[0]
        indices = (self.queue_pointer + tf.range(count)) % size
        self.queue.assign(tf.tensor_scatter_nd_update(self.queue, indices[:, None], keys))
        self.queue_pointer.assign((self.queue_pointer + count) % size)

    def objective(self, x1, x2, training=True):
        q1, q2 = self.embed_per_view(x1, x2, [self.backbone, self.projector], training=training)
        k1, k2 = self.embed_per_view(x1, x2, [self.key_backbone, self.key_projector], training=training)
        k1, k2 = tf.stop_gradient(k1), tf.stop_gradient(k2)
        queue = tf.convert_to_tensor(self.queue)  # read before this step's keys are enqueued
        loss, accuracy = losses.moco_loss(q1, k2, queue, self.temperature)
        if self.symmetric:
            loss2, accuracy2 = losses.moco_loss(q2, k1, queue, self.temperature)
            loss, accuracy = (loss + loss2) / 2, (accuracy + accuracy2) / 2
        if training:
            with tf.control_dependencies([loss]):
                self.enqueue(*((k1, k2) if self.symmetric else (k2,)))
        return loss, q1, {"contrastive_accuracy": accuracy}

    def after_update(self):
        """The key encoder's moving average: key = m * key + (1 - m) * query, after each update."""
        momentum_update(self.key_pairs(), self.momentum)
