"""Folders of image files: listing, image sizes read from the file headers, decoding at a bounded shorter side.

A folder's images keep their own size and aspect ratio: RandomResizedCrop samples its boxes on each original
(see augment.crop_boxes). In memory, an image whose shorter side exceeds `max_side` is stored downscaled to that
shorter side (antialiased, aspect ratio kept), as torchvision's Resize(max_side) would; streamed images are
decoded from the file at full size, cropped while decoding.
"""

import concurrent.futures
import os
import struct

import numpy as np
import tensorflow as tf

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif")
_JPEG_SOF = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}


class UnreadableImage(ValueError):
    """A file that is not an image tf_simsiam can decode; the message says why."""


def list_folder(path):
    """(files, labels or None, class names) of every image file below `path`, in a fixed (sorted) order.

    Labels come from class sub-folders (PATH/CLASS/...); files of other extensions are ignored. Raises
    ValueError for images beside class folders (a half-labelled folder)."""
    files, labels, classes = [], [], sorted(
        d for d in os.listdir(path) if os.path.isdir(os.path.join(path, d)) and not d.startswith("."))
    for root, dirs, names in os.walk(path):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in sorted(names):
            if name.lower().endswith(IMAGE_EXTENSIONS) and not name.startswith("."):
                rel = os.path.relpath(root, path)
                files.append(os.path.join(root, name))
                labels.append(-1 if rel == "." else classes.index(rel.split(os.sep)[0]))
    labelled = [label >= 0 for label in labels]
    if any(labelled) and not all(labelled):
        loose = files[labelled.index(False)]
        raise ValueError(f"{loose} stands beside class folders; put every image in a class folder, or none")
    return files, (np.array(labels, np.int64) if files and all(labelled) else None), \
        tuple(classes) if files and all(labelled) else ()


def header_size(path):
    """(height, width) of a JPEG, PNG, GIF or BMP file, read from its header without decoding it."""
    try:
        with open(path, "rb") as f:
            head = f.read(26)
            if head[:8] == b"\x89PNG\r\n\x1a\n" and head[12:16] == b"IHDR":
                width, height = struct.unpack(">II", head[16:24])
            elif head[:6] in (b"GIF87a", b"GIF89a"):
                width, height = struct.unpack("<HH", head[6:10])
            elif head[:2] == b"BM" and len(head) >= 26:
                if struct.unpack("<I", head[14:18])[0] == 12:  # OS/2 core header: 16-bit sizes
                    width, height = struct.unpack("<HH", head[18:22])
                else:
                    width, height = struct.unpack("<ii", head[18:26])
                height = abs(height)  # negative: rows stored top-down
            elif head[:2] == b"\xff\xd8":
                height, width = _jpeg_size(f)
            else:
                raise UnreadableImage("not a JPEG, PNG, GIF or BMP file, or its header is damaged")
    except (OSError, struct.error) as error:
        raise UnreadableImage(f"cannot read its header ({error})") from None
    if width <= 0 or height <= 0:
        raise UnreadableImage(f"its header gives a size of {width}x{height}")
    return int(height), int(width)


def _jpeg_size(f):
    """(height, width) from the frame header (SOFn) of a JPEG file, walking the markers from byte 2."""
    f.seek(2)
    while True:
        byte = f.read(1)
        if not byte:
            raise UnreadableImage("a JPEG file without a frame header (truncated?)")
        if byte != b"\xff":
            continue
        marker = f.read(1)
        while marker == b"\xff":  # fill bytes
            marker = f.read(1)
        if not marker:
            raise UnreadableImage("a JPEG file without a frame header (truncated?)")
        code = marker[0]
        if code == 0x01 or 0xD0 <= code <= 0xD9:  # markers without a length
            continue
        length = struct.unpack(">H", f.read(2))[0]
        if code in _JPEG_SOF:
            _, height, width = struct.unpack(">BHH", f.read(5))
            return height, width
        f.seek(length - 2, os.SEEK_CUR)


def scan(files, threads=None):
    """(sizes (N, 2) int32 with -1 rows for unreadable files, {file: reason} of those) from the headers."""
    sizes = np.full((len(files), 2), -1, np.int32)
    bad = {}

    def read(i):
        try:
            sizes[i] = header_size(files[i])
        except UnreadableImage as error:
            bad[files[i]] = str(error)

    with concurrent.futures.ThreadPoolExecutor(threads or min(16, 2 * (os.cpu_count() or 1))) as pool:
        list(pool.map(read, range(len(files))))
    return sizes, bad


def bounded_size(height, width, max_side):
    """The size an image is kept at in memory: its shorter side at most max_side, the aspect ratio kept (the
    longer side truncated, as torchvision's Resize(max_side)); images within the bound keep their size."""
    short, long = min(height, width), max(height, width)
    if not max_side or short <= max_side:
        return height, width
    new_long = int(max_side * long / short)
    return (max_side, new_long) if height <= width else (new_long, max_side)


def decode(contents, channels):
    """A decoded image (H, W, channels) uint8 from the bytes of a file of any supported format."""
    return tf.io.decode_image(contents, channels=channels, expand_animations=False)


def resize_uint8(image, size):
    """An antialiased bilinear resize of uint8 images to size (height, width), rounded back to uint8."""
    resized = tf.image.resize(image, size, method="bilinear", antialias=True)
    return tf.cast(tf.clip_by_value(tf.round(resized), 0, 255), tf.uint8)


def decode_all(files, channels, max_side, threads=None):
    """(list of uint8 arrays (h, w, channels) or None, their original sizes (N, 2), {file: reason} of the
    unreadable ones): each image at most max_side on the shorter side."""
    images = [None] * len(files)
    sizes = np.full((len(files), 2), -1, np.int32)
    bad = {}

    def read(i):
        try:
            image = decode(tf.io.read_file(files[i]), channels)
        except (tf.errors.InvalidArgumentError, tf.errors.NotFoundError, tf.errors.UnknownError) as error:
            bad[files[i]] = error.message.splitlines()[0] if error.message else type(error).__name__
            return
        height, width = image.shape[:2]
        sizes[i] = height, width
        size = bounded_size(height, width, max_side)
        images[i] = (image if size == (height, width) else resize_uint8(image, size)).numpy()

    with concurrent.futures.ThreadPoolExecutor(threads or min(8, os.cpu_count() or 1)) as pool:
        list(pool.map(read, range(len(files))))
    return images, sizes, bad


def canvas(images, channels):
    """(canvases (N, H, W, C) uint8 with each image in its top-left corner, sizes (N, 2) int32)."""
    sizes = np.array([image.shape[:2] for image in images], np.int32).reshape(-1, 2)
    height, width = sizes.max(axis=0) if len(images) else (0, 0)
    out = np.zeros((len(images), height, width, channels), np.uint8)
    for i, image in enumerate(images):
        out[i, :image.shape[0], :image.shape[1]] = image
    return out, sizes
