"""The pretraining input pipeline: images -> batches of two stacked views (B, 2, S, S, C) uint8.

Example order and augmentation are stateless functions of (seed, global step): batch b holds the examples
b*B ... b*B+B-1 of an endless sequence of per-epoch permutations (tf.random.experimental.index_shuffle with
seed (seed, epoch)), augmented with seed (seed, b). A run resumed at step b therefore sees exactly the batches an
uninterrupted run would have seen, and the host and device placements produce the same views. A folder read as
a stream follows the same order; its crops are decoded from the files (see data.streams).

Views travel as uint8, a quarter of the bytes of float32, and become floats in [0, 1] in the train step.

Under a distribution strategy (an `input_context`), the batch size stays the global one: each input pipeline
(one per worker or TPU host) yields, for every step, the per-replica slices of the global batch that belong to
its replicas, in replica order. With one input pipeline (one machine, any number of devices) the replicas
together see exactly the single-device batch and views; with several, each pipeline reads and augments only its
own slice of every batch, with the pipeline id folded into the seed: an epoch's images are partitioned exactly
between the pipelines.
"""

import tensorflow as tf

from tf_simsiam.data import augment as augment_lib
from tf_simsiam.data.sources import Split
from tf_simsiam.data.streams import Stream, decode_crops

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
      images: uint8 array (N, H, W, C), a `sources.Split` (images of several sizes: a canvas with their sizes),
        or a `streams.Stream` (a data set read from disk as needed).
      batch_size: examples per batch (the global batch; static, every batch is full).
      recipe: an augment.Recipe.
      seed: the run's seed; order and views are a function of it.
      augment_on: "host" -> batches of views (B, 2, S, S, C) uint8; "device" -> what the model's `augment`
        layer turns into the same views in the train step: images (B, H, W, C) uint8, {"images", "sizes"} for
        images of several sizes, or {"crops": (B, 2, S, S, C)} for a stream (cropped while decoding).
      start_step: the global step to start from (for resuming).
      jit_compile: run the host augmentation compiled with XLA (about 10x faster on CPU), as the device layer
        does; with False, plain TF ops draw other (equally distributed) random numbers.
      input_context: a tf.distribute.InputContext (from distribute.distribute_dataset): the dataset then yields
        the per-replica batches of this input pipeline's replicas.
    """
    if augment_on not in AUGMENT_PLACEMENTS:
        raise ValueError(f"--augment_on must be one of {AUGMENT_PLACEMENTS}, got {augment_on!r}")
    shard = _Shard(batch_size, input_context)
    if isinstance(images, Stream):
        dataset = _stream_batches(images, shard, recipe, seed, start_step, augment_on, jit_compile)
    else:
        split = images if isinstance(images, Split) else Split(images)
        num_examples = split.num_examples
        if not 0 < batch_size <= num_examples:
            raise ValueError(f"--batch_size={batch_size} must be between 1 and the number of images "
                             f"({num_examples})")
        views = augment_lib.two_views_compiled if jit_compile else augment_lib.two_views
        table = tf.constant(split.images)
        sizes = None if split.sizes is None else tf.constant(split.sizes)

        def load(step):
            examples = _examples_of_batch(step, batch_size, num_examples, seed)[shard.start:shard.stop]
            batch = tf.gather(table, examples)
            batch_sizes = None if sizes is None else tf.gather(sizes, examples)
            if augment_on == "device":
                return batch if sizes is None else {"images": batch, "sizes": batch_sizes}
            return views(batch, recipe, shard.seed(seed, step), batch_sizes)

        dataset = tf.data.Dataset.counter(start=start_step, dtype=tf.int64)
        dataset = dataset.map(load, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    if shard.local_replicas > 1:  # one element per local replica, in replica order
        dataset = dataset.map(lambda batch: tf.nest.map_structure(
            lambda x: tf.reshape(x, [shard.local_replicas, -1, *x.shape[1:]]), batch))
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


def _stream_batches(stream, shard, recipe, seed, start_step, augment_on, jit_compile):
    """Batches of a stream: each image's boxes drawn on its own size, only the boxes decoded (data.streams)."""
    if not 0 < shard.size * shard.pipelines <= stream.num_examples:
        raise ValueError(f"--batch_size={shard.size * shard.pipelines} must be between 1 and the number of "
                         f"images ({stream.num_examples})")
    batch_size = shard.size * shard.pipelines
    if stream.ordered:  # the in-memory order: each pipeline reads the files of its slice of every batch
        ids = tf.data.Dataset.counter(start=start_step, dtype=tf.int64).map(
            lambda step: _examples_of_batch(step, batch_size, stream.num_examples, seed)[shard.start:shard.stop])
        records = stream.records(ids.unbatch())
    else:
        records = stream.records(shard.pipeline, shard.pipelines, seed)
    two_crops = augment_lib.two_crops_compiled if jit_compile else augment_lib.two_crops
    colours = augment_lib.two_views_of_crops_compiled if jit_compile else augment_lib.two_views_of_crops

    def steps():
        return tf.data.Dataset.counter(start=start_step, dtype=tf.int64)

    boxed = tf.data.Dataset.zip(steps(), records.batch(shard.size, drop_remainder=True)).map(
        lambda step, record: (record[0], two_crops(shard.seed(seed, step), recipe, record[1])))
    crops = boxed.unbatch().map(lambda contents, boxes: decode_crops(contents, boxes, recipe.size, stream.channels),
                                num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    crops = crops.ignore_errors(log_warning=True)  # a file that fails to decode is logged and skipped
    batches = tf.data.Dataset.zip(steps(), crops.batch(shard.size, drop_remainder=True))
    if augment_on == "device":
        return batches.map(lambda step, batch: {"crops": batch})
    return batches.map(lambda step, batch: colours(batch, recipe, shard.seed(seed, step)),
                       num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)


def image_batches(images, batch_size=512):
    """Float [0, 1] batches of uint8 images, in order, for feature extraction."""
    return tf.data.Dataset.from_tensor_slices(images).batch(batch_size).map(
        lambda x: tf.cast(x, tf.float32) / 255.0).prefetch(tf.data.AUTOTUNE)
