"""SimCLR (Chen et al., 2020) as a keras.Model sharing SimSiam's trainer (tf_simsiam.models.two_views).

    for x in loader:                     # a global batch of N images
        x1, x2 = aug(x), aug(x)          # two views, stacked as one (B, 2, H, W, C) tensor
        z1, z2 = g(f([x1; x2]))          # projections of the 2N views in one batch, BN over all 2N (as
                                         # google-research/simclr); no predictor, no stop-gradient
        L = NT-Xent(z1, z2, t)           # each view against its positive and the 2N - 2 other views
        L.backward(); update(f, g)       # LARS in the paper

Under a distribution strategy the negatives are gathered from every replica (losses.cross_replica_concat), so the
loss and the update of a global batch do not depend on how it is split.
"""

import keras
import tensorflow as tf

from tf_simsiam import losses
from tf_simsiam.models import heads
from tf_simsiam.models.two_views import TwoViewModel


@keras.saving.register_keras_serializable(package="tf_simsiam")
class SimCLR(TwoViewModel):
    """SimCLR: backbone f and projection head g trained with NT-Xent.

    Args:
      backbone: a keras.Model mapping images (H, W, C) in [0, 1] to pooled features (D,).
      proj_dim: output width of the projection head (128 in the paper).
      proj_layers: layers of the head (2 in SimCLR v1, 3 in v2); hidden width = the backbone's feature width.
      temperature: the NT-Xent temperature (0.1 for ImageNet at large batches, 0.5 for CIFAR-10).
      sync_bn: synchronized BN in the head (the backbone gets its own `sync_bn` argument).
      augment: an optional tf_simsiam.data.augment.TwoViews layer, for views made on the device.
    """

    extra_metrics = ("contrastive_accuracy",)

    def __init__(self, backbone, proj_dim=128, proj_layers=2, temperature=0.5, sync_bn="auto", augment=None,
                 name="simclr", **kwargs):
        super().__init__(backbone, augment=augment, name=name, **kwargs)
        if not temperature > 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        self.projector = heads.simclr_projector(backbone.output_shape[-1], proj_dim, proj_layers, sync_bn=sync_bn)
        self.temperature = float(temperature)
        self._config = dict(proj_dim=proj_dim, proj_layers=proj_layers, temperature=self.temperature,
                            sync_bn=sync_bn)
        self.build(backbone.input_shape)

    def build(self, input_shape):
        self.projector.build((None, self.backbone.output_shape[-1]))
        self.built = True

    def forward(self, x1, x2, training=True):
        """z1, z2: the projections of the two views, computed as one batch (BN statistics over both views)."""
        z = self.projector(self.backbone(tf.concat([x1, x2], 0), training=training), training=training)
        z1, z2 = tf.split(z, 2)
        return z1, z2

    def objective(self, x1, x2, training=True):
        z1, z2 = self.forward(x1, x2, training=training)
        logits, positive = losses.nt_xent_logits(z1, z2, self.temperature)
        loss = tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(positive, logits))
        # contrastive accuracy: the positive scores highest among the 2N - 1 candidates
        accuracy = tf.reduce_mean(tf.cast(tf.equal(tf.argmax(logits, axis=1, output_type=tf.int32), positive),
                                          tf.float32))
        return loss, z1, {"contrastive_accuracy": accuracy}
