"""SimSiam (Chen & He, 2020) as a keras.Model whose train_step is the paper's Algorithm 1.

    for x in loader:
        x1, x2 = aug(x), aug(x)          # two views, stacked as one (B, 2, H, W, C) tensor
        z1, z2 = g(f(x1)), g(f(x2))      # projections, one forward pass per view (BN statistics per view)
        p1, p2 = h(z1), h(z2)            # predictions
        L = D(p1, sg(z2))/2 + D(p2, sg(z1))/2
        L.backward(); update(f, g, h)
"""

import keras
import tensorflow as tf

from tf_simsiam import distribute, losses
from tf_simsiam.models import heads


def split_views(data):
    """(x1, x2) from a batch of stacked views (B, 2, H, W, C), or from a (x1, x2) pair."""
    if isinstance(data, (tuple, list)):
        if len(data) == 1:  # keras may wrap a lone tensor as (x,)
            return split_views(data[0])
        if len(data) != 2:
            raise ValueError(f"expected a batch of stacked views (B, 2, H, W, C) or a pair (x1, x2); "
                             f"got a tuple of {len(data)} elements")
        return data[0], data[1]
    shape = data.shape
    if shape.rank != 5 or shape[1] != 2:
        raise ValueError(f"expected a batch of stacked views of shape (B, 2, H, W, C); got shape {tuple(shape)}")
    return data[:, 0], data[:, 1]


