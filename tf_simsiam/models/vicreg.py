"""VICReg (Bardes et al., 2022) as a keras.Model sharing SimSiam's trainer (tf_simsiam.models.two_views).

    for x in loader:                     # a global batch of N images
        x1, x2 = aug(x), aug(x)          # two views
        z1, z2 = h(f(x1)), h(f(x2))      # expander h: 3 x 8192, BN per view
        L = 25 * invariance(z1, z2)      # mean squared distance of the pairs
          + 25 * (variance(z1) + variance(z2))      # hinge on each dimension's std, over the global batch
          + 1 * (covariance(z1) + covariance(z2))   # squared off-diagonal covariances / D, global batch
        L.backward(); update(f, h)       # LARS in the paper

Both branches share their weights and both get gradients: no stop-gradient, no predictor, no negatives.
"""

import keras

from tf_simsiam import losses
from tf_simsiam.models import heads
from tf_simsiam.models.two_views import TwoViewModel


@keras.saving.register_keras_serializable(package="tf_simsiam")
class VICReg(TwoViewModel):
    """VICReg: backbone f and expander h trained with the invariance, variance and covariance terms.

    Args:
      backbone: a keras.Model mapping images (H, W, C) in [0, 1] to pooled features (D,).
      proj_dim: the expander's width and output dimension (8192 in the paper).
      proj_layers: the expander's layers (3 in the paper).
      sim_coeff: the weight of the invariance term (the paper's lambda: 25).
      std_coeff: the weight of the variance term (mu: 25).
      cov_coeff: the weight of the covariance term (nu: 1).
      sync_bn: synchronized BN in the expander (the backbone gets its own `sync_bn` argument).
      augment: an optional tf_simsiam.data.augment.TwoViews layer, for views made on the device.
    """

    extra_metrics = ("invariance", "variance", "covariance")

    def __init__(self, backbone, proj_dim=8192, proj_layers=3, sim_coeff=25.0, std_coeff=25.0, cov_coeff=1.0,
                 sync_bn="auto", augment=None, name="vicreg", **kwargs):
        super().__init__(backbone, augment=augment, name=name, **kwargs)
        for coeff, value in (("sim_coeff", sim_coeff), ("std_coeff", std_coeff), ("cov_coeff", cov_coeff)):
            if not value >= 0:
                raise ValueError(f"{coeff} must be >= 0, got {value}")
        self.projector = heads.mlp_projector(proj_dim, proj_layers, sync_bn=sync_bn)
        self.coeffs = (float(sim_coeff), float(std_coeff), float(cov_coeff))
        self._config = dict(proj_dim=proj_dim, proj_layers=proj_layers, sim_coeff=self.coeffs[0],
                            std_coeff=self.coeffs[1], cov_coeff=self.coeffs[2], sync_bn=sync_bn)
        self.build(backbone.input_shape)

    def build(self, input_shape):
        self.projector.build((None, self.backbone.output_shape[-1]))
        self.built = True

    def objective(self, x1, x2, training=True):
        z1, z2 = self.embed_per_view(x1, x2, [self.backbone, self.projector], training=training)
        loss, invariance, variance, covariance = losses.vicreg_loss(z1, z2, *self.coeffs)
        return loss, z1, {"invariance": invariance, "variance": variance, "covariance": covariance}
