"""The pretraining input pipeline: a Split of uint8 images -> batches of two stacked views (B, 2, S, S, C).

Example order and augmentation are stateless functions of (seed, global step): batch b holds the examples
b*B ... b*B+B-1 of an endless sequence of per-epoch permutations (tf.random.experimental.index_shuffle with
seed (seed, epoch)), augmented with seed (seed, b). A run resumed at step b therefore sees exactly the batches an
uninterrupted run would have seen, and the host and device placements produce the same views.

Under a distribution strategy (an `input_context`), the batch size stays the global one: each input pipeline
(one per worker or TPU host) yields, for every step, the per-replica slices of the global batch that belong to
its replicas, in replica order. With one input pipeline (one machine, any number of devices) the replicas
together see exactly the single-device batch and views; with several, each pipeline augments only its own
slice, with the pipeline id folded into the seed.
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


def pretrain_dataset(images, batch_size, recipe, seed=0, augment_on="host", start_step=0, jit_compile=True,
                     input_context=None):
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
      input_context: a tf.distribute.InputContext (from distribute.distribute_dataset): the dataset then yields
        the per-replica batches of this input pipeline's replicas.
    """
    if augment_on not in AUGMENT_PLACEMENTS:
        raise ValueError(f"--augment_on must be one of {AUGMENT_PLACEMENTS}, got {augment_on!r}")
    views = augment_lib.two_views_compiled if jit_compile else augment_lib.two_views
    shard = _Shard(batch_size, input_context)

    def augmented(step, batch):
        if augment_on == "device":
            return batch
        return views(batch, recipe, shard.seed(seed, step))

    if isinstance(images, Stream):
        dataset = _stream_batches(images, shard, seed, start_step).map(augmented,
                                                                       num_parallel_calls=tf.data.AUTOTUNE)
    else:
        num_examples = len(images)
        if not 0 < batch_size <= num_examples:
            raise ValueError(f"--batch_size={batch_size} must be between 1 and the number of images "
                             f"({num_examples})")
        table = tf.constant(images)

        def load(step):
            examples = _examples_of_batch(step, batch_size, num_examples, seed)
            return augmented(step, tf.gather(table, examples[shard.start:shard.stop]))

        dataset = tf.data.Dataset.counter(start=start_step, dtype=tf.int64)
        dataset = dataset.map(load, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    if shard.local_replicas > 1:  # one element per local replica, in replica order
        dataset = dataset.map(lambda batch: tf.reshape(batch, [shard.local_replicas, -1, *batch.shape[1:]]))
        dataset = dataset.unbatch()
    return dataset.prefetch(tf.data.AUTOTUNE)


class _Shard:
    """The part of every global batch that one input pipeline produces."""

    def __init__(self, batch_size, input_context):
        pipelines = input_context.num_input_pipelines if input_context else 1
        replicas = input_context.num_replicas_in_sync if input_context else 1
        self.pipeline = input_context.input_pipeline_id if input_context else 0
        self.pipelines = pipelines
        if batch_size % replicas:
            raise ValueError(f"--batch_size={batch_size} must be a multiple of the {replicas} replicas")
        self.local_replicas = replicas // pipelines
        size = batch_size // pipelines
        self.start, self.stop, self.size = self.pipeline * size, (self.pipeline + 1) * size, size

    def seed(self, seed, step):
        seed = tf.stack([tf.cast(seed, tf.int64), tf.cast(step, tf.int64)])
        return seed if self.pipelines == 1 else tf.random.experimental.stateless_fold_in(seed, self.pipeline)


def _stream_batches(stream, shard, seed, start_step):
    """(step, batch) of a streamed data set; with several pipelines each reads its own shard of the files."""
    if not 0 < shard.size * shard.pipelines <= stream.num_examples:
        raise ValueError(f"--batch_size={shard.size * shard.pipelines} must be between 1 and the number of "
                         f"images ({stream.num_examples})")
    images = stream.dataset.map(lambda image, label: image)
    if shard.pipelines > 1:
        images = images.shard(shard.pipelines, shard.pipeline)
    images = images.shuffle(min(stream.num_examples, 20 * shard.size * shard.pipelines),
                            seed=seed + start_step).repeat()
    return tf.data.Dataset.zip(tf.data.Dataset.counter(start=start_step, dtype=tf.int64),
                               images.batch(shard.size, drop_remainder=True))


def image_batches(images, batch_size=512):
    """Float [0, 1] batches of uint8 images, in order, for feature extraction."""
    return tf.data.Dataset.from_tensor_slices(images).batch(batch_size).map(
        lambda x: tf.cast(x, tf.float32) / 255.0).prefetch(tf.data.AUTOTUNE)
