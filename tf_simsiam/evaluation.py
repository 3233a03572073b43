"""Evaluation of an encoder: the weighted kNN monitor, and the paper's downstream protocols.

An *encoder* here is any function from uint8 images (B, H, W, C) to features (B, D): the exported SavedModel
(`saved_model_encoder`), a Keras backbone (`keras_encoder`), or raw pixels (`pixel_encoder`), so that SimSiam's
features and the baselines go through the same code.

- `knn_accuracy`: weighted kNN on cosine similarity (k=200, t=0.1), or plain majority kNN (temperature=None).
- `linear_probe`: a linear head on the frozen encoder in inference mode (SimSiam's main_lincls.py: LARS,
  cosine schedule, no weight decay, head initialised N(0, 0.01), random-resized-crop + flip).
- `fine_tune`: the whole backbone and a linear head trained together (SimCLR's semi-supervised protocol);
  with a fresh backbone, the supervised-from-scratch baseline.
- `sample_fraction`: a class-balanced, seeded fraction of the labels.
"""

import dataclasses

import keras
import numpy as np
import tensorflow as tf

from tf_simsiam.data import augment as augment_lib


def on_replicas(strategy):
    """Whether features are computed on the replicas of `strategy`: one process with several devices (several
    GPUs, a TPU). Under a multi-worker strategy every worker computes all the features on its own devices,
    without collectives (each then has every feature, as the monitor needs)."""
    from tf_simsiam import distribute
    return strategy is not None and strategy.num_replicas_in_sync > 1 and not distribute.is_multi_worker(strategy)


