"""Folders of images of many sizes, in memory and streamed: crops from the originals as torchvision draws them,
the same batches either way, exact sharding, unreadable files, and a local TFDS data set read as a stream."""

import logging
import math
import os
import struct

import numpy as np
import pytest
import tensorflow as tf

from tf_simsiam.data import augment, folders, pipeline, sources, streams

SCALE, RATIO = (0.2, 1.0), (3 / 4, 4 / 3)
RECIPE = augment.Recipe(16, blur_prob=0.0)


def write_bmp(path, image):
    """A 24-bit BMP (bottom-up rows, padded to 4 bytes), written by hand: TensorFlow has no BMP encoder."""
    height, width = image.shape[:2]
    row = (3 * width + 3) // 4 * 4
    pixels = b"".join(image[y, :, ::-1].tobytes().ljust(row, b"\0") for y in range(height - 1, -1, -1))
    header = struct.pack("<2sIHHI", b"BM", 54 + len(pixels), 0, 0, 54)
    info = struct.pack("<IiiHHIIiiII", 40, width, height, 1, 24, 0, len(pixels), 2835, 2835, 0, 0)
    with open(path, "wb") as f:
        f.write(header + info + pixels)


def mixed_folder(path, count=240, seed=0):
    """`count` images of varied sizes and aspect ratios (shorter side 24-60, ratios 1:3 to 3:1) as JPEG, PNG
    (grey, RGB, RGBA) and BMP, plus a corrupt JPEG and a text file. Returns {file: (height, width)}."""
    rng = np.random.default_rng(seed)
    os.makedirs(path, exist_ok=True)
    sizes = {}
    for i in range(count):
        short, ratio = int(rng.integers(24, 61)), float(np.exp(rng.uniform(math.log(1 / 3), math.log(3))))
        h, w = (short, int(short * ratio)) if ratio >= 1 else (int(short / ratio), short)
        kind = ("jpg", "png_rgb", "png_grey", "png_rgba", "bmp", "jpg_grey")[i % 6]
        channels = {"png_grey": 1, "jpg_grey": 1, "png_rgba": 4}.get(kind, 3)
        image = rng.integers(0, 256, (h, w, channels)).astype(np.uint8)
        file = os.path.join(path, f"{i:04d}.{kind.split('_')[0]}")
        if kind.startswith("jpg"):
            tf.io.write_file(file, tf.io.encode_jpeg(image, quality=90, progressive=i % 12 == 0))
        elif kind == "bmp":
            write_bmp(file, image)
        else:
            tf.io.write_file(file, tf.io.encode_png(image))
        sizes[file] = (h, w)
    with open(os.path.join(path, "broken.jpg"), "wb") as f:
        f.write(b"\xff\xd8\xff\xe0 this is not a JPEG")
    with open(os.path.join(path, "notes.txt"), "w") as f:
        f.write("not an image")
    return sizes


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    path = str(tmp_path_factory.mktemp("mixed"))
    return path, mixed_folder(path)


def get_params_numpy(rng, height, width, scale=SCALE, ratio=RATIO):
    """A NumPy transcription of torchvision's RandomResizedCrop.get_params (Python floats, as there)."""
    area = height * width
    log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
    for _ in range(10):
        target_area = area * rng.uniform(scale[0], scale[1])
        aspect_ratio = math.exp(rng.uniform(log_ratio[0], log_ratio[1]))
        w = int(round(math.sqrt(target_area * aspect_ratio)))
        h = int(round(math.sqrt(target_area / aspect_ratio)))
        if 0 < w <= width and 0 < h <= height:
            return int(rng.integers(0, height - h + 1)), int(rng.integers(0, width - w + 1)), h, w
    in_ratio = float(width) / float(height)
    if in_ratio < min(ratio):
        w, h = width, int(round(width / min(ratio)))
    elif in_ratio > max(ratio):
        h, w = height, int(round(height * max(ratio)))
    else:
        w, h = width, height
    return (height - h) // 2, (width - w) // 2, h, w


def ks_statistic(a, b):
    grid = np.sort(np.concatenate([a, b]))
    return np.max(np.abs(np.searchsorted(np.sort(a), grid, "right") / len(a)
                         - np.searchsorted(np.sort(b), grid, "right") / len(b)))


