"""Barlow Twins (Zbontar et al., 2021) as a keras.Model sharing SimSiam's trainer (tf_simsiam.models.two_views).

    for x in loader:                     # a global batch of N images
        y1, y2 = aug(x), aug(x)          # two views
        z1, z2 = g(f(y1)), g(f(y2))      # projector g: 3 x 8192, BN per view
        c = bn(z1).T @ bn(z2) / N        # D x D cross-correlation over the global batch
        L = sum (1 - c_ii)^2 + lambda * sum_{i != j} c_ij^2     (lambda = 5e-3)
        L.backward(); update(f, g)       # LARS in the paper

Both branches share their weights and both get gradients: no stop-gradient, no predictor, no negatives.
"""

import keras

from tf_simsiam import losses
from tf_simsiam.models import heads
from tf_simsiam.models.two_views import TwoViewModel


@keras.saving.register_keras_serializable(package="tf_simsiam")
class BarlowTwins(TwoViewModel):
    """Barlow Twins: backbone f and projector g trained to make the views' cross-correlation the identity.

    Args:
      backbone: a keras.Model mapping images (H, W, C) in [0, 1] to pooled features (D,).
      proj_dim: the projector's width and output dimension (8192 in the paper).
      proj_layers: the projector's layers (3 in the paper).
      lambd: the weight of the off-diagonal (redundancy reduction) term (5e-3 in the paper).
      sync_bn: synchronized BN in the projector (the backbone gets its own `sync_bn` argument).
      augment: an optional tf_simsiam.data.augment.TwoViews layer, for views made on the device.
    """

    extra_metrics = ("on_diagonal", "off_diagonal")

    def __init__(self, backbone, proj_dim=8192, proj_layers=3, lambd=5e-3, sync_bn="auto", augment=None,
                 name="barlow_twins", **kwargs):
        super().__init__(backbone, augment=augment, name=name, **kwargs)
        if not lambd >= 0:
            raise ValueError(f"lambd must be >= 0, got {lambd}")
        self.projector = heads.mlp_projector(proj_dim, proj_layers, sync_bn=sync_bn)
        self.lambd = float(lambd)
        self._config = dict(proj_dim=proj_dim, proj_layers=proj_layers, lambd=self.lambd, sync_bn=sync_bn)
        self.build(backbone.input_shape)

    def build(self, input_shape):
        self.projector.build((None, self.backbone.output_shape[-1]))
        self.built = True

    def objective(self, x1, x2, training=True):
        z1, z2 = self.embed_per_view(x1, x2, [self.backbone, self.projector], training=training)
        loss, on_diagonal, off_diagonal = losses.barlow_twins_loss(z1, z2, self.lambd)
        return loss, z1, {"on_diagonal": on_diagonal, "off_diagonal": off_diagonal}
