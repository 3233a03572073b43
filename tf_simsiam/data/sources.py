"""Data sources: where images come from, as uint8 arrays (N, H, W, C) with optional integer labels.

    fashion_mnist     the original IDX files: $TF_SIMSIAM_DATA_DIR, /usr/share/datasets/fashion-mnist/ (Debian
                      package dataset-fashion-mnist), the Keras cache; else keras' download
    tfds:NAME         any TensorFlow Datasets name, e.g. tfds:cifar10 (data_dir as for tfds.load)
    folder:PATH       JPEG/PNG/BMP/GIF files; labels from class sub-folders when there are any
    numpy arrays      `from_arrays(images, labels)` in user code

Every source gives a `Split` per split name ("train", "test"), or a `streams.Stream` when its images would not
fit in memory. Images keep their own size and aspect ratio, as torchvision's RandomResizedCrop sees them: a
Split of images of several sizes holds them on a zero-padded canvas with each image's (height, width) in
`sizes`, at most `max_side` on the shorter side. `resized(split, size)` gives the evaluation view (shorter side
to size, centre crop) that the kNN monitor and the downstream tools use.

How a source is read is set by `ReadOptions`: `stream` ("auto" streams what would exceed `memory_budget_gb`),
`max_side`, `min_side` and `max_unreadable` (the fraction of unreadable files skipped, logged by path, before
the folder counts as broken).
"""

import dataclasses
import gzip
import logging
import os
import struct

import numpy as np

from tf_simsiam.data import folders
from tf_simsiam.data.folders import IMAGE_EXTENSIONS
from tf_simsiam.data.streams import FolderStream, Stream, TfdsStream, centre_crop

log = logging.getLogger("tf_simsiam")

FASHION_MNIST_DIRS = ("/usr/share/datasets/fashion-mnist",
                      os.path.join(os.path.expanduser("~"), ".keras", "datasets", "fashion-mnist"))
FASHION_MNIST_FILES = {"train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
                       "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz")}
FASHION_MNIST_CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker",
                         "Bag", "Ankle boot")
STREAM_MODES = ("auto", "true", "false")


@dataclasses.dataclass(frozen=True)
class ReadOptions:
    """How image sources are read (the CLI flags of the same names).

    stream: "auto" reads a data set from disk as needed when its decoded images would exceed
      memory_budget_gb, "true" always, "false" never (an error names the flag when it does not fit).
    max_side: in memory, images are kept at most this size on the shorter side (0: twice the training size).
    min_side: images smaller than this on the shorter side are an error naming them (0: any size).
    max_unreadable: the fraction of a folder's image files that may be unreadable: each is logged by path and
      skipped; more stops with the list.
    """

    stream: str = "auto"
    memory_budget_gb: float = 4.0
    max_side: int = 0
    min_side: int = 0
    max_unreadable: float = 0.01

    def __post_init__(self):
        if self.stream not in STREAM_MODES:
            raise ValueError(f"--stream must be one of {STREAM_MODES}, got {self.stream!r}")
        if not self.memory_budget_gb > 0:
            raise ValueError(f"--memory_budget_gb must be > 0, got {self.memory_budget_gb}")
        for name in ("max_side", "min_side"):
            if getattr(self, name) < 0:
                raise ValueError(f"--{name} must be >= 0, got {getattr(self, name)}")
        if not 0 <= self.max_unreadable <= 1:
            raise ValueError(f"--max_unreadable must be a fraction in [0, 1], got {self.max_unreadable}")

    def side(self, image_size):
        return self.max_side or 2 * image_size

    def fits(self, num_bytes):
        return num_bytes <= self.memory_budget_gb * 2 ** 30


class DataError(ValueError):
    """A data source that cannot be read; the message names the source, file or image at fault."""


@dataclasses.dataclass
class Split:
    """Images (N, H, W, C) uint8 and labels (N,) int64, or None when the source has none.

    Images of several sizes lie on a zero-padded canvas, each in its top-left corner, with `sizes` (N, 2) int32
    their (height, width); sizes is None when every image fills the canvas.
    """

    images: np.ndarray
    labels: np.ndarray = None
    class_names: tuple = ()
    sizes: np.ndarray = None

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
        if self.sizes is not None:
            self.sizes = np.asarray(self.sizes, np.int32).reshape(-1, 2)
            if len(self.sizes) != len(images):
                raise DataError(f"{len(images)} images but {len(self.sizes)} sizes")
            if (self.sizes == images.shape[1:3]).all():
                self.sizes = None

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
        return self.take(index)

    def take(self, index):
        """The examples of `index`, in that order."""
        return Split(self.images[index], None if self.labels is None else self.labels[index], self.class_names,
                     None if self.sizes is None else self.sizes[index])

    @property
    def num_examples(self):
        return len(self.images)


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