def test_headers_give_the_decoded_sizes_of_every_format(folder):
    path, sizes = folder
    files, _, _ = folders.list_folder(path)
    assert not any(f.endswith(".txt") for f in files)  # non-image files are not listed
    scanned, bad = folders.scan(files)
    assert list(bad) == [os.path.join(path, "broken.jpg")]
    for file, size in zip(files, scanned):
        if file in sizes:
            assert tuple(size) == sizes[file], file
            decoded = folders.decode(tf.io.read_file(file), 3)
            assert tuple(decoded.shape) == (*sizes[file], 3), file


def test_in_memory_folder_keeps_each_image_at_its_own_size_and_skips_the_corrupt_file(folder, caplog):
    path, sizes = folder
    with caplog.at_level(logging.WARNING, logger="tf_simsiam"):
        split = sources.load(f"folder:{path}", image_size=16, options=sources.ReadOptions(max_side=64))
    assert f"skipping unreadable image {os.path.join(path, 'broken.jpg')}" in caplog.text
    assert split.num_examples == len(sizes) and split.images.shape[-1] == 3
    expected = [folders.bounded_size(h, w, 64) for _, (h, w) in sorted(sizes.items())]
    np.testing.assert_array_equal(split.sizes, expected)
    assert split.images.shape[1:3] == tuple(np.max(expected, axis=0))
    # each image sits in the top-left corner of its canvas, zeros beyond it
    h, w = split.sizes[0]
    assert not split.images[0, h:].any() and not split.images[0, :, w:].any()
    grey = sorted(sizes).index(os.path.join(path, "0002.png"))  # a grey PNG, converted to 3 equal channels
    hg, wg = split.sizes[grey]
    image = split.images[grey, :hg, :wg]
    assert (image[..., 0] == image[..., 1]).all() and (image[..., 1] == image[..., 2]).all()


def test_crop_boxes_follow_torchvision_on_each_images_own_size(folder):
    """Area fraction and log aspect ratio of the boxes drawn on the folder's own sizes against the NumPy
    transcription of get_params on the same sizes: two-sample Kolmogorov-Smirnov statistic under the 0.1%
    critical value (1.95 * sqrt(2 / n) for n boxes a side), and means within 4 standard errors."""
    _, sizes = folder
    size_array = np.array(list(sizes.values()), np.int32)
    boxes = np.concatenate([augment.two_crops_compiled([5, step], RECIPE, size_array).numpy().reshape(-1, 5)
                            for step in range(10)])
    heights, widths = np.tile(np.repeat(size_array, 2, axis=0), (10, 1)).T
    rng = np.random.default_rng(0)
    reference = np.array([get_params_numpy(rng, h, w) for h, w in zip(heights, widths)], np.float64)
    n = len(boxes)
    critical = 1.95 * math.sqrt(2 / n)
    for ours, theirs in ((boxes[:, 2] * boxes[:, 3] / (heights * widths),
                          reference[:, 2] * reference[:, 3] / (heights * widths)),
                         (np.log(boxes[:, 3] / boxes[:, 2]), np.log(reference[:, 3] / reference[:, 2]))):
        assert ks_statistic(ours, theirs) < critical
        assert abs(ours.mean() - theirs.mean()) < 4 * math.sqrt(ours.var() / n + theirs.var() / n)
    top, left, h, w = boxes[:, :4].T
    assert (top >= 0).all() and (left >= 0).all() and (top + h <= heights).all() and (left + w <= widths).all()
    # crops land everywhere: in long images, most boxes reach beyond the centred square (a centre-cropped copy
    # would give none), as often as torchvision's do
    wide = widths >= 2 * heights
    square_left = (widths - heights) / 2

    def beyond(left, w):
        return ((left < square_left) | (left + w > square_left + heights))[wide]

    assert wide.sum() > 200 and beyond(left, w).mean() > 0.5
    assert abs(beyond(left, w).mean() - beyond(reference[:, 1], reference[:, 3]).mean()) < 0.05
    centres = np.stack([(top + h / 2) / heights, (left + w / 2) / widths], 1)
    assert np.histogramdd(centres, bins=4, range=[(0, 1), (0, 1)])[0][1:3, :].min() > 0


def test_the_fallback_is_torchvisions_centre_crop():
    # a 1 x 100 image: no (area, ratio) draw fits, so the centre crop with the ratio clamped to 4/3
    top, left, h, w = [t.numpy() for t in augment.crop_boxes(tf.constant([0, 1], tf.int64), 3, 1.0, 100.0,
                                                             SCALE, RATIO)]
    reference = get_params_numpy(np.random.default_rng(0), 1, 100)
    for i in range(3):
        assert (top[i], left[i], h[i], w[i]) == reference == (0, 49, 1, 1)


