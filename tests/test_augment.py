import dataclasses

import numpy as np
import pytest
import tensorflow as tf

from tf_simsiam.data import augment as A


def images(batch=16, size=24, channels=3, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (batch, size, size, channels)).astype("uint8")


@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("recipe", [A.simsiam_imagenet(20), A.simsiam_cifar(20)])
def test_views_shape_dtype_and_range(channels, recipe):
    views = A.two_views(images(channels=channels), recipe, [0, 1]).numpy()
    assert views.shape == (16, 2, 20, 20, channels) and views.dtype == np.uint8


def test_full_crop_without_colour_is_the_identity():
    x = images()
    plain = A.Recipe(24, crop_scale=(1, 1), crop_ratio=(1, 1), flip_prob=0, jitter_prob=0, grayscale_prob=0,
                     blur_prob=0)
    np.testing.assert_allclose(A.augment(x, plain, [3, 4]).numpy(), x / 255.0, atol=1e-6)
    flipped = dataclasses.replace(plain, flip_prob=1.0)
    np.testing.assert_allclose(A.augment(x, flipped, [3, 4]).numpy(), x[:, :, ::-1] / 255.0, atol=1e-6)


def test_crop_area_and_aspect_bounds_and_per_image_randomness():
    top, left, h, w = [t.numpy() for t in A.crop_boxes(tf.constant([1, 2], tf.int64), 4096, 32.0, 32.0,
                                                      (0.2, 1.0), (3 / 4, 4 / 3))]
    area = h * w / (32 * 32)
    # rounding to whole pixels moves the bounds by at most a pixel row/column
    assert area.min() >= 0.2 - 2 * 33 / 1024 and area.max() <= 1.0
    assert (w / h).min() >= 3 / 4 - 0.1 and (w / h).max() <= 4 / 3 + 0.1
    assert (top >= 0).all() and (top + h <= 32).all() and (left >= 0).all() and (left + w <= 32).all()
    assert len(np.unique(np.stack([top, left, h, w], 1), axis=0)) > 1000  # every image its own crop
    assert 0.45 < area.mean() < 0.75  # uniform in [0.2, 1] with torchvision's rejection of big aspect crops


def test_views_differ_and_seeding_is_reproducible():
    x = images()
    recipe = A.simsiam_imagenet(24)
    a = A.two_views(x, recipe, [7, 0]).numpy()
    b = A.two_views(x, recipe, [7, 0]).numpy()
    c = A.two_views(x, recipe, [7, 1]).numpy()
    np.testing.assert_array_equal(a, b)
    a, c = a / 255.0, c / 255.0
    assert np.abs(a - c).mean() > 0.01
    per_image_gap = np.abs(a[:, 0] - a[:, 1]).mean(axis=(1, 2, 3))
    assert (per_image_gap > 1e-3).all()  # the two views of each image differ


def test_brightness_and_contrast_follow_torchvision():
    x = np.random.default_rng(1).random((4, 5, 5, 3)).astype("float32")
    f = np.array([0.7, 1.2, 1.0, 1.35], "float32").reshape(4, 1, 1, 1)
    np.testing.assert_allclose(A._adjust(x, 0, f).numpy(), np.clip(x * f, 0, 1), atol=1e-6)
    gray_mean = (x @ np.array(A.GRAY_WEIGHTS, "float32")).mean(axis=(1, 2)).reshape(4, 1, 1, 1)
    np.testing.assert_allclose(A._adjust(x, 1, f).numpy(), np.clip(f * x + (1 - f) * gray_mean, 0, 1),
                               atol=1e-6)
    gray = x @ np.array(A.GRAY_WEIGHTS, "float32")
    np.testing.assert_allclose(A._adjust(x, 2, f).numpy(), np.clip(f * x + (1 - f) * gray[..., None], 0, 1),
                               atol=1e-6)
    np.testing.assert_allclose(A._adjust(x, 3, np.zeros((4, 1, 1, 1), "float32")).numpy(), x, atol=1e-5)


def test_grayscale_probability_and_single_channel():
    x = images(batch=2000, size=4)
    gray = A.random_grayscale(tf.cast(x, tf.float32) / 255, tf.constant([0, 5], tf.int64), 0.2).numpy()
    is_gray = np.all(np.abs(gray[..., 0:1] - gray) < 1e-6, axis=(1, 2, 3))
    assert 0.15 < is_gray.mean() < 0.25
    one = tf.constant(images(channels=1), tf.float32) / 255
    assert A.random_grayscale(one, tf.constant([0, 5], tf.int64), 1.0) is one


def test_blur_keeps_constant_images_and_smooths_noise():
    blur = A._blur_matrices(tf.constant([0.5, 2.0]), 16, 13).numpy()
    np.testing.assert_allclose(blur.sum(axis=2), 1.0, atol=1e-6)
    flat = np.full((2, 16, 16, 1), 0.3, "float32")
    x = np.concatenate([flat, np.random.default_rng(0).random((2, 16, 16, 1)).astype("float32")])
    out = A.gaussian_blur(tf.constant(x), tf.constant([0, 1], tf.int64), (1.5, 2.0), 1.0, 13).numpy()
    np.testing.assert_allclose(out[:2], flat, atol=1e-6)
    assert out[2:].std() < 0.5 * x[2:].std()


