"""What SimSiam and SimCLR share: a keras.Model trained on two views of each image.

`TwoViewModel.train_step` takes a batch of stacked views (B, 2, H, W, C), uint8 or floats in [0, 1] (or images,
augmented on the device),
asks the method for its loss on (x1, x2), and applies the update so that N replicas make the global-batch update
(Keras sums gradients over replicas). A method subclass defines `objective(x1, x2, training)` and its extra
metrics. The rest is Keras': `evaluate(views)` and `fit(..., validation_data=views)` report the loss and z_std of
held-out view pairs (inference mode), `predict(images)` gives backbone features, `save` / `load_model` round-trip.
"""

import keras
import tensorflow as tf

from tf_simsiam import distribute, losses
from tf_simsiam.models.batch_norm import BatchNormalization, views_in_batch


def split_views(data):
    """(x1, x2) from a batch of stacked views (B, 2, H, W, C), or from a (x1, x2) pair."""
    if isinstance(data, (tuple, list)):
        data = [d for d in data if d is not None]  # train_on_batch hands over (x, None, None)
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


def as_float(views):
    """Views as the backbone takes them: uint8 views (what the pipeline sends) become floats in [0, 1]."""
    return tf.cast(views, tf.float32) / 255.0 if views.dtype == tf.uint8 else views


def statistics_per_view_in_one_pass(*networks):
    """Whether every BatchNormalization of the networks is the project's, which can take its statistics per view
    when both views go through as one batch (batch_norm.views_in_batch); Keras' own would mix the two views."""
    return all(isinstance(layer, BatchNormalization) for network in networks
               for layer in network._flatten_layers() if isinstance(layer, keras.layers.BatchNormalization))


def frozen(network):
    """`network` with each variable frozen one by one: out of the optimizer's reach, while BN still normalises with
    the batch's statistics in training, as a PyTorch module in train() mode whose parameters have
    requires_grad=False (a Keras layer set to trainable=False would run its BN in inference mode instead)."""
    for variable in network.trainable_variables:
        variable.trainable = False
    return network


def momentum_pairs(targets, onlines, statistics=False):
    """(target variable, online variable) of each (target network, online network) pair of the same architecture:
    the parameters a moving average covers, and with `statistics` the BN moving statistics too (a momentum
    network's own otherwise, kept by its forward passes as the buffers of a PyTorch one; training never reads
    them)."""
    pairs = [pair for target, online in zip(targets, onlines) for pair in zip(target.weights, online.weights)]
    return [(target, online) for target, online in pairs if statistics or online.trainable]


def momentum_copy(targets, onlines):
    """Starts each target network as a copy of its online one, then freezes it (`frozen`)."""
    for target, online in momentum_pairs(targets, onlines, statistics=True):
        target.assign(online)
    for target in targets:
        frozen(target)


def momentum_update(pairs, decay):
    """The moving average of BYOL's target and MoCo's key encoder: target = decay * target + (1 - decay) * online."""
    for target, online in pairs:
        target.assign(tf.cast(decay, target.dtype) * target + tf.cast(1.0 - decay, target.dtype) * online)


def check_backbone(backbone):
    if not isinstance(backbone, keras.Model) or len(backbone.output_shape) != 2:
        raise ValueError(f"backbone must be a keras.Model returning pooled features (batch, dim); "
                         f"got {type(backbone).__name__} with output shape {getattr(backbone, 'output_shape', None)}")


