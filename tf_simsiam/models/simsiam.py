"""SimSiam (Chen & He, 2020) as a keras.Model whose train_step is the paper's Algorithm 1.

    for x in loader:
        x1, x2 = aug(x), aug(x)          # two views, stacked as one (B, 2, H, W, C) tensor
        z1, z2 = g(f(x1)), g(f(x2))      # projections: both views in one batch, BN statistics per view
        p1, p2 = h(z1), h(z2)            # predictions
        L = D(p1, sg(z2))/2 + D(p2, sg(z1))/2
        L.backward(); update(f, g, h)
"""

import keras
import tensorflow as tf

from tf_simsiam import losses, optim
from tf_simsiam.models import heads
from tf_simsiam.models.batch_norm import views_in_batch
from tf_simsiam.models.two_views import TwoViewModel, frozen, statistics_per_view_in_one_pass


PREDICTORS = ("mlp", "none", "fixed_random")  # the paper's h, no h (p = z), a fixed random h (Table 1)


@keras.saving.register_keras_serializable(package="tf_simsiam")
class SimSiam(TwoViewModel):
    """SimSiam: backbone f, projector g, predictor h, trained with the symmetric stop-gradient loss.

    Args:
      backbone: a keras.Model mapping images (H, W, C) in [0, 1] to pooled features (D,).
      proj_dim: output and hidden width of the projector (2048 in the paper).
      pred_dim: bottleneck width of the predictor (512 in the paper).
      proj_layers: layers of the projector: 3 for the ImageNet recipe, 2 for CIFAR.
      stop_gradient: the paper's sg on the target branch (False collapses, Fig. 2).
      predictor: "mlp" (the paper), "none" (p = z, Table 1) or "fixed_random" (an untrained random MLP).
      symmetric: the symmetrised loss (False: D(p1, sg(z2)) only, Table 5).
      similarity: D as "cosine" (the paper) or "cross_entropy" (Table 4).
      fix_predictor_lr: keep the predictor at the initial learning rate while the rest follows the schedule
        (needs an optimizer from tf_simsiam.optim when the learning rate is a schedule; works under a
        LossScaleOptimizer and any keras LearningRateSchedule, see optim.fixed_learning_rate).
      predictor_lr: the predictor's fixed learning rate; None: the schedule's initial (peak) one.
      proj_bn: where the projector has BN: "all" (hidden layers and output), "hidden" or "none" (Table 3).
      pred_bn: where the predictor has BN: "hidden" (the paper), "all" or "none" (Table 3).
      proj_bn_affine: a learned scale and shift in the projector's output BN (PyTorch's default; the official
        code has none, so z keeps zero mean per channel and cannot become one constant vector).
      pred_bn_affine: with pred_bn="all", a learned scale and shift in the predictor's output BN (PyTorch's default).
      sync_bn: synchronized BN in the heads (the backbone gets its own `sync_bn` argument); "auto": when the
        model is built under a distribution strategy with several replicas.
      augment: an optional tf_simsiam.data.augment.TwoViews layer; batches of images (B, H, W, C) are then
        turned into two views inside the train step, on the accelerator (`--augment_on=device`).
    """

    def __init__(self, backbone, proj_dim=2048, pred_dim=512, proj_layers=3, stop_gradient=True,
                 predictor="mlp", symmetric=True, fix_predictor_lr=True, proj_bn="all", pred_bn="hidden",
                 sync_bn="auto", augment=None, similarity="cosine", proj_bn_affine=False, pred_bn_affine=False,
                 predictor_lr=None, name="simsiam", **kwargs):
        super().__init__(backbone, augment=augment, name=name, **kwargs)
        if predictor not in PREDICTORS:
            raise ValueError(f"predictor must be one of {PREDICTORS}, got {predictor!r}")
        self.projector = heads.projector(proj_dim, proj_layers, bn=proj_bn, sync_bn=sync_bn,
                                         affine_output=proj_bn_affine)
        self.predictor = None
        if predictor != "none":
            self.predictor = heads.predictor(proj_dim, pred_dim, bn=pred_bn, sync_bn=sync_bn,
                                             affine_output=pred_bn_affine)
        self.stop_gradient = bool(stop_gradient)
        self.symmetric = bool(symmetric)
        if similarity not in losses.SIMILARITIES:
            raise ValueError(f"similarity must be one of {sorted(losses.SIMILARITIES)}, got {similarity!r}")
        self.similarity = similarity
        self.fix_predictor_lr = bool(fix_predictor_lr)
        if predictor_lr is not None and not predictor_lr > 0:
            raise ValueError(f"predictor_lr must be > 0, got {predictor_lr}")
        self.predictor_lr = None if predictor_lr is None else float(predictor_lr)
        self._config = dict(proj_dim=proj_dim, pred_dim=pred_dim, proj_layers=proj_layers,
                            stop_gradient=self.stop_gradient, predictor=predictor, symmetric=self.symmetric,
                            fix_predictor_lr=self.fix_predictor_lr, proj_bn=proj_bn, pred_bn=pred_bn,
                            sync_bn=sync_bn, similarity=similarity, proj_bn_affine=bool(proj_bn_affine),
                            pred_bn_affine=bool(pred_bn_affine), predictor_lr=self.predictor_lr)
        self.build(backbone.input_shape)
        # one pass for both views where every BN can take its statistics per view; else two passes
        self.one_pass = statistics_per_view_in_one_pass(self.backbone, self.projector,
                                                        *([self.predictor] if self.predictor else []))
        if predictor == "fixed_random":
            # The paper's fixed random h keeps its initial weights, while its BN still normalises with the
            # batch's statistics in training.
            frozen(self.predictor)

    def build(self, input_shape):
        features = self.backbone.output_shape[-1]
        self.projector.build((None, features))
        if self.predictor is not None:
            self.predictor.build((None, self._config["proj_dim"]))
        self.built = True

    def compile(self, optimizer="sgd", **kwargs):
        super().compile(optimizer=optimizer, **kwargs)
        if self.fix_predictor_lr and self.predictor is not None:
            optim.fix_learning_rate(self.optimizer, self.predictor.trainable_variables, self.predictor_lr)

    def forward(self, x1, x2, training=True):
        """The paper's forward pass: returns p1, p2, z1, z2 (p = z when there is no predictor).

        Both views go through the network as one batch of 2B, BN taking its statistics per view: the same loss,
        gradients and BN statistics as two passes, with one set of kernels (one SyncBN all-reduce per layer).
        """
        if self.one_pass:
            with views_in_batch(2):
                z = self.projector(self.backbone(tf.concat([x1, x2], 0), training=training), training=training)
                p = z if self.predictor is None else self.predictor(z, training=training)
            (p1, p2), (z1, z2) = tf.split(p, 2), tf.split(z, 2)
            return p1, p2, z1, z2
        z1 = self.projector(self.backbone(x1, training=training), training=training)
        z2 = self.projector(self.backbone(x2, training=training), training=training)
        if self.predictor is None:
            return z1, z2, z1, z2
        p1 = self.predictor(z1, training=training)
        p2 = self.predictor(z2, training=training)
        return p1, p2, z1, z2

    def objective(self, x1, x2, training=True):
        p1, p2, z1, z2 = self.forward(x1, x2, training=training)
        loss = losses.simsiam_loss(p1, p2, z1, z2, stop_gradient=self.stop_gradient, symmetric=self.symmetric,
                                   similarity=self.similarity)
        return loss, z1, {}