def tfds_source(name, split="train", data_dir=None, image_size=None, channels=3, flag="dataset",
                options=ReadOptions()):
    """A TensorFlow Datasets data set as a Split or a TfdsStream (downloaded and prepared by tfds on first use);
    `flag` is the command-line flag that named it, for the error messages."""
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
    channels = shape[2] if shape[2] in (1, 3) else channels
    num_examples = _num_examples(builder, tfds_split)
    varying = None in shape[:2]
    if varying and not image_size:
        raise DataError(f"--{flag}=tfds:{name} has images of varying size: set --image_size")
    # decoded bytes in memory: fixed-size images as they are; others at the bounded side, on a canvas that
    # holds the longer side of either orientation (estimated at 4/3 of the bounded side)
    side = options.side(image_size) if varying else max(shape[:2])
    height, width = (side * 4 // 3,) * 2 if varying else shape[:2]
    estimate = (num_examples or 0) * height * width * channels
    stream = options.stream == "true" or (options.stream == "auto" and not options.fits(estimate))
    if num_examples and stream:
        return TfdsStream(num_examples, channels, names, name=name, split=tfds_split, data_dir=data_dir)
    if num_examples and not options.fits(estimate):
        raise DataError(f"--{flag}=tfds:{name} needs about {estimate / 2 ** 30:.1f} GB in memory, over "
                        f"--memory_budget_gb={options.memory_budget_gb}, and --stream=false: stream it")
    dataset = tfds.load(name, split=tfds_split, data_dir=data_dir)
    labelled = "label" in builder.info.features
    images, labels = [], []
    for example in dataset.batch(1024) if not varying else dataset:
        image = example["image"]
        if varying:
            height, width = image.shape[:2]
            size = folders.bounded_size(height, width, side)
            image = image if size == (height, width) else folders.resize_uint8(image, size)
        images.append(image.numpy())
        if labelled:
            labels.append(example["label"].numpy())
    labels = (np.concatenate(labels) if not varying else np.array(labels)) if labelled else None
    if not varying:
        return Split(np.concatenate(images), labels, names)
    canvas, sizes = _canvas_and_sizes(images, channels, f"--{flag}=tfds:{name}", options)
    return Split(canvas, labels, names, sizes)


def _num_examples(builder, split):
    """Examples in a prepared TFDS split, or None while the data set is not prepared."""
    return builder.info.splits[split].num_examples if split in builder.info.splits else None


def _canvas_and_sizes(images, channels, name, options):
    canvas, sizes = folders.canvas(images, channels)
    if not options.fits(canvas.nbytes):
        raise DataError(f"{name}: the images need {canvas.nbytes / 2 ** 30:.1f} GB in memory (padded to "
                        f"{canvas.shape[1]}x{canvas.shape[2]}), over --memory_budget_gb="
                        f"{options.memory_budget_gb}: pass --stream=true (or auto), or a smaller --max_side")
    return canvas, sizes


def _list_folder(path, flag="dataset"):
    if not os.path.isdir(path):
        raise DataError(f"--{flag}=folder:{path}: no such folder")
    try:
        files, labels, classes = folders.list_folder(path)
    except ValueError as error:
        raise DataError(f"--{flag}=folder:{path}: {error}") from None
    if not files:
        raise DataError(f"--{flag}=folder:{path}: no images ({', '.join(IMAGE_EXTENSIONS)}) in it or below it")
    return files, labels, classes


def _drop_unreadable(files, labels, bad, name, options):
    """The readable files and their labels; logs each unreadable file; raises beyond options.max_unreadable."""
    if not bad:
        return files, labels, np.ones(len(files), bool)
    bad = {file: bad[file] for file in files if file in bad}  # in the folder's order
    listing = "; ".join(f"{file}: {reason}" for file, reason in list(bad.items())[:10])
    more = f" (and {len(bad) - 10} more)" if len(bad) > 10 else ""
    if len(bad) == len(files):
        raise DataError(f"{name}: none of its {len(files)} image files can be read: {listing}{more}")
    if len(bad) > options.max_unreadable * len(files):
        raise DataError(f"{name}: {len(bad)} of {len(files)} image files cannot be read, more than "
                        f"--max_unreadable={options.max_unreadable} of them: {listing}{more}")
    for file, reason in bad.items():
        log.warning("skipping unreadable image %s: %s", file, reason)
    keep = np.array([file not in bad for file in files])
    return [f for f, k in zip(files, keep) if k], None if labels is None else labels[keep], keep


def _check_min_side(files, sizes, name, options):
    small = [(file, size) for file, size in zip(files, sizes) if min(size) < options.min_side]
    if small:
        listing = "; ".join(f"{file} ({h}x{w})" for file, (h, w) in small[:10])
        raise DataError(f"{name}: {len(small)} image(s) smaller than --min_side={options.min_side} on the shorter "
                        f"side: {listing}{' ...' if len(small) > 10 else ''}; remove them or lower --min_side")


def folder(path, image_size, channels=3, flag="dataset", options=ReadOptions()):
    """Every image below `path` with class-folder labels (or None): a Split of the images at their own size
    (at most options.side(image_size) on the shorter side), or a FolderStream when they would not fit in
    options.memory_budget_gb (with options.stream="auto") or when options.stream="true"."""
    name = f"--{flag}=folder:{path}"
    files, labels, classes = _list_folder(path, flag)
    side = options.side(image_size)
    stream = options.stream == "true"
    if options.stream == "auto" or stream:
        sizes, bad = folders.scan(files)
        files, labels, keep = _drop_unreadable(files, labels, bad, name, options)
        sizes = sizes[keep]
        _check_min_side(files, sizes, name, options)
        bounded = np.array([folders.bounded_size(h, w, side) for h, w in sizes]).reshape(-1, 2)
        in_memory = len(files) * int(bounded[:, 0].max()) * int(bounded[:, 1].max()) * channels
        stream = stream or not options.fits(in_memory)
        if stream:
            why = "" if options.stream == "true" else (
                f" ({in_memory / 2 ** 30:.1f} GB in memory at --max_side={side} would exceed "
                f"--memory_budget_gb={options.memory_budget_gb:g})")
            log.info("%s: %d images streamed from disk%s", name, len(files), why)
            return FolderStream(len(files), channels, classes, files=tuple(files), sizes=sizes, file_labels=labels)
    images, sizes, bad = folders.decode_all(files, channels, side)
    files, labels, keep = _drop_unreadable(files, labels, bad, name, options)
    images = [image for image, k in zip(images, keep) if k]
    _check_min_side(files, sizes[keep], name, options)  # on the original sizes
    canvas, sizes = _canvas_and_sizes(images, channels, name, options)
    return Split(canvas, labels, classes, sizes)


def resized(split, image_size):
    """The evaluation view of a split: each image resized on its shorter side to image_size and centre-cropped
    (torchvision's Resize + CenterCrop; a plain resize for square images), uint8; streams, and splits of square
    images of that size, as they are."""
    if isinstance(split, Stream) or not image_size:
        return split
    if split.sizes is None and split.image_shape[:2] == (image_size, image_size):
        return split
    if split.sizes is None:
        height, width = split.image_shape[:2]
        if height == width:
            images = folders.resize_uint8(split.images, (image_size, image_size)).numpy()
        else:
            images = np.stack([centre_crop(image, image_size).numpy() for image in split.images])
    else:
        images = np.stack([centre_crop(image[:h, :w], image_size).numpy()
                           for image, (h, w) in zip(split.images, split.sizes)])
    return Split(images, split.labels, split.class_names)


def load(dataset, split="train", data_dir=None, image_size=None, channels=3, flag="dataset",
         options=ReadOptions()):
    """A Split (or a Stream) from a dataset name: "fashion_mnist", "tfds:NAME" or "folder:PATH". `flag` is the
    command-line flag that named the data set, for the error messages."""
    if dataset == "fashion_mnist":
        return fashion_mnist(split)
    if dataset.startswith("tfds:") and len(dataset) > 5:
        return tfds_source(dataset[5:], split, data_dir, image_size, channels, flag=flag, options=options)
    if dataset.startswith("folder:") and len(dataset) > 7:
        path = dataset[7:]
        if not os.path.isdir(path):  # the folder itself first: a missing path is the first thing to fix
            raise DataError(f"--{flag}={dataset}: no such folder")
        if image_size is None:
            raise DataError(f"--{flag}={dataset} needs --image_size, the side of the square views it trains on "
                            f"(for example --image_size=32 for small images, 224 for photographs)")
        if split != "train":  # a folder with train/ and test/ sub-folders gives both splits
            path = os.path.join(path, split)
        elif os.path.isdir(os.path.join(path, "train")):
            path = os.path.join(path, "train")
        return folder(path, image_size, channels, flag=flag, options=options)
    raise DataError(f"unknown --{flag}={dataset!r}; expected fashion_mnist, tfds:NAME or folder:PATH")
