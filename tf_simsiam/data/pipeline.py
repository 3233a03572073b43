"""The pretraining input pipeline: a Split of uint8 images -> batches of two stacked views (B, 2, S, S, C).

Example order and augmentation are stateless functions of (seed, global step): batch b holds the examples
b*B ... b*B+B-1 of an endless sequence of per-epoch permutations (tf.random.experimental.index_shuffle with
seed (seed, epoch)), augmented with seed (seed, b). A run resumed at step b therefore sees exactly the batches an
uninterrupted run would have seen, and the host and device placements produce the same views.
"""

import tensorflow as tf

from tf_simsiam.data import augment as augment_lib
from tf_simsiam.data.sources import Stream

AUGMENT_PLACEMENTS = ("host", "device")


def _examples_of_batch(step, batch_size, num_examples, seed):
    ids = tf.cast(step, tf.int64) * batch_size + tf.range(batch_size, dtype=tf.int64)
    epoch, index = ids // num_examples, ids % num_examples
    seeds = tf.stack([tf.fill([batch_size], tf.cast(seed, tf.int64)), epoch, tf.zeros_like(epoch)], axis=1)
    # the raw op: tf.random.experimental.index_shuffle mis-pads seeds of shape [n, 2] (TF 2.21)
    return tf.raw_ops.RandomIndexShuffle(index=index, seed=seeds, max_index=tf.constant(num_examples - 1, tf.int64),
                                         rounds=4)


def pretrain_dataset(images, batch_size, recipe, seed=0, augment_on="host", start_step=0, jit_compile=True):
    """An endless tf.data.Dataset of batches for SimSiam.fit (use steps_per_epoch).

    Args:
      images: uint8 array (N, H, W, C), e.g. `Split.images`, or a `sources.Stream` (a data set too large for
        memory: shuffled through a buffer, so order is seeded but a resumed run reshuffles).
      batch_size: examples per batch (the global batch; static, every batch is full).
      recipe: an augment.Recipe.
      seed: the run's seed; order and views are a function of it.
      augment_on: "host" -> batches of views (B, 2, S, S, C) float32; "device" -> batches of images (B, H, W, C)
        uint8, to be augmented in the train step by the model's `augment` layer (same seed gives the same views).
      start_step: the global step to start from (for resuming).
      jit_compile: run the host augmentation compiled with XLA (about 10x faster on CPU), as the device layer
        does; with False, plain TF ops draw other (equally distributed) random numbers.
    """
    if augment_on not in AUGMENT_PLACEMENTS:
        raise ValueError(f"--augment_on must be one of {AUGMENT_PLACEMENTS}, got {augment_on!r}")
    views = augment_lib.two_views_compiled if jit_compile else augment_lib.two_views
    if isinstance(images, Stream):
        return _stream_dataset(images, batch_size, recipe, seed, augment_on, start_step, views)
    num_examples = len(images)
    if not 0 < batch_size <= num_examples:
        raise ValueError(f"--batch_size={batch_size} must be between 1 and the number of images ({num_examples})")
    table = tf.constant(images)

    def load(step):
        batch = tf.gather(table, _examples_of_batch(step, batch_size, num_examples, seed))
        if augment_on == "device":
            return batch
        return views(batch, recipe, tf.stack([tf.cast(seed, tf.int64), step]))

    dataset = tf.data.Dataset.counter(start=start_step, dtype=tf.int64)
    dataset = dataset.map(load, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    return dataset.prefetch(tf.data.AUTOTUNE)


def _stream_dataset(stream, batch_size, recipe, seed, augment_on, start_step, views):
    if not 0 < batch_size <= stream.num_examples:
        raise ValueError(f"--batch_size={batch_size} must be between 1 and the number of images "
                         f"({stream.num_examples})")
    images = stream.dataset.map(lambda image, label: image).shuffle(
        min(stream.num_examples, 20 * batch_size), seed=seed + start_step).repeat()
    batches = tf.data.Dataset.zip(tf.data.Dataset.counter(start=start_step, dtype=tf.int64),
                                  images.batch(batch_size, drop_remainder=True))
    if augment_on == "host":
        batches = batches.map(lambda step, batch: views(batch, recipe, tf.stack([tf.cast(seed, tf.int64), step])),
                              num_parallel_calls=tf.data.AUTOTUNE)
    else:
        batches = batches.map(lambda step, batch: batch)
    return batches.prefetch(tf.data.AUTOTUNE)


def image_batches(images, batch_size=512):
    """Float [0, 1] batches of uint8 images, in order, for feature extraction."""
    return tf.data.Dataset.from_tensor_slices(images).batch(batch_size).map(
        lambda x: tf.cast(x, tf.float32) / 255.0).prefetch(tf.data.AUTOTUNE)
