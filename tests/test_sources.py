import gzip
import os
import struct

import numpy as np
import pytest
import tensorflow as tf

from tf_simsiam.data import sources

DEBIAN_DIR = "/usr/share/datasets/fashion-mnist"


def write_idx(path, array):
    header = struct.pack(">HBB", 0, 8, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    with gzip.open(path, "wb") as f:
        f.write(header + array.astype(np.uint8).tobytes())


def fake_fashion_mnist(directory, n_train=30, n_test=10):
    rng = np.random.default_rng(0)
    for split, n in (("train", n_train), ("test", n_test)):
        image_file, label_file = sources.FASHION_MNIST_FILES[split]
        write_idx(os.path.join(directory, image_file), rng.integers(0, 256, (n, 28, 28)))
        write_idx(os.path.join(directory, label_file), np.arange(n) % 10)


def test_idx_parsing_and_fashion_mnist_lookup(tmp_path, monkeypatch):
    fake_fashion_mnist(tmp_path)
    monkeypatch.setenv("TF_SIMSIAM_DATA_DIR", str(tmp_path))
    train, test = sources.fashion_mnist("train"), sources.load("fashion_mnist", "test")
    assert train.images.shape == (30, 28, 28, 1) and train.images.dtype == np.uint8
    assert test.labels.tolist() == list(range(10)) and train.num_classes == 10
    assert train.class_names[0] == "T-shirt/top"


@pytest.mark.skipif(not os.path.exists(DEBIAN_DIR), reason="Debian package dataset-fashion-mnist not installed")
def test_debian_fashion_mnist(monkeypatch):
    monkeypatch.delenv("TF_SIMSIAM_DATA_DIR", raising=False)
    test = sources.fashion_mnist("test")
    assert test.images.shape == (10000, 28, 28, 1)
    assert np.bincount(test.labels).tolist() == [1000] * 10


def test_corrupt_idx_file_is_named(tmp_path):
    bad = tmp_path / "bad-idx3-ubyte.gz"
    with gzip.open(bad, "wb") as f:
        f.write(b"\x12\x34\x08\x03garbage")
    with pytest.raises(sources.DataError, match="bad-idx3-ubyte.gz: not an IDX file"):
        sources.read_idx(str(bad))
    short = tmp_path / "short-idx1-ubyte.gz"
    with gzip.open(short, "wb") as f:
        f.write(struct.pack(">HBBI", 0, 8, 1, 100) + b"\x01\x02")
    with pytest.raises(sources.DataError, match="short-idx1-ubyte.gz: IDX header says shape"):
        sources.read_idx(str(short))


def write_image(path, size=(10, 12), channels=3, seed=0):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    pixels = np.random.default_rng(seed).integers(0, 256, (*size, channels)).astype("uint8")
    encode = tf.io.encode_png if path.endswith(".png") else tf.io.encode_jpeg
    tf.io.write_file(path, encode(pixels))


def test_folder_with_nested_classes(tmp_path):
    write_image(str(tmp_path / "cat" / "a.png"))
    write_image(str(tmp_path / "cat" / "deeper" / "b.jpg"), channels=1)
    write_image(str(tmp_path / "dog" / "c.PNG"))
    (tmp_path / "dog" / "notes.txt").write_text("not an image")
    split = sources.load(f"folder:{tmp_path}", image_size=8)
    assert split.images.shape == (3, 10, 12, 3)  # the images' own size (within --max_side, 16 here)
    assert sources.resized(split, 8).images.shape == (3, 8, 8, 3)
    assert split.labels.tolist() == [0, 0, 1] and split.class_names == ("cat", "dog")


def test_folder_without_classes_has_no_labels(tmp_path):
    write_image(str(tmp_path / "x.png"))
    write_image(str(tmp_path / "y.png"))
    split = sources.folder(str(tmp_path), image_size=4)
    assert split.labels is None and split.images.shape == (2, 8, 9, 3)  # shorter side at --max_side (8)


def test_corrupt_image_is_named(tmp_path):
    write_image(str(tmp_path / "ok" / "fine.png"))
    (tmp_path / "ok" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 this is not a jpeg")
    with pytest.raises(sources.DataError, match="1 of 2 image files cannot be read.*broken.jpg"):
        sources.folder(str(tmp_path), image_size=8)


def test_empty_and_missing_folders_and_unknown_dataset(tmp_path):
    with pytest.raises(sources.DataError, match=f"folder:{tmp_path}: no images"):
        sources.folder(str(tmp_path), image_size=8)
    with pytest.raises(sources.DataError, match="folder:/no/such/place: no such folder"):
        sources.load("folder:/no/such/place", image_size=8)
    with pytest.raises(sources.DataError, match="unknown --dataset='imagenette'"):
        sources.load("imagenette")


def test_a_missing_folder_is_named_before_any_other_check():
    with pytest.raises(sources.DataError, match="--dataset=folder:/no/such/place: no such folder"):
        sources.load("folder:/no/such/place")  # not "needs --image_size"
    with pytest.raises(sources.DataError, match="--knn_dataset=folder:/no/such/place: no such folder"):
        sources.load("folder:/no/such/place", image_size=8, flag="knn_dataset")


def test_a_folder_without_image_size_says_which_flag_to_pass(tmp_path):
    write_image(str(tmp_path / "a.png"))
    with pytest.raises(sources.DataError, match=rf"--dataset=folder:{tmp_path} needs --image_size"):
        sources.load(f"folder:{tmp_path}")


def test_numpy_arrays_from_user_code():
    split = sources.from_arrays(np.zeros((5, 6, 6), "float32"), [0, 1, 0, 1, 0])
    assert split.images.shape == (5, 6, 6, 1) and split.images.dtype == np.uint8
    with pytest.raises(sources.DataError, match="5 images but 2 labels"):
        sources.from_arrays(np.zeros((5, 6, 6, 3), "uint8"), [0, 1])
    with pytest.raises(sources.DataError, match=r"values in \[0, 255\]"):
        sources.from_arrays(np.full((2, 4, 4, 1), 300.0))


def test_tfds_source_through_a_local_stand_in():
    import tensorflow_datasets as tfds
    with tfds.testing.mock_data(num_examples=12):
        split = sources.load("tfds:cifar10", "train")
        resized = sources.resized(sources.load("tfds:cifar10", "test", image_size=16), 16)
    assert split.images.shape == (12, 32, 32, 3) and split.labels.shape == (12,)
    assert len(split.class_names) == 10
    assert resized.images.shape == (12, 16, 16, 3)


def test_unknown_tfds_name_is_named():
    with pytest.raises(sources.DataError, match="tfds:no_such_dataset_xyz"):
        sources.load("tfds:no_such_dataset_xyz")


def test_large_tfds_data_set_is_streamed(monkeypatch):
    import tensorflow_datasets as tfds
    monkeypatch.setattr(sources, "_num_examples", lambda builder, split: 50000)  # as if it were prepared
    with tfds.testing.mock_data(num_examples=40):
        # cifar10 needs 146 MB at its size: over a budget of 0.1 GB
        stream = sources.load("tfds:cifar10", "train", image_size=16,
                              options=sources.ReadOptions(memory_budget_gb=0.1))
        assert isinstance(stream, sources.Stream) and stream.channels == 3
        assert stream.num_examples == 50000  # from the data set's metadata
        subset = stream.subset(12, seed=0, image_size=16)
        with pytest.raises(sources.DataError, match="--knn_train_size and --knn_test_size"):
            stream.subset(0)
    assert subset.images.shape == (12, 16, 16, 3) and subset.labels.shape == (12,)


def test_centre_crop_keeps_the_aspect():
    from tf_simsiam.data import streams
    image = np.zeros((20, 40, 1), "uint8")
    image[:, 8:32] = 255  # the central square and a margin around it are white
    out = streams.centre_crop(tf.constant(image), 10).numpy()
    assert out.shape == (10, 10, 1) and out.min() == 255
