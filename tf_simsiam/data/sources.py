"""Data sources: where images come from, as uint8 arrays (N, H, W, C) with optional integer labels.

    fashion_mnist     the original IDX files: $TF_SIMSIAM_DATA_DIR, /usr/share/datasets/fashion-mnist/ (Debian
                      package dataset-fashion-mnist), the Keras cache; else keras' download
    tfds:NAME         any TensorFlow Datasets name, e.g. tfds:cifar10 (data_dir as for tfds.load)
    folder:PATH       JPEG/PNG/BMP/GIF files; labels from class sub-folders when there are any
    numpy arrays      `from_arrays(images, labels)` in user code

Every source gives a `Split` per split name ("train", "test"); images are decoded and resized once, up front,
so that bad files are reported by name before training starts and training reads from memory. A TFDS data set
too large for memory (over IN_MEMORY_LIMIT_BYTES at the training size, e.g. ImageNet) is a `Stream` instead:
read as needed, each image resized on its shorter side to the training size and centre-cropped.
"""

import dataclasses
import gzip
import os
import struct

import numpy as np
import tensorflow as tf

FASHION_MNIST_DIRS = ("/usr/share/datasets/fashion-mnist",
                      os.path.join(os.path.expanduser("~"), ".keras", "datasets", "fashion-mnist"))
FASHION_MNIST_FILES = {"train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
                       "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz")}
FASHION_MNIST_CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker",
                         "Bag", "Ankle boot")
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif")
IN_MEMORY_LIMIT_BYTES = 4 * 2 ** 30


class DataError(ValueError):
    """A data source that cannot be read; the message names the source, file or image at fault."""


@dataclasses.dataclass
class Split:
    """Images (N, H, W, C) uint8 and labels (N,) int64, or None when the source has none."""

    images: np.ndarray
    labels: np.ndarray = None
    class_names: tuple = ()

    def __post_init__(self):
        images = np.asarray(self.images)
        if images.ndim == 3:
            images = images[..., None]
        if images.ndim != 4 or images.shape[-1] not in (1, 3) or len(images) == 0:
            raise DataError(f"images must be a non-empty array (N, H, W, C) with C = 1 or 3, got {images.shape}")
        if images.dtype != np.uint8:
            if images.min() < 0 or images.max() > 255:
                raise DataError(f"images must be uint8 or values in [0, 255]; got range "
                                f"[{images.min()}, {images.max()}] ({images.dtype})")
            images = images.astype(np.uint8)
        self.images = images
        if self.labels is not None:
            self.labels = np.asarray(self.labels).astype(np.int64).reshape(-1)
            if len(self.labels) != len(images):
                raise DataError(f"{len(images)} images but {len(self.labels)} labels")

    @property
    def image_shape(self):
        return tuple(self.images.shape[1:])

    @property
    def num_classes(self):
        return int(self.labels.max()) + 1 if self.labels is not None else 0

    def subset(self, size, seed=0):
        """A seeded random subset of `size` examples (all of them when size is 0 or larger than the split)."""
        if not size or size >= len(self.images):
            return self
        index = np.sort(np.random.default_rng(seed).permutation(len(self.images))[:size])
        return Split(self.images[index], None if self.labels is None else self.labels[index], self.class_names)


@dataclasses.dataclass
class Stream:
    """A data set read as needed: `dataset` yields (image uint8 (S, S, C), label) in a file-shuffled order."""

    dataset: tf.data.Dataset
    num_examples: int
    image_shape: tuple
    class_names: tuple = ()

    def subset(self, size, seed=0):
        """The first `size` examples after a seeded shuffle, in memory, as a Split."""
        if not size:
            raise DataError(f"a data set read as a stream ({self.num_examples} images) needs a subset size for "
                            f"the kNN monitor: set --knn_train_size and --knn_test_size, or --knn_every=0")
        images, labels = [], []
        for image, label in self.dataset.shuffle(10_000, seed=seed).take(size).batch(1024):
            images.append(image.numpy())
            labels.append(label.numpy())
        return Split(np.concatenate(images), np.concatenate(labels), self.class_names)


def from_arrays(images, labels=None, class_names=()):
    """A Split from NumPy arrays: images (N, H, W[, C]) uint8 (or values in [0, 255]), labels (N,)."""
    return Split(images, labels, tuple(class_names))


