"""Data sets read from disk as training needs them: folders larger than memory, large TFDS data sets (ImageNet).

A stream yields encoded images (the file's bytes) with their original (height, width); the pipeline draws each
image's two crop boxes on that size (augment.two_crops) and `decode_crops` decodes only the boxes
(tf.image.decode_and_crop_jpeg for JPEGs) and resizes them. So a streamed image is cropped from the original,
as torchvision crops the PIL image it opened.

Order and sharding:
- a folder stream is read in the order of the in-memory pipeline (per-epoch permutations of the file list, a
  function of (seed, step)); with several input pipelines each reads only the files of its own slice of every
  global batch, so an epoch's files are partitioned exactly and a resumed run continues where it stopped;
- a TFDS stream gives each input pipeline one part of `tfds.even_splits` (disjoint, together the whole split),
  its files shuffled per epoch with the seed, then a seeded shuffle buffer.
"""

import dataclasses
import logging

import numpy as np
import tensorflow as tf

from tf_simsiam.data import augment as augment_lib
from tf_simsiam.data import folders

log = logging.getLogger("tf_simsiam")


@dataclasses.dataclass
class Stream:
    """A data set read as needed (see the module doc)."""

    num_examples: int
    channels: int
    class_names: tuple = ()

    ordered = False  # True: the pipeline chooses the examples by index (`records(ids)`)

    @property
    def labels(self):
        return None


@dataclasses.dataclass
class FolderStream(Stream):
    """The image files of a folder, with their sizes read from the headers and class-folder labels (or None)."""

    files: tuple = ()
    sizes: np.ndarray = None
    file_labels: np.ndarray = None

    ordered = True

    @property
    def labels(self):
        return self.file_labels

    def records(self, ids):
        """(bytes, (height, width)) of the files with the given indices (a tf.data.Dataset of int64)."""
        files, sizes = tf.constant(list(self.files)), tf.constant(self.sizes, tf.int32)
        return ids.map(lambda i: (tf.io.read_file(files[i]), sizes[i]), num_parallel_calls=tf.data.AUTOTUNE,
                       deterministic=True)

    def decode_subset(self, index, image_size):
        """The images of `index`, each resized on its shorter side to image_size and centre-cropped."""
        return np.stack([centre_crop(folders.decode(tf.io.read_file(self.files[i]), self.channels),
                                     image_size).numpy() for i in index])

    def subset(self, size, seed=0, image_size=None):
        """A seeded random subset of `size` images (all when size is 0) at image_size x image_size (default: the
        smallest shorter side of the folder), as a Split."""
        from tf_simsiam.data.sources import Split
        n = len(self.files)
        index = np.sort(np.random.default_rng(seed).permutation(n)[:size or n])
        labels = None if self.file_labels is None else self.file_labels[index]
        return Split(self.decode_subset(index, image_size or int(self.sizes.min())), labels, self.class_names)


@dataclasses.dataclass
class TfdsStream(Stream):
    """A TFDS split read from its prepared files."""

    name: str = ""
    split: str = "train"
    data_dir: str = None
    shuffle_buffer: int = 10_000

    def examples(self, pipeline=0, pipelines=1, seed=0, decode=False):
        """The raw examples (dicts with "image" bytes unless decode, "label", "tfds_id") of one input
        pipeline's part of the split, files shuffled per epoch with the seed; endless."""
        import tensorflow_datasets as tfds
        split = tfds.even_splits(self.split, n=pipelines)[pipeline] if pipelines > 1 else self.split
        read_config = tfds.ReadConfig(shuffle_seed=seed, shuffle_reshuffle_each_iteration=True, add_tfds_id=True)
        decoders = None if decode else {"image": tfds.decode.SkipDecoding()}
        dataset = tfds.load(self.name, split=split, data_dir=self.data_dir, shuffle_files=True,
                            read_config=read_config, decoders=decoders)
        return dataset.repeat()

    def records(self, pipeline=0, pipelines=1, seed=0):
        """(bytes, (height, width)) of this input pipeline's examples, in a seeded shuffled order; endless."""
        dataset = self.examples(pipeline, pipelines, seed).shuffle(self.shuffle_buffer, seed=seed)
        channels = self.channels
        return dataset.map(lambda example: (example["image"], encoded_size(example["image"], channels)),
                           num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)

    def subset(self, size, seed=0, image_size=None):
        """The first `size` examples after a seeded shuffle, resized on the shorter side to image_size and
        centre-cropped, in memory, as a Split."""
        from tf_simsiam.data.sources import DataError, Split
        if not size:
            raise DataError(f"a data set read as a stream ({self.num_examples} images) needs a subset size for "
                            f"the kNN monitor: set --knn_train_size and --knn_test_size, or --knn_every=0")
        images, labels = [], []
        dataset = self.examples(seed=seed, decode=True).shuffle(self.shuffle_buffer, seed=seed).take(size)
        for example in dataset:
            images.append(centre_crop(example["image"], image_size).numpy())
            labels.append(example["label"].numpy() if "label" in example else -1)
        return Split(np.stack(images), np.array(labels) if "label" in example else None, self.class_names)


def encoded_size(contents, channels):
    """(height, width) int32 of an encoded image: from the JPEG header, else from decoding it."""
    return tf.cond(tf.io.is_jpeg(contents), lambda: tf.image.extract_jpeg_shape(contents)[:2],
                   lambda: tf.shape(folders.decode(contents, channels), out_type=tf.int32)[:2])


def decode_crops(contents, boxes, size, channels):
    """The two resized crops (2, size, size, C) uint8 of one encoded image; boxes (2, 5) from augment.two_crops.

    Only the boxes are decoded from a JPEG (tf.image.decode_and_crop_jpeg); other formats are decoded whole,
    once. Each crop is then resized as augment.crops_of resizes it (a crop, then an antialiased resize of it).
    """
    jpeg = tf.io.is_jpeg(contents)
    whole = tf.cond(jpeg, lambda: tf.zeros([1, 1, channels], tf.uint8), lambda: folders.decode(contents, channels))
    crops = []
    for view in range(2):
        top, left, h, w = [tf.cast(boxes[view, i], tf.int32) for i in range(4)]
        crop = tf.cond(jpeg, lambda: tf.image.decode_and_crop_jpeg(contents, tf.stack([top, left, h, w]),
                                                                     channels=channels),
                       lambda: whole[top:top + h, left:left + w])
        crop = tf.ensure_shape(crop, [None, None, channels])
        box = [tf.zeros([1]), tf.zeros([1]), tf.cast(h, tf.float32)[None], tf.cast(w, tf.float32)[None],
               (boxes[view, 4] > 0.5)[None]]
        crops.append(augment_lib.resized_crops(tf.cast(crop, tf.float32)[None] / 255.0, box, size)[0])
    return tf.cast(tf.round(tf.stack(crops) * 255.0), tf.uint8)


def centre_crop(image, size):
    """torchvision's Resize(size) + CenterCrop(size) of one image (H, W, C) uint8: the evaluation view."""
    height, width = tf.shape(image)[0], tf.shape(image)[1]
    short = tf.minimum(height, width)
    new_h = tf.where(height == short, size, tf.cast(size * height / short, tf.int32))
    new_w = tf.where(width == short, size, tf.cast(size * width / short, tf.int32))
    image = folders.resize_uint8(image, tf.stack([new_h, new_w]))
    top, left = (new_h - size) // 2, (new_w - size) // 2
    return image[top:top + size, left:left + size]