def test_streaming_and_in_memory_give_the_same_batches(folder):
    """Same order and boxes (drawn by the same compiled function on the same sizes). Pixels: PNG and BMP crops
    go through two computations of the same resize (a canvas with masked weights, or the decoded crop alone),
    float32 sums in another order, so a value within rounding of a level boundary may land one level away (and
    the colour stages may carry it a level further). A JPEG crop is decoded by tf.image.decode_and_crop_jpeg,
    whose chroma upsampling at the crop's edges differs from decoding the whole image: a small mean difference."""
    path, _ = folder
    options = dict(max_side=1000)  # no image is downscaled in memory: both read the originals
    memory = sources.load(f"folder:{path}", image_size=16, options=sources.ReadOptions(stream="false", **options))
    stream = sources.load(f"folder:{path}", image_size=16, options=sources.ReadOptions(stream="true", **options))
    assert isinstance(memory, sources.Split) and isinstance(stream, streams.FolderStream)
    np.testing.assert_array_equal(memory.sizes, stream.sizes)
    a = np.concatenate([b.numpy() for b in pipeline.pretrain_dataset(memory, 32, RECIPE, seed=3).take(3)])
    b = np.concatenate([b.numpy() for b in pipeline.pretrain_dataset(stream, 32, RECIPE, seed=3).take(3)])
    ids = np.concatenate([pipeline._examples_of_batch(step, 32, memory.num_examples, 3).numpy()
                          for step in range(3)])
    jpeg = np.array([stream.files[i].endswith(".jpg") for i in ids])
    diff = np.abs(a.astype(int) - b.astype(int))
    assert diff[~jpeg].max() <= 2 and (diff[~jpeg] == 0).mean() > 0.995
    assert jpeg.sum() > 10 and diff[jpeg].mean() < 0.5


def test_a_folder_over_the_memory_budget_is_streamed(folder, caplog):
    path, sizes = folder
    with caplog.at_level(logging.INFO, logger="tf_simsiam"):
        stream = sources.load(f"folder:{path}", image_size=16, options=sources.ReadOptions(memory_budget_gb=1e-4))
    assert isinstance(stream, streams.FolderStream) and stream.num_examples == len(sizes)
    assert "streamed from disk" in caplog.text and "--memory_budget_gb=0.0001" in caplog.text
    small = sources.load(f"folder:{path}", image_size=16)
    assert isinstance(small, sources.Split)
    with pytest.raises(sources.DataError, match="--memory_budget_gb=0.0001: pass --stream=true"):
        sources.load(f"folder:{path}", image_size=16, options=sources.ReadOptions(stream="false",
                                                                                  memory_budget_gb=1e-4))


def constant_folder(path, count):
    """PNG images of varied sizes, image i filled with the value i: crops of it keep the value."""
    rng = np.random.default_rng(1)
    for i in range(count):
        h, w = (int(v) for v in rng.integers(8, 40, 2))
        tf.io.write_file(os.path.join(path, f"{i:03d}.png"), tf.io.encode_png(np.full((h, w, 1), i, np.uint8)))
    return path


class Context:
    def __init__(self, pipelines, pipeline_id, replicas):
        self.num_input_pipelines, self.input_pipeline_id, self.num_replicas_in_sync = pipelines, pipeline_id, replicas


@pytest.mark.parametrize("stream", ["true", "false"])
def test_input_pipelines_partition_every_epoch_and_a_resumed_run_continues_it(tmp_path, stream):
    constant_folder(str(tmp_path), 48)
    data = sources.load(f"folder:{tmp_path}", image_size=8, channels=1,
                        options=sources.ReadOptions(stream=stream))
    plain = augment.Recipe(8, jitter_prob=0.0, grayscale_prob=0.0, blur_prob=0.0)

    def ids(pipeline_id, steps, start_step=0):
        dataset = pipeline.pretrain_dataset(data, 16, plain, seed=4, start_step=start_step,
                                            input_context=Context(2, pipeline_id, 2))
        return np.array([batch.numpy()[:, 0, 0, 0, 0] for batch in dataset.take(steps)])  # (steps, 8)

    first, second = ids(0, 6), ids(1, 6)
    for epoch in range(2):  # 48 images, global batch 16: three steps an epoch
        a, b = first[3 * epoch:3 * epoch + 3].ravel(), second[3 * epoch:3 * epoch + 3].ravel()
        assert sorted(np.concatenate([a, b])) == list(range(48)) and not set(a) & set(b)
    assert first[:3].ravel().tolist() != first[3:].ravel().tolist()  # a new permutation each epoch
    np.testing.assert_array_equal(ids(1, 2, start_step=4), second[4:6])  # resumed at step 4