class TwoViewModel(keras.Model):
    """Base of the methods: a backbone, an optional on-device augmentation, loss / z_std / extra metrics."""

    extra_metrics = ()  # names of the values `objective` returns besides the loss and z

    def __init__(self, backbone, augment=None, **kwargs):
        super().__init__(**kwargs)
        check_backbone(backbone)
        self.backbone = backbone
        self.augment = augment
        self.loss_tracker = keras.metrics.Mean(name="loss")
        self.z_std_tracker = keras.metrics.Mean(name="z_std")
        self.extra_trackers = {name: keras.metrics.Mean(name=name) for name in self.extra_metrics}

    def call(self, images, training=False):
        """Backbone features of a batch of images, uint8 or floats in [0, 1] (what a downstream task uses)."""
        return self.backbone(as_float(tf.convert_to_tensor(images)), training=training)

    def compile(self, optimizer="sgd", loss=None, **kwargs):
        if loss is not None:
            raise ValueError(f"{type(self).__name__}.compile(loss=...): the loss is the method's own "
                             f"({type(self).__name__}.objective); leave `loss` out")
        super().compile(optimizer=optimizer, **kwargs)

    def compile_from_config(self, config):
        self.compile(**keras.saving.deserialize_keras_object(config))
        self.optimizer.build(self.trainable_variables)  # so that a saved optimizer state can be loaded into it

    @property
    def metrics(self):
        return [self.loss_tracker, self.z_std_tracker, *self.extra_trackers.values()]

    def _maybe_symbolic_build(self, iterator=None, data_batch=None):
        # Keras' TF trainer builds the model on a first batch averaged over the replicas; collectives between
        # workers take no uint8, which the views are: hand it this worker's first batch as floats instead.
        if iterator is not None and self._distribute_strategy is not None:
            for _, _, it in iterator:
                batch = next(it)
                break
            strategy = self._distribute_strategy
            data_batch = tf.nest.map_structure(
                lambda x: as_float(strategy.experimental_local_results(x)[0]
                                   if isinstance(x, tf.distribute.DistributedValues) else x), batch)
            iterator = None
        return super()._maybe_symbolic_build(iterator=iterator, data_batch=data_batch)

    def objective(self, x1, x2, training=True):
        """Returns (loss, z of view 1, {extra metric: value})."""
        raise NotImplementedError

    def embed_per_view(self, x1, x2, networks, training=True):
        """(out1, out2): each view through `networks` in turn (the first: a backbone), BN taking its statistics per
        view (the papers' two forward passes): as one batch of 2B where every BN can take them per view
        (batch_norm.views_in_batch), else in two passes."""
        def chain(x):
            for network in networks:
                x = network(x, training=training)
            return x
        if statistics_per_view_in_one_pass(*networks):
            with views_in_batch(2):
                out1, out2 = tf.split(chain(tf.concat([x1, x2], 0)), 2)
            return out1, out2
        return chain(x1), chain(x2)

    def after_update(self):
        """What a method does after each optimizer update (BYOL: its target's moving average)."""

    def restart_momentum_networks(self):
        """Copies the online networks into a method's moving averages (BYOL's target, MoCo's key encoder): call it
        after loading weights into the online backbone (as --init_from does), so that the average starts from
        them."""

    def _views(self, data, step):
        if self.augment is not None and (isinstance(data, dict) or (
                not isinstance(data, (tuple, list)) and data.shape.rank == 4)):
            data = self.augment(data, step=step)
        return [as_float(x) for x in split_views(data)]

    def _logs(self, loss, z1, extra):
        self.loss_tracker.update_state(loss)
        self.z_std_tracker.update_state(losses.std_of_l2_normalized(z1))
        for name, value in extra.items():
            self.extra_trackers[name].update_state(value)
        return {tracker.name: tracker.result() for tracker in self.metrics}

    @staticmethod
    def _reducible(logs):
        if distribute.is_multi_worker(tf.distribute.get_strategy()):
            # Keras reduces multi-worker logs along axis 0: scalars fail (tensorflow/tensorflow#72388)
            return {name: tf.reshape(value, [1]) for name, value in logs.items()}
        return logs

    def test_step(self, data):
        """Loss and z_std (and the method's metrics) of held-out view pairs, in inference mode: no update."""
        x1, x2 = self._views(data, step=0)
        return self._reducible(self._logs(*self.objective(x1, x2, training=False)))

    def train_step(self, data):
        x1, x2 = self._views(data, step=self.optimizer.iterations)
        with tf.GradientTape() as tape:
            loss, z1, extra = self.objective(x1, x2)
            # Gradients are summed over replicas: scale so that N replicas make the global-batch update.
            replica_loss = loss / tf.distribute.get_strategy().num_replicas_in_sync
            replica_loss = self.optimizer.scale_loss(replica_loss)
        learning_rate = self.optimizer.learning_rate
        gradients = tape.gradient(replica_loss, self.trainable_variables)
        self.optimizer.apply(gradients, self.trainable_variables)
        self.after_update()
        logs = self._logs(loss, z1, extra)
        logs["lr"] = tf.cast(learning_rate, tf.float32)
        return self._reducible(logs)

    def get_config(self):
        base = keras.layers.Layer.get_config(self)  # name, trainable, dtype: Keras' conventions
        return {**base, "backbone": keras.saving.serialize_keras_object(self.backbone),
                "augment": keras.saving.serialize_keras_object(self.augment), **self._config}

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        config["backbone"] = keras.saving.deserialize_keras_object(config["backbone"])
        config["augment"] = keras.saving.deserialize_keras_object(config.get("augment"))
        return cls(**config)