@keras.saving.register_keras_serializable(package="tf_simsiam")
class SimSiam(keras.Model):
    """SimSiam: backbone f, projector g, predictor h, trained with the symmetric stop-gradient loss.

    Args:
      backbone: a keras.Model mapping images (H, W, C) in [0, 1] to pooled features (D,).
      proj_dim: output and hidden width of the projector (2048 in the paper).
      pred_dim: bottleneck width of the predictor (512 in the paper).
      proj_layers: layers of the projector: 3 for the ImageNet recipe, 2 for CIFAR.
      stop_gradient: the paper's sg on the target branch (False collapses, Fig. 2).
      predictor: "mlp" (the paper), "none" (p = z, Table 1) or "fixed_random" (an untrained random MLP).
      symmetric: the symmetrised loss (False: D(p1, sg(z2)) only, Table 5).
      fix_predictor_lr: keep the predictor at the peak learning rate while the rest follows the schedule
        (needs an optimizer from tf_simsiam.optim when the learning rate is a schedule).
      proj_bn, pred_bn: where the heads have BN: "all", "hidden" or "none" (Table 3).
      sync_bn: synchronized BN in the heads (the backbone gets its own `sync_bn` argument).
      augment: an optional tf_simsiam.data.augment.TwoViews layer; batches of images (B, H, W, C) are then
        turned into two views inside the train step, on the accelerator (`--augment_on=device`).
    """

    def __init__(self, backbone, proj_dim=2048, pred_dim=512, proj_layers=3, stop_gradient=True,
                 predictor="mlp", symmetric=True, fix_predictor_lr=True, proj_bn="all", pred_bn="hidden",
                 sync_bn=False, augment=None, name="simsiam", **kwargs):
        super().__init__(name=name, **kwargs)
        if not isinstance(backbone, keras.Model) or len(backbone.output_shape) != 2:
            raise ValueError(f"backbone must be a keras.Model returning pooled features (batch, dim); "
                             f"got {type(backbone).__name__} with output shape "
                             f"{getattr(backbone, 'output_shape', None)}")
        if predictor not in ("mlp", "none", "fixed_random"):
            raise ValueError(f"predictor must be 'mlp', 'none' or 'fixed_random', got {predictor!r}")
        self.backbone = backbone
        self.augment = augment
        self.projector = heads.projector(proj_dim, proj_layers, bn=proj_bn, sync_bn=sync_bn)
        self.predictor = None
        if predictor != "none":
            self.predictor = heads.predictor(proj_dim, pred_dim, bn=pred_bn, sync_bn=sync_bn)
            self.predictor.trainable = predictor == "mlp"
        self.stop_gradient = bool(stop_gradient)
        self.symmetric = bool(symmetric)
        self.fix_predictor_lr = bool(fix_predictor_lr)
        self._config = dict(proj_dim=proj_dim, pred_dim=pred_dim, proj_layers=proj_layers,
                            stop_gradient=self.stop_gradient, predictor=predictor, symmetric=self.symmetric,
                            fix_predictor_lr=self.fix_predictor_lr, proj_bn=proj_bn, pred_bn=pred_bn,
                            sync_bn=sync_bn)
        self.loss_tracker = keras.metrics.Mean(name="loss")
        self.z_std_tracker = keras.metrics.Mean(name="z_std")
        self.build(backbone.input_shape)

    def build(self, input_shape):
        features = self.backbone.output_shape[-1]
        self.projector.build((None, features))
        if self.predictor is not None:
            self.predictor.build((None, self._config["proj_dim"]))
        self.built = True

    def call(self, images, training=False):
        """Backbone features of a batch of images (what a downstream task uses)."""
        return self.backbone(images, training=training)

    def compile(self, optimizer="sgd", **kwargs):
        super().compile(optimizer=optimizer, **kwargs)
        schedule = self.optimizer._learning_rate
        if self.fix_predictor_lr and self.predictor is not None and callable(schedule):
            if not hasattr(self.optimizer, "exclude_from_schedule"):
                raise TypeError(
                    f"fix_predictor_lr=True with a learning-rate schedule needs an optimizer from tf_simsiam.optim "
                    f"(SGD or LARS); got {type(self.optimizer).__name__}. Build one with "
                    f"tf_simsiam.optim.simsiam_optimizer(...), or pass fix_predictor_lr=False.")
            self.optimizer.exclude_from_schedule(self.predictor.trainable_variables)

    def compile_from_config(self, config):
        self.compile(**keras.saving.deserialize_keras_object(config))
        self.optimizer.build(self.trainable_variables)  # so that a saved optimizer state can be loaded into it

    @property
    def metrics(self):
        return [self.loss_tracker, self.z_std_tracker]

    def forward(self, x1, x2, training=True):
        """The paper's forward pass: returns p1, p2, z1, z2 (p = z when there is no predictor)."""
        z1 = self.projector(self.backbone(x1, training=training), training=training)
        z2 = self.projector(self.backbone(x2, training=training), training=training)
        if self.predictor is None:
            return z1, z2, z1, z2
        p1 = self.predictor(z1, training=training)
        p2 = self.predictor(z2, training=training)
        return p1, p2, z1, z2

    def train_step(self, data):
        if self.augment is not None and not isinstance(data, (tuple, list)) and data.shape.rank == 4:
            data = self.augment(data, step=self.optimizer.iterations)
        x1, x2 = split_views(data)
        with tf.GradientTape() as tape:
            p1, p2, z1, z2 = self.forward(x1, x2, training=True)
            loss = losses.simsiam_loss(p1, p2, z1, z2, stop_gradient=self.stop_gradient,
                                       symmetric=self.symmetric)
            # Gradients are summed over replicas: scale so that N replicas make the global-batch update.
            replica_loss = loss / tf.distribute.get_strategy().num_replicas_in_sync
            replica_loss = self.optimizer.scale_loss(replica_loss)
        learning_rate = self.optimizer.learning_rate
        gradients = tape.gradient(replica_loss, self.trainable_variables)
        self.optimizer.apply(gradients, self.trainable_variables)
        self.loss_tracker.update_state(loss)
        self.z_std_tracker.update_state(losses.std_of_l2_normalized(z1))
        logs = {"loss": self.loss_tracker.result(), "z_std": self.z_std_tracker.result(),
                "lr": tf.cast(learning_rate, tf.float32)}
        if distribute.is_multi_worker(tf.distribute.get_strategy()):
            # Keras reduces multi-worker logs along axis 0: scalars fail (tensorflow/tensorflow#72388)
            logs = {name: tf.reshape(value, [1]) for name, value in logs.items()}
        return logs

    def get_config(self):
        return {"backbone": keras.saving.serialize_keras_object(self.backbone), "name": self.name,
                "augment": keras.saving.serialize_keras_object(self.augment), **self._config}

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        config["backbone"] = keras.saving.deserialize_keras_object(config["backbone"])
        config["augment"] = keras.saving.deserialize_keras_object(config.get("augment"))
        return cls(**config)