class Features:
    """An encoder in inference mode as one compiled function, on every replica of `strategy` if given:
    `Features(encoder)(uint8 images (N, H, W, C), batch_size)` -> float32 features (N, D), in order.

    Build it once per encoder (a monitor that evaluates every epoch, say): each new function is traced anew, which
    costs about as much as the features themselves. It reads the encoder's variables when called, so it follows
    training. `float_inputs=True`: the encoder takes floats in [0, 1] (a Keras backbone); else uint8 (an export).
    With several replicas each global batch is split among them in replica order (the last one padded to a full
    batch: static shapes for a TPU) and the features are put back in order.
    """

    def __init__(self, encoder, strategy=None, float_inputs=True):
        self.encoder, self.float_inputs = encoder, float_inputs
        self.strategy = strategy if on_replicas(strategy) else None

        def features(x):
            x = tf.cast(x, tf.float32) / 255.0 if float_inputs else x
            out = encoder(x, training=False) if float_inputs else encoder(x)
            return tf.cast(out, tf.float32)

        if self.strategy is None:
            self._call = tf.function(features, reduce_retracing=True)
        else:
            self._call = tf.function(lambda x: self.strategy.run(features, args=(x,)))

    def __call__(self, images, batch_size=512):
        n = len(images)
        if self.strategy is None:
            return np.concatenate([self._call(tf.constant(images[i:i + batch_size])).numpy()
                                   for i in range(0, n, batch_size)])
        replicas = self.strategy.num_replicas_in_sync
        batch_size = -(-min(batch_size, max(n, 1)) // replicas) * replicas
        padded = np.concatenate([images, np.zeros((-n % batch_size, *images.shape[1:]), images.dtype)])
        batches = self.strategy.experimental_distribute_dataset(
            tf.data.Dataset.from_tensor_slices(padded).batch(batch_size, drop_remainder=True))
        out = [t.numpy() for batch in batches for t in self.strategy.experimental_local_results(self._call(batch))]
        return np.concatenate(out)[:n]


def inference_features(encoder, strategy=None):
    """Features(encoder, strategy): a Keras encoder (float [0, 1] inputs) in inference mode, compiled once."""
    return Features(encoder, strategy)


def extract_features(encoder, images, batch_size=512, strategy=None):
    """Features (N, D) float32 of uint8 images (N, H, W, C) from a Keras encoder in inference mode (on every
    replica of `strategy`), or from the Features `inference_features(encoder)` returned."""
    features = encoder if isinstance(encoder, Features) else Features(encoder, strategy)
    return features(images, batch_size)


def encode_all(encoder, images, batch_size=512, strategy=None):
    """Features (N, D) float32 of uint8 images from an encoder function (uint8 batch -> features), on every
    replica of `strategy` if given."""
    return Features(encoder, strategy, float_inputs=False)(images, batch_size)


def knn_classify(train_features, train_labels, test_features, num_classes, k=200, temperature=0.1,
                 chunk_size=1024):
    """Weighted kNN on cosine similarity (Wu et al. 2018, as in the SimSiam/MoCo monitors).

    Each of the k nearest training features votes for its label with weight exp(similarity / temperature);
    temperature=None gives plain majority votes. Returns the predicted labels of the test features.
    """
    train = tf.math.l2_normalize(tf.constant(train_features, tf.float32), axis=1)
    one_hot = tf.one_hot(tf.constant(train_labels), num_classes)
    k = min(k, len(train_features))
    predictions = []
    for start in range(0, len(test_features), chunk_size):
        test = tf.math.l2_normalize(tf.constant(test_features[start:start + chunk_size], tf.float32), axis=1)
        similarity, index = tf.math.top_k(tf.matmul(test, train, transpose_b=True), k=k)
        weights = tf.ones_like(similarity) if temperature is None else tf.exp(similarity / temperature)
        votes = tf.reduce_sum(tf.gather(one_hot, index) * weights[..., None], axis=1)
        predictions.append(tf.argmax(votes, axis=1).numpy())
    return np.concatenate(predictions)


def knn_accuracy(train_features, train_labels, test_features, test_labels, k=200, temperature=0.1):
    num_classes = int(max(train_labels.max(), test_labels.max())) + 1
    predicted = knn_classify(train_features, train_labels, test_features, num_classes, k, temperature)
    return float(np.mean(predicted == test_labels))


def pixel_features(images):
    """Raw pixels as features (the baseline every representation must beat)."""
    return images.reshape(len(images), -1).astype(np.float32) / 255.0


# --- encoders: uint8 images (B, H, W, C) -> features (B, D) -----------------------------------------------------

def saved_model_encoder(path):
    """The exported SavedModel's serving function (inference mode, frozen)."""
    loaded = tf.saved_model.load(path)
    encoder = lambda images: loaded.serve(images)  # noqa: E731
    encoder.saved_model = loaded  # keeps the variables alive
    return encoder


def keras_encoder(backbone):
    """A Keras backbone (float [0, 1] inputs) called in inference mode."""
    return lambda images: backbone(tf.cast(images, tf.float32) / 255.0, training=False)


def pixel_encoder(images):
    return tf.reshape(tf.cast(images, tf.float32) / 255.0, [tf.shape(images)[0], -1])


# --- labels -----------------------------------------------------------------------------------------------------

def sample_fraction(labels, fraction, seed=0):
    """Sorted indices of a class-balanced, seeded subset: round(fraction * n_c) images of each class c (>= 1)."""
    if not 0 < fraction <= 1:
        raise ValueError(f"--label_fraction must be in (0, 1], got {fraction}")
    if fraction == 1:
        return np.arange(len(labels))
    rng = np.random.default_rng(seed)
    chosen = []
    for c in np.unique(labels):
        members = np.flatnonzero(labels == c)
        chosen.append(rng.choice(members, max(1, int(round(fraction * len(members)))), replace=False))
    return np.sort(np.concatenate(chosen))


# --- trained protocols ------------------------------------------------------------------------------------------

@dataclasses.dataclass
class Schedule:
    """Optimisation of a downstream protocol. lr = base_lr * batch_size / 256, cosine over all steps."""

    epochs: int = 90
    batch_size: int = 256
    base_lr: float = 0.1
    optimizer: str = "lars"  # "lars" or "sgd"
    momentum: float = 0.9
    weight_decay: float = 0.0
    nesterov: bool = False
    augment: bool = True  # random-resized-crop + flip on the training images

    def build(self, steps_per_epoch):
        from tf_simsiam import optim
        total = self.epochs * steps_per_epoch
        lr = optim.WarmupCosine(optim.scaled_learning_rate(self.base_lr, self.batch_size), total)
        if self.optimizer == "lars":
            return optim.LARS(lr, momentum=self.momentum, weight_decay=self.weight_decay, nesterov=self.nesterov)
        if self.optimizer == "sgd":
            return optim.SGD(lr, momentum=self.momentum, weight_decay=self.weight_decay, nesterov=self.nesterov)
        raise ValueError(f"--optimizer must be one of {optim.OPTIMIZERS}, got {self.optimizer!r}")


# The paper's linear protocol (LARS, momentum 0.9, wd 0, cosine, 90 epochs) at batch 256. Its lr (0.02 x 4096/256
# with LARS) is for batch 4096; at 256 on Fashion-MNIST features we measured base_lr 0.1: 80.2%, 1.0: 85.5%,
# 3.0: 86.0%, 10: 82.7% (docs/evaluation.md), hence 3.0.
LINEAR = Schedule(base_lr=3.0)
FINE_TUNE = Schedule(epochs=30, base_lr=0.05, optimizer="sgd", nesterov=True)  # SimCLR B.5: no wd, Nesterov
SUPERVISED = Schedule(epochs=30, base_lr=0.1, optimizer="sgd", weight_decay=5e-4)


def linear_head(num_classes):
    """The linear classifier of main_lincls.py: weights N(0, 0.01), bias 0, float32 logits."""
    return keras.layers.Dense(num_classes, kernel_initializer=keras.initializers.RandomNormal(0.0, 0.01),
                              bias_initializer="zeros", dtype="float32", name="linear_head")


def _train(features, trainable, head, dim, images, labels, schedule, seed):
    """Trains head (and the `trainable` variables features() uses) with cross-entropy; returns per-epoch losses."""
    head.build((None, dim))
    n = len(images)
    batch_size = min(schedule.batch_size, n)
    steps = n // batch_size
    optimizer = schedule.build(steps)
    variables = list(trainable) + head.trainable_variables
    recipe = augment_lib.linear_eval(images.shape[1]) if schedule.augment else None

    @tf.function
    def step(x, y, step_seed):
        if recipe is not None:  # torchvision hands PIL (uint8) crops to the model: so do we
            x = tf.cast(tf.round(augment_lib.augment(x, recipe, step_seed) * 255.0), tf.uint8)
        with tf.GradientTape() as tape:
            logits = head(features(x))
            loss = tf.reduce_mean(keras.losses.sparse_categorical_crossentropy(y, logits, from_logits=True))
        optimizer.apply(tape.gradient(loss, variables), variables)
        return loss

    rng = np.random.default_rng(seed)
    losses = []
    for epoch in range(schedule.epochs):
        order = rng.permutation(n)
        total = 0.0
        for i in range(steps):
            batch = order[i * batch_size:(i + 1) * batch_size]
            total += float(step(tf.constant(images[batch]), tf.constant(labels[batch]),
                                tf.constant([seed, epoch * steps + i], tf.int64)))
        losses.append(total / steps)
    return losses


def predict_classes(features, head, images, batch_size=512):
    call = tf.function(lambda x: tf.argmax(head(features(x)), axis=1))
    return np.concatenate([call(tf.constant(images[i:i + batch_size])).numpy()
                           for i in range(0, len(images), batch_size)])


def linear_probe(encoder, train, test, num_classes, schedule=LINEAR, seed=0):
    """Linear classifier on a frozen encoder. Returns (top-1 on test, test predictions, per-epoch losses).

    train/test are (uint8 images, labels). With schedule.augment=False the features are computed once and the
    head is trained on them (fast; no augmentation), which is otherwise the same protocol.
    """
    keras.utils.set_random_seed(seed)
    head = linear_head(num_classes)
    images, labels = train
    if schedule.augment:
        features = lambda x: tf.stop_gradient(tf.cast(encoder(x), tf.float32))  # noqa: E731
        dim = int(encode_all(encoder, images[:2]).shape[-1])
        losses = _train(features, [], head, dim, images, labels, schedule, seed)
        predicted = predict_classes(features, head, test[0])
    else:
        train_features, test_features = encode_all(encoder, images), encode_all(encoder, test[0])
        return linear_probe_on_features(train_features, test_features, labels, test[1], num_classes, schedule,
                                        seed)
    return float(np.mean(predicted == test[1])), predicted, losses


def linear_probe_on_features(train_features, test_features, train_labels, test_labels, num_classes=None,
                             schedule=None, seed=0):
    """The linear probe on features computed once (the `--noaugment` protocol): (top-1 on test, test predictions,
    per-epoch losses). Each epoch runs in one compiled call (seconds for the 90 epochs of 60,000 features).
    num_classes defaults to the largest label + 1; schedule to LINEAR without augmentation."""
    schedule = dataclasses.replace(schedule or LINEAR, augment=False)
    keras.utils.set_random_seed(seed)
    num_classes = num_classes or int(max(train_labels.max(), test_labels.max())) + 1
    head = linear_head(num_classes)
    features = tf.constant(np.asarray(train_features, np.float32))
    labels = tf.constant(np.asarray(train_labels, np.int64))
    n = len(train_features)
    batch_size = min(schedule.batch_size, n)
    steps = n // batch_size
    head.build((None, features.shape[-1]))
    optimizer = schedule.build(steps)
    variables = head.trainable_variables
    optimizer.build(variables)

    @tf.function
    def epoch(features, labels, order):
        total = tf.constant(0.0)
        for i in tf.range(steps):
            batch = order[i * batch_size:(i + 1) * batch_size]
            with tf.GradientTape() as tape:
                logits = head(tf.gather(features, batch))
                loss = tf.reduce_mean(keras.losses.sparse_categorical_crossentropy(tf.gather(labels, batch),
                                                                                   logits, from_logits=True))
            optimizer.apply(tape.gradient(loss, variables), variables)
            total += loss
        return total / steps

    rng = np.random.default_rng(seed)  # the batches of _train's loop: one permutation per epoch
    losses = [float(epoch(features, labels, tf.constant(rng.permutation(n)))) for _ in range(schedule.epochs)]
    predicted = predict_classes(lambda f: f, head, np.asarray(test_features, np.float32))
    return float(np.mean(predicted == np.asarray(test_labels))), predicted, losses


def fine_tune(backbone, train, test, num_classes, schedule=FINE_TUNE, seed=0):
    """Backbone (float [0, 1] inputs, BN in training mode) and a linear head trained together.

    Pass the exported backbone (`export.load_encoder`) to fine-tune it, or a freshly built one for the supervised
    baseline. Returns (top-1 on test, test predictions, per-epoch losses).
    """
    keras.utils.set_random_seed(seed)
    head = linear_head(num_classes)
    features = lambda x: backbone(tf.cast(x, tf.float32) / 255.0, training=True)  # noqa: E731
    losses = _train(features, backbone.trainable_variables, head, backbone.output_shape[-1], train[0], train[1],
                    schedule, seed)
    predicted = predict_classes(lambda x: backbone(tf.cast(x, tf.float32) / 255.0, training=False), head, test[0])
    return float(np.mean(predicted == test[1])), predicted, losses