def read_idx(path):
    """Reads an IDX file (gzipped or not) as a NumPy array; the format of the original MNIST files."""
    opener = gzip.open if str(path).endswith(".gz") else open
    try:
        with opener(path, "rb") as f:
            data = f.read()
        zero, dtype_code, ndim = struct.unpack(">HBB", data[:4])
        if zero != 0 or dtype_code != 0x08:
            raise DataError(f"{path}: not an IDX file of unsigned bytes (magic {data[:4].hex()})")
        shape = struct.unpack(f">{ndim}I", data[4:4 + 4 * ndim])
        body = np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim)
        if body.size != int(np.prod(shape)):
            raise DataError(f"{path}: IDX header says shape {shape} but the file holds {body.size} values")
        return body.reshape(shape)
    except (OSError, EOFError, struct.error) as error:
        raise DataError(f"{path}: cannot read IDX file ({error})") from error


def _fashion_mnist_dir():
    candidates = [os.environ["TF_SIMSIAM_DATA_DIR"]] if os.environ.get("TF_SIMSIAM_DATA_DIR") else []
    candidates += list(FASHION_MNIST_DIRS)
    for directory in candidates:
        if all(os.path.exists(os.path.join(directory, f)) for pair in FASHION_MNIST_FILES.values() for f in pair):
            return directory
    return None


def fashion_mnist(split="train"):
    """Fashion-MNIST (60,000 train / 10,000 test, 28x28x1, 10 classes) from local IDX files, else downloaded."""
    if split not in FASHION_MNIST_FILES:
        raise DataError(f"fashion_mnist has splits 'train' and 'test', not {split!r}")
    directory = _fashion_mnist_dir()
    if directory is None:  # not installed: keras downloads the same files into its cache
        import keras
        (x_train, y_train), (x_test, y_test) = keras.datasets.fashion_mnist.load_data()
        images, labels = (x_train, y_train) if split == "train" else (x_test, y_test)
    else:
        image_file, label_file = FASHION_MNIST_FILES[split]
        images = read_idx(os.path.join(directory, image_file))
        labels = read_idx(os.path.join(directory, label_file))
    return Split(images[..., None], labels, FASHION_MNIST_CLASSES)


def tfds_source(name, split="train", data_dir=None, image_size=None, flag="dataset"):
    """A TensorFlow Datasets data set as a Split (downloaded and prepared by tfds on first use); `flag` is the
    command-line flag that named it, for the error messages."""
    import tensorflow_datasets as tfds
    try:
        builder = tfds.builder(name, data_dir=data_dir)
    except Exception as error:  # tfds raises its own DatasetNotFoundError and others
        raise DataError(f"--{flag}=tfds:{name}: {error}") from error
    splits = builder.info.splits  # known once the data set is prepared (tfds.load prepares it on first use)
    tfds_split = split
    if split == "test" and splits and "test" not in splits and "validation" in splits:
        tfds_split = "validation"
    if splits and tfds_split not in splits:
        raise DataError(f"--{flag}=tfds:{name} has no split {split!r} (it has {sorted(splits)})")
    label_feature = builder.info.features["label"] if "label" in builder.info.features else None
    names = tuple(label_feature.names) if hasattr(label_feature, "names") else ()
    shape = builder.info.features["image"].shape
    num_examples = _num_examples(builder, tfds_split)
    size = image_size or shape[0]
    if num_examples and (None in shape[:2] or num_examples * size * size * shape[2] > IN_MEMORY_LIMIT_BYTES):
        if not image_size:
            raise DataError(f"--{flag}=tfds:{name} has images of varying size: set --image_size")
        dataset = tfds.load(name, split=tfds_split, data_dir=data_dir, as_supervised=True, shuffle_files=True)
        dataset = dataset.map(lambda i, l: (_resize_and_centre_crop(i, image_size), l),
                              num_parallel_calls=tf.data.AUTOTUNE)
        return Stream(dataset, num_examples, (image_size, image_size, shape[2]), names)
    dataset = tfds.load(name, split=tfds_split, data_dir=data_dir, as_supervised=True)
    images, labels = [], []
    for image, label in dataset.batch(1024) if image_size is None else dataset.map(
            lambda i, l: (_resize(i, image_size), l)).batch(1024):
        images.append(image.numpy())
        labels.append(label.numpy())
    return Split(np.concatenate(images), np.concatenate(labels), names)


def _num_examples(builder, split):
    """Examples in a prepared TFDS split, or None while the data set is not prepared."""
    return builder.info.splits[split].num_examples if split in builder.info.splits else None


