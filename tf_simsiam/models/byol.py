"""BYOL (Grill et al., 2020) as a keras.Model sharing SimSiam's trainer (tf_simsiam.models.two_views).

    for x in loader:                           # a global batch of N images
        v1, v2 = aug(x), aug(x)                # two views
        p1, p2 = q(g(f(v1))), q(g(f(v2)))      # online: backbone f, projector g, predictor q
        t1, t2 = g'(f'(v1)), g'(f'(v2))        # target: f', g', no predictor, no gradient
        L = (2 - 2 cos(p1, t2)) + (2 - 2 cos(p2, t1))
        L.backward(); update(f, g, q)          # LARS in the paper
        tau = 1 - (1 - tau_base) (cos(pi k / K) + 1) / 2          # from tau_base (0.996) to 1 over the K steps
        f', g' = tau f' + (1 - tau) f, tau g' + (1 - tau) g       # after each update

SimSiam is BYOL without the moving average (tau = 0): its paper's point. The target starts as a copy of the online
network; its BN takes the statistics of each view, as the online one's. Only the online backbone is exported.
"""

import math

import keras
import tensorflow as tf

from tf_simsiam import losses
from tf_simsiam.models import heads
from tf_simsiam.models.two_views import TwoViewModel, momentum_copy, momentum_pairs, momentum_update


def tau_schedule(step, total_steps, tau_base=0.996):
    """BYOL's target decay at `step` of `total_steps`: tau_base at step 0, rising as a cosine to 1 at the end;
    tau_base throughout without a total."""
    if not total_steps:
        return tf.constant(tau_base, tf.float32)
    progress = tf.minimum(tf.cast(step, tf.float32) / float(total_steps), 1.0)
    return 1.0 - (1.0 - tau_base) * (tf.cos(math.pi * progress) + 1.0) / 2.0


@keras.saving.register_keras_serializable(package="tf_simsiam")
class BYOL(TwoViewModel):
    """BYOL: an online network (backbone f, projector g, predictor q) predicting a target network (f', g'), the
    target a moving average of the online one.

    Args:
      backbone: a keras.Model mapping images (H, W, C) in [0, 1] to pooled features (D,); the target's backbone
        is a clone of it.
      proj_dim: the output of the projector and predictor (256 in the paper).
      hidden_dim: their hidden width (4096 in the paper).
      tau_base: the target decay at the first step (0.996 in the paper).
      total_steps: the steps of the run, over which tau rises to 1; None keeps tau at tau_base.
      sync_bn: synchronized BN in the heads (the backbone gets its own `sync_bn` argument).
      augment: an optional tf_simsiam.data.augment.TwoViews layer, for views made on the device.
    """

    extra_metrics = ("tau",)

    def __init__(self, backbone, proj_dim=256, hidden_dim=4096, tau_base=0.996, total_steps=None, sync_bn="auto",
                 augment=None, name="byol", **kwargs):
        super().__init__(backbone, augment=augment, name=name, **kwargs)
        if not 0 <= tau_base <= 1:
            raise ValueError(f"tau_base must be in [0, 1], got {tau_base}")
        if total_steps is not None and total_steps < 0:
            raise ValueError(f"total_steps must be >= 0, got {total_steps}")
        self.projector = heads.byol_mlp(hidden_dim, proj_dim, sync_bn=sync_bn, name="projector")
        self.predictor = heads.byol_mlp(hidden_dim, proj_dim, sync_bn=sync_bn, name="predictor")
        self.target_backbone = keras.models.clone_model(backbone)
        self.target_projector = heads.byol_mlp(hidden_dim, proj_dim, sync_bn=sync_bn, name="target_projector")
        self.tau_base, self.total_steps = float(tau_base), total_steps
        self._config = dict(proj_dim=proj_dim, hidden_dim=hidden_dim, tau_base=self.tau_base,
                            total_steps=total_steps, sync_bn=sync_bn)
        self.build(backbone.input_shape)
        self.restart_momentum_networks()

    def build(self, input_shape):
        features = self.backbone.output_shape[-1]
        self.projector.build((None, features))
        self.predictor.build((None, self._config["proj_dim"]))
        self.target_projector.build((None, features))
        self.built = True

    def restart_momentum_networks(self):
        momentum_copy([self.target_backbone, self.target_projector], [self.backbone, self.projector])

    def target_pairs(self, statistics=False):
        """(target variable, online variable) of the backbones and projectors (two_views.momentum_pairs)."""
        return momentum_pairs([self.target_backbone, self.target_projector], [self.backbone, self.projector],
                              statistics)

    def objective(self, x1, x2, training=True):
        z1, z2 = self.embed_per_view(x1, x2, [self.backbone, self.projector], training=training)
        p1, p2 = self.predictor(z1, training=training), self.predictor(z2, training=training)
        t1, t2 = self.embed_per_view(x1, x2, [self.target_backbone, self.target_projector], training=training)
        step = self.optimizer.iterations if getattr(self, "optimizer", None) is not None else 0
        tau = tau_schedule(step, self.total_steps, self.tau_base)  # this step's
        return losses.byol_loss(p1, p2, t1, t2), z1, {"tau": tau}

    def after_update(self):
        """The target's moving average at the step just taken: target = tau * target + (1 - tau) * online."""
        momentum_update(self.target_pairs(), tau_schedule(self.optimizer.iterations - 1, self.total_steps,
                                                          self.tau_base))