def test_bad_folders_are_named(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "readme.txt").write_text("no images")
    with pytest.raises(sources.DataError, match=f"folder:{empty}: no images"):
        sources.load(f"folder:{empty}", image_size=8)
    broken = tmp_path / "broken"
    broken.mkdir()
    for i in range(3):
        (broken / f"{i}.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    for stream in ("true", "false"):
        with pytest.raises(sources.DataError, match=rf"folder:{broken}: none of its 3 image files can be read: "
                                                    rf"{broken}/0.png"):
            sources.load(f"folder:{broken}", image_size=8, options=sources.ReadOptions(stream=stream))
    mostly = tmp_path / "mostly"
    constant_folder(str(mostly.mkdir() or mostly), 10)
    (mostly / "bad.jpg").write_bytes(b"nothing")
    with pytest.raises(sources.DataError, match=r"1 of 11 image files cannot be read, more than "
                                                r"--max_unreadable=0.01 of them: .*bad.jpg"):
        sources.load(f"folder:{mostly}", image_size=8)
    loose = sources.load(f"folder:{mostly}", image_size=8, options=sources.ReadOptions(max_unreadable=0.1))
    assert loose.num_examples == 10
    (mostly / "bad.jpg").unlink()
    tf.io.write_file(str(mostly / "tiny.png"), tf.io.encode_png(np.zeros((3, 50, 1), np.uint8)))
    for stream in ("true", "false"):
        with pytest.raises(sources.DataError, match=r"smaller than --min_side=5 on the shorter side: "
                                                    r".*tiny.png \(3x50\)"):
            sources.load(f"folder:{mostly}", image_size=8, options=sources.ReadOptions(stream=stream, min_side=5))


def test_read_options_name_their_flags():
    for kwargs, flag in (({"stream": "maybe"}, "--stream"), ({"memory_budget_gb": 0}, "--memory_budget_gb"),
                         ({"max_side": -1}, "--max_side"), ({"max_unreadable": 2}, "--max_unreadable")):
        with pytest.raises(ValueError, match=flag):
            sources.ReadOptions(**kwargs)


def test_evaluation_view_is_resize_and_centre_crop(folder):
    path, sizes = folder
    split = sources.load(f"folder:{path}", image_size=16, options=sources.ReadOptions(max_side=1000))
    square = sources.resized(split, 16)
    assert square.images.shape == (len(sizes), 16, 16, 3) and square.sizes is None
    file, (h, w) = sorted(sizes.items())[0]
    original = folders.decode(tf.io.read_file(file), 3)
    np.testing.assert_array_equal(square.images[0], streams.centre_crop(original, 16).numpy())


def tiny_photo(i):
    """Image i of the local TFDS data set: a smooth RGB image of its own size (shorter side 20-40)."""
    rng = np.random.default_rng(100 + i)
    h, w = (int(v) for v in rng.integers(20, 60, 2))
    small = rng.integers(0, 256, (4, 4, 3)).astype(np.float32)
    return tf.cast(tf.image.resize(small[None], (h, w))[0], tf.uint8).numpy()


@pytest.fixture(scope="module")
def tfds_dir(tmp_path_factory):
    import tensorflow_datasets as tfds

    class TinyPhotos(tfds.core.GeneratorBasedBuilder):
        """60 JPEG images of varied sizes with an index and a label."""

        VERSION = tfds.core.Version("1.0.0")

        def _info(self):
            return tfds.core.DatasetInfo(builder=self, features=tfds.features.FeaturesDict({
                "image": tfds.features.Image(shape=(None, None, 3), encoding_format="jpeg"),
                "label": tfds.features.ClassLabel(num_classes=2), "index": np.int64}))

        def _split_generators(self, dl_manager):
            return {"train": self._generate_examples()}

        def _generate_examples(self):
            for i in range(60):
                yield i, {"image": tiny_photo(i), "label": i % 2, "index": i}

    data_dir = str(tmp_path_factory.mktemp("tfds"))
    TinyPhotos(data_dir=data_dir).download_and_prepare()
    return data_dir


def test_a_tfds_stream_partitions_an_epoch_between_input_pipelines_and_crops_from_the_originals(tfds_dir):
    stream = sources.load("tfds:tiny_photos", data_dir=tfds_dir, image_size=16,
                          options=sources.ReadOptions(stream="true"))
    assert isinstance(stream, streams.TfdsStream) and stream.num_examples == 60

    def indices(pipeline_id, seed):
        examples = stream.examples(pipeline_id, 2, seed=seed).take(30)
        return [int(example["index"]) for example in examples]

    a, b = indices(0, seed=1), indices(1, seed=1)
    assert sorted(a + b) == list(range(60)) and not set(a) & set(b)
    assert indices(0, seed=1) == a  # deterministic per seed
    for example in stream.examples(seed=1).take(60):  # the boxes are drawn on the original sizes
        size = streams.encoded_size(example["image"], 3).numpy()
        assert tuple(size) == tiny_photo(int(example["index"])).shape[:2]
    batches = pipeline.pretrain_dataset(stream, 8, RECIPE, seed=1, input_context=Context(2, 1, 2))
    assert next(iter(batches)).shape == (4, 2, 16, 16, 3)


def test_a_small_tfds_data_set_of_varied_sizes_is_kept_at_its_own_sizes(tfds_dir):
    split = sources.load("tfds:tiny_photos", data_dir=tfds_dir, image_size=16,
                         options=sources.ReadOptions(max_side=1000))
    assert isinstance(split, sources.Split) and split.num_examples == 60
    assert sorted(map(tuple, split.sizes)) == sorted(tiny_photo(i).shape[:2] for i in range(60))
    assert sources.resized(split, 16).images.shape == (60, 16, 16, 3)


def test_host_and_device_placements_give_the_same_views_for_images_of_several_sizes(folder):
    path, _ = folder
    split = sources.load(f"folder:{path}", image_size=16).take(np.arange(40))
    host = [b.numpy() for b in pipeline.pretrain_dataset(split, 16, RECIPE, seed=2).take(2)]
    device = list(pipeline.pretrain_dataset(split, 16, RECIPE, seed=2, augment_on="device").take(2))
    assert set(device[0]) == {"images", "sizes"}
    layer = augment.TwoViews(RECIPE, seed=2)
    for step in range(2):
        np.testing.assert_array_equal(layer(device[step], step=step).numpy(), host[step])


def test_a_stream_augmented_on_the_device_gives_the_hosts_views(folder):
    path, _ = folder
    stream = sources.load(f"folder:{path}", image_size=16, options=sources.ReadOptions(stream="true"))
    host = [b.numpy() for b in pipeline.pretrain_dataset(stream, 16, RECIPE, seed=2).take(2)]
    crops = list(pipeline.pretrain_dataset(stream, 16, RECIPE, seed=2, augment_on="device").take(2))
    assert crops[0]["crops"].shape == (16, 2, 16, 16, 3) and crops[0]["crops"].dtype == tf.uint8
    layer = augment.TwoViews(RECIPE, seed=2)
    for step in range(2):
        np.testing.assert_array_equal(layer(crops[step], step=step).numpy(), host[step])


def test_large_canvases_are_resized_in_chunks_of_one_shape_and_an_images_crops_do_not_depend_on_its_batch(
        folder, monkeypatch):
    path, _ = folder
    split = sources.load(f"folder:{path}", image_size=16).take(np.arange(24))
    boxes = augment.two_crops_compiled([1, 2], RECIPE, split.sizes)
    monkeypatch.setattr(augment, "CROP_CHUNK_BYTES", 4 * 10 * int(np.prod(split.images.shape[1:])))
    whole = augment.crops_of_compiled(tf.constant(split.images), boxes, 16).numpy()  # chunks of 10, 10, 4 + 6
    part = augment.crops_of_compiled(tf.constant(split.images[4:17]), boxes[4:17], 16).numpy()  # 10, 3 + 7
    assert whole.shape == (24, 2, 16, 16, 3) and whole.any()
    np.testing.assert_array_equal(part, whole[4:17])


def test_a_file_that_fails_to_decode_in_a_stream_is_skipped(tmp_path):
    constant_folder(str(tmp_path), 20)
    good = tf.io.encode_jpeg(np.zeros((30, 40, 3), np.uint8)).numpy()
    (tmp_path / "truncated.jpg").write_bytes(good[:len(good) // 2])  # its header reads, its data does not
    stream = sources.load(f"folder:{tmp_path}", image_size=8, channels=1,
                          options=sources.ReadOptions(stream="true", max_unreadable=0.1))
    assert stream.num_examples == 21  # the header scan cannot tell
    batches = [b.numpy() for b in pipeline.pretrain_dataset(stream, 7, RECIPE, seed=0).take(6)]
    assert all(b.shape == (7, 2, 16, 16, 1) for b in batches)  # full batches: the bad file was dropped