def _to_uint8(image):
    return tf.cast(tf.clip_by_value(tf.round(image), 0, 255), tf.uint8)


def _resize(image, size):
    return _to_uint8(tf.image.resize(image, (size, size), method="bilinear", antialias=True))


def _resize_and_centre_crop(image, size):
    height, width = tf.shape(image)[0], tf.shape(image)[1]
    scale = size / tf.cast(tf.minimum(height, width), tf.float32)
    new = tf.cast(tf.math.ceil(tf.cast([height, width], tf.float32) * scale), tf.int32)
    image = tf.image.resize(image, new, method="bilinear", antialias=True)
    top, left = (new[0] - size) // 2, (new[1] - size) // 2
    return _to_uint8(image[top:top + size, left:left + size])


def _list_folder(path, flag="dataset"):
    if not os.path.isdir(path):
        raise DataError(f"--{flag}=folder:{path}: no such folder")
    files, labels, classes = [], [], sorted(
        d for d in os.listdir(path) if os.path.isdir(os.path.join(path, d)) and not d.startswith("."))
    for root, _, names in sorted(os.walk(path)):
        for name in sorted(names):
            if name.lower().endswith(IMAGE_EXTENSIONS):
                rel = os.path.relpath(root, path)
                files.append(os.path.join(root, name))
                labels.append(-1 if rel == "." else classes.index(rel.split(os.sep)[0]))
    if not files:
        raise DataError(f"--{flag}=folder:{path}: no images ({', '.join(IMAGE_EXTENSIONS)}) in it or below it")
    labelled = [label >= 0 for label in labels]
    if any(labelled) and not all(labelled):
        loose = files[labelled.index(False)]
        raise DataError(f"--{flag}=folder:{path}: {loose} stands beside class folders; put every image in a "
                        f"class folder, or none")
    return files, (np.array(labels) if all(labelled) else None), tuple(classes) if all(labelled) else ()


def folder(path, image_size, channels=3, flag="dataset"):
    """Every image below `path`, decoded, resized to image_size x image_size, with class-folder labels."""
    files, labels, classes = _list_folder(path, flag)
    images = np.empty((len(files), image_size, image_size, channels), np.uint8)
    for i, file in enumerate(files):
        try:
            image = tf.io.decode_image(tf.io.read_file(file), channels=channels, expand_animations=False)
        except (tf.errors.InvalidArgumentError, tf.errors.NotFoundError) as error:
            raise DataError(f"cannot decode image {file}: {error.message.splitlines()[0]}") from None
        images[i] = _resize(image, image_size).numpy()
    return Split(images, labels, classes)


def resized(split, image_size):
    """The split at image_size x image_size (antialiased), as uint8; streams and splits of that size as they are."""
    if isinstance(split, Stream) or not image_size or split.image_shape[:2] == (image_size, image_size):
        return split
    images = tf.image.resize(split.images, (image_size, image_size), antialias=True)
    return Split(np.clip(np.round(images.numpy()), 0, 255).astype(np.uint8), split.labels,
                 split.class_names)


def load(dataset, split="train", data_dir=None, image_size=None, channels=3, flag="dataset"):
    """A Split from a dataset name: "fashion_mnist", "tfds:NAME" or "folder:PATH". `flag` is the command-line
    flag that named the data set, for the error messages."""
    if dataset == "fashion_mnist":
        return fashion_mnist(split)
    if dataset.startswith("tfds:") and len(dataset) > 5:
        return tfds_source(dataset[5:], split, data_dir, image_size, flag=flag)
    if dataset.startswith("folder:") and len(dataset) > 7:
        path = dataset[7:]
        if not os.path.isdir(path):  # the folder itself first: a missing path is the first thing to fix
            raise DataError(f"--{flag}={dataset}: no such folder")
        if image_size is None:
            raise DataError(f"--{flag}={dataset} needs --image_size: its images are resized to a square of that "
                            f"side (for example --image_size=32 for small images, 224 for photographs)")
        if split != "train":  # a folder with train/ and test/ sub-folders gives both splits
            path = os.path.join(path, split)
        elif os.path.isdir(os.path.join(path, "train")):
            path = os.path.join(path, "train")
        return folder(path, image_size, channels, flag=flag)
    raise DataError(f"unknown --{flag}={dataset!r}; expected fashion_mnist, tfds:NAME or folder:PATH")