def test_xla_and_plain_ops_follow_the_same_distribution():
    x = np.repeat(images(batch=4), 256, axis=0)  # each image many times: per-image statistics of its views
    recipe = A.simsiam_imagenet(24)
    plain = A.two_views(x, recipe, tf.constant([1, 2])).numpy() / 255.0
    xla = A.two_views_compiled(x, recipe, tf.constant([1, 2])).numpy() / 255.0
    np.testing.assert_array_equal(xla, A.two_views_compiled(x, recipe, tf.constant([1, 2])).numpy() / 255.0)
    for stat in (np.mean, np.std):
        a = stat(plain.reshape(4, -1, 24 * 24 * 3), axis=(1, 2))
        b = stat(xla.reshape(4, -1, 24 * 24 * 3), axis=(1, 2))
        np.testing.assert_allclose(a, b, atol=0.02)


def test_recipe_validation():
    with pytest.raises(ValueError, match="crop_scale"):
        A.Recipe(32, crop_scale=(0.0, 1.0))
    with pytest.raises(ValueError, match="blur_prob"):
        A.Recipe(32, blur_prob=2.0)
    with pytest.raises(ValueError, match="solarize_prob"):
        A.Recipe(32, solarize_prob=(0.0, 1.5))
    with pytest.raises(ValueError, match="blur_prob must be one probability or a pair"):
        A.Recipe(32, blur_prob=(0.5, 0.5, 0.5))


def test_byol_recipe_is_the_papers_asymmetric_one():
    recipe = A.byol(224)
    assert recipe.blur_prob == (1.0, 0.1) and recipe.solarize_prob == (0.0, 0.2) and recipe.kernel_size() == 23
    assert recipe.crop_scale == (0.08, 1.0) and recipe.jitter == pytest.approx((0.4, 0.4, 0.2, 0.1))
    assert recipe.jitter_prob == 0.8 and recipe.grayscale_prob == 0.2
    assert A.byol(32).blur_prob == 0.0 and A.byol(32).solarize_prob == (0.0, 0.2)  # CIFAR scale: no blur
    assert A.RECIPES["byol"] is A.byol
    views = A.two_views_compiled(images(batch=4, size=16), A.byol(12, blur=True), [0, 1]).numpy()  # XLA, both stages
    assert views.shape == (4, 2, 12, 12, 3) and views.dtype == np.uint8
    # a saved config (lists) gives the same recipe back
    assert A.Recipe(**{k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(recipe).items()}) \
        == recipe


def test_solarisation_inverts_the_levels_from_128_up_in_the_views_it_draws():
    x = np.arange(256, dtype=np.uint8).reshape(1, 16, 16, 1)
    out = A.random_solarize(tf.constant(x / 255.0, tf.float32), tf.constant([0, 1], tf.int64), 1.0).numpy()
    np.testing.assert_array_equal(np.round(out * 255), np.where(x >= 128, 255 - x, x))
    # per view: solarisation on the second view only; everything else (crops, colour) drawn as without it
    plain = A.Recipe(16, jitter_prob=0.5, blur_prob=0.0)
    x = images(batch=8, size=16)
    base = A.two_views(x, plain, [5, 6]).numpy()
    views = A.two_views(x, dataclasses.replace(plain, solarize_prob=(0.0, 1.0)), [5, 6]).numpy()
    np.testing.assert_array_equal(views[:, 0], base[:, 0])
    np.testing.assert_array_equal(views[:, 1], np.where(base[:, 1] >= 128, 255 - base[:, 1], base[:, 1]))


def test_probabilities_per_view_are_drawn_per_image():
    x = images(batch=2000, size=8, channels=1)
    plain = A.Recipe(8, crop_scale=(1, 1), crop_ratio=(1, 1), flip_prob=0, jitter_prob=0, grayscale_prob=0,
                     blur_prob=0.0)
    views = A.two_views(x, dataclasses.replace(plain, solarize_prob=(0.2, 0.0)), [7, 8]).numpy()
    np.testing.assert_array_equal(views[:, 1], x)
    solarized = (views[:, 0] != x).reshape(2000, -1).any(axis=1)
    assert abs(solarized.mean() - 0.2) < 0.045  # 5 binomial standard deviations of 2000 draws
    blurred = A.two_views(x, dataclasses.replace(plain, blur_prob=(0.0, 1.0)), [7, 8]).numpy()
    np.testing.assert_array_equal(blurred[:, 0], x)
    assert (blurred[:, 1] != x).reshape(2000, -1).any(axis=1).mean() > 0.7  # a sigma near 0.1 may round away
