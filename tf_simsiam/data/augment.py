"""The papers' augmentations as batched, vectorised TF ops with per-image random parameters.

The same function runs in a tf.data pipeline (host) or inside the train step (device): static shapes, no Python
randomness, no data-dependent control flow, XLA-compatible. Randomness is stateless: `seed` is a shape-[2] int
tensor, so a given (seed, batch) pair gives the same views on every run and on either placement.

Order and semantics follow torchvision, as in the official SimSiam code:
    RandomResizedCrop(size, scale, ratio)      -> interpolation matrices, bilinear with antialiasing (like PIL)
    RandomApply(ColorJitter(b, c, s, h), p)    -> the four adjustments in a random order per image
    RandomGrayscale(p)
    RandomApply(GaussianBlur(sigma), p)        -> separable Gaussian, reflect padding, as matrices
    RandomHorizontalFlip()                     -> folded into the crop matrices (it commutes with the rest)
Crop, resize and flip are one pair of per-image matrices Ay (size x H) and Ax (size x W):
views = Ay @ image @ Ax^T, which is two small matmuls instead of gathers.

`two_views_compiled` is the XLA-compiled form used by both placements (about 10x faster on a CPU than plain
TF ops). XLA draws other stateless random numbers than TF's CPU kernels for the same seed (both Philox, keyed
differently), so views are reproducible per (seed, step) within one form; both forms follow the same distribution.
"""

import dataclasses
import math

import keras
import tensorflow as tf

GRAY_WEIGHTS = (0.2989, 0.587, 0.114)  # torchvision's rgb_to_grayscale


@dataclasses.dataclass(frozen=True)
class Recipe:
    """Augmentation hyperparameters. Probabilities are per image."""

    size: int
    crop_scale: tuple = (0.2, 1.0)
    crop_ratio: tuple = (3 / 4, 4 / 3)
    flip_prob: float = 0.5
    jitter: tuple = (0.4, 0.4, 0.4, 0.1)  # brightness, contrast, saturation, hue
    jitter_prob: float = 0.8
    grayscale_prob: float = 0.2
    blur_prob: float = 0.5
    blur_sigma: tuple = (0.1, 2.0)
    blur_kernel_size: int = 0  # 0: 2 * ceil(3 * max sigma) + 1

    def __post_init__(self):
        if not isinstance(self.size, int) or self.size <= 0:
            raise ValueError(f"augmentation size must be a positive integer, got {self.size!r}")
        low, high = self.crop_scale
        if not 0 < low <= high <= 1:
            raise ValueError(f"crop_scale must satisfy 0 < low <= high <= 1, got {self.crop_scale}")
        for name in ("flip_prob", "jitter_prob", "grayscale_prob", "blur_prob"):
            if not 0 <= getattr(self, name) <= 1:
                raise ValueError(f"{name} must be a probability in [0, 1], got {getattr(self, name)}")

    def kernel_size(self):
        size = self.blur_kernel_size or 2 * math.ceil(3 * self.blur_sigma[1]) + 1
        return min(size | 1, 2 * self.size - 1)


def simsiam_imagenet(size=224):
    """The SimSiam paper's ImageNet augmentation (MoCo v2's)."""
    return Recipe(size)


def simsiam_cifar(size=32):
    """The SimSiam CIFAR recipe: the ImageNet one without blur."""
    return Recipe(size, blur_prob=0.0)


def linear_eval(size=224):
    """The training augmentation of the linear probe and fine-tuning (main_lincls.py): RandomResizedCrop
    (torchvision's default scale 0.08-1) and horizontal flip, nothing else."""
    return Recipe(size, crop_scale=(0.08, 1.0), jitter_prob=0.0, grayscale_prob=0.0, blur_prob=0.0)


def simclr(size=224, strength=1.0, blur=None):
    """SimCLR's augmentation (its Appendix A): random resized crop 0.08-1 and flip; colour distortion of
    strength s (brightness, contrast, saturation 0.8s, hue 0.2s, in a random order, p=0.8; grayscale p=0.2);
    Gaussian blur (sigma 0.1-2, kernel 10% of the image side) with p=0.5, left out for small images (CIFAR)
    unless blur=True."""
    if not strength >= 0:
        raise ValueError(f"colour strength must be >= 0, got {strength}")
    blur = size > 64 if blur is None else blur
    jitter = (0.8 * strength, 0.8 * strength, 0.8 * strength, 0.2 * strength)
    return Recipe(size, crop_scale=(0.08, 1.0), jitter=jitter, blur_prob=0.5 if blur else 0.0,
                  blur_kernel_size=max(3, size // 10) | 1)


RECIPES = {"simsiam_imagenet": simsiam_imagenet, "simsiam_cifar": simsiam_cifar, "simclr": simclr}


def _uniform(seed, shape, low=0.0, high=1.0):
    return tf.random.stateless_uniform(shape, seed=seed, minval=low, maxval=high, alg="philox")


def _resize_matrices(start, length, in_size, out_size):
    """(B, out, in) bilinear weights sampling [start, start+length) of a 1-D signal at out_size points.

    Pixel j covers [j, j+1). A triangle filter, widened by the downscaling factor (antialiasing as in PIL),
    is centred on each output pixel; the weights of each row sum to 1.
    """
    scale = length / out_size  # (B,)
    centres = start[:, None] + (tf.range(out_size, dtype=tf.float32)[None, :] + 0.5) * scale[:, None]
    support = tf.maximum(scale, 1.0)[:, None, None]
    pixels = tf.range(in_size, dtype=tf.float32)[None, None, :] + 0.5
    weights = tf.nn.relu(1.0 - tf.abs(pixels - centres[:, :, None]) / support)
    return weights / tf.maximum(tf.reduce_sum(weights, axis=-1, keepdims=True), 1e-12)


def crop_boxes(seed, batch, height, width, scale, ratio, attempts=10):
    """torchvision's RandomResizedCrop.get_params for a whole batch: (top, left, h, w) in pixels.

    Up to `attempts` (area, aspect) draws per image; the first that fits wins, else the centre crop with the
    aspect ratio clamped into `ratio` (torchvision's fallback).
    """
    seeds = tf.random.experimental.stateless_split(seed, 4, alg="philox")
    area = float(height * width) * _uniform(seeds[0], [batch, attempts], *scale)
    log_ratio = _uniform(seeds[1], [batch, attempts], math.log(ratio[0]), math.log(ratio[1]))
    aspect = tf.exp(log_ratio)
    w = tf.round(tf.sqrt(area * aspect))
    h = tf.round(tf.sqrt(area / aspect))
    fits = (w > 0) & (w <= width) & (h > 0) & (h <= height)
    first = tf.argmax(tf.cast(fits, tf.int32), axis=1, output_type=tf.int32)
    w = tf.gather(w, first, batch_dims=1)
    h = tf.gather(h, first, batch_dims=1)
    any_fits = tf.reduce_any(fits, axis=1)
    in_ratio = width / height
    if in_ratio < ratio[0]:
        fallback_w, fallback_h = float(width), float(round(width / ratio[0]))
    elif in_ratio > ratio[1]:
        fallback_w, fallback_h = float(round(height * ratio[1])), float(height)
    else:
        fallback_w, fallback_h = float(width), float(height)
    w = tf.where(any_fits, w, fallback_w)
    h = tf.where(any_fits, h, fallback_h)
    top = tf.floor(_uniform(seeds[2], [batch]) * (height - h + 1))
    left = tf.floor(_uniform(seeds[3], [batch]) * (width - w + 1))
    top = tf.where(any_fits, top, tf.round((height - h) / 2))
    left = tf.where(any_fits, left, tf.round((width - w) / 2))
    return top, left, h, w


def _grayscale(images):
    if images.shape[-1] == 1:
        return images
    return tf.reduce_sum(images * tf.constant(GRAY_WEIGHTS, images.dtype), axis=-1, keepdims=True)


def _blend(images, other, factor):
    return tf.clip_by_value(factor * images + (1.0 - factor) * other, 0.0, 1.0)


def _adjust(images, op, factor):
    """One torchvision adjustment with per-image factors (B, 1, 1, 1)."""
    if op == 0:  # brightness
        return tf.clip_by_value(images * factor, 0.0, 1.0)
    if op == 1:  # contrast: blend with the mean gray level of each image
        return _blend(images, tf.reduce_mean(_grayscale(images), axis=[1, 2, 3], keepdims=True), factor)
    if images.shape[-1] == 1:  # saturation and hue leave a 1-channel image as it is (as torchvision)
        return images
    if op == 2:  # saturation
        return _blend(images, _grayscale(images), factor)
    hsv = tf.image.rgb_to_hsv(images)  # hue: rotate by factor of a full turn
    hue = tf.math.floormod(hsv[..., :1] + factor, 1.0)
    return tf.clip_by_value(tf.image.hsv_to_rgb(tf.concat([hue, hsv[..., 1:]], axis=-1)), 0.0, 1.0)


def color_jitter(images, seed, strength, prob):
    """ColorJitter(brightness, contrast, saturation, hue) in a random order per image, applied with prob."""
    batch = tf.shape(images)[0]
    seeds = tf.random.experimental.stateless_split(seed, 6, alg="philox")
    factors = []
    for i, s in enumerate(strength):
        if i < 3:
            factors.append(_uniform(seeds[i], [batch, 1, 1, 1], max(0.0, 1.0 - s), 1.0 + s))
        else:
            factors.append(_uniform(seeds[i], [batch, 1, 1, 1], -s, s))
    ops = [op for op, s in enumerate(strength) if s > 0 and (op < 2 or images.shape[-1] == 3)]
    if not ops:
        return images
    # a random permutation of the ops per image; at each slot every op is computed and each image takes its own
    order = tf.argsort(_uniform(seeds[4], [batch, len(ops)]), axis=1)
    jittered = images
    for slot in range(len(ops)):
        candidates = tf.stack([_adjust(jittered, op, factors[op]) for op in ops], axis=1)
        jittered = tf.gather(candidates, order[:, slot], batch_dims=1)
    apply = _uniform(seeds[5], [batch, 1, 1, 1]) < prob
    return tf.where(apply, jittered, images)


def random_grayscale(images, seed, prob):
    if images.shape[-1] == 1 or prob == 0:
        return images
    apply = _uniform(seed, [tf.shape(images)[0], 1, 1, 1]) < prob
    return tf.where(apply, tf.tile(_grayscale(images), [1, 1, 1, 3]), images)


def _blur_matrices(sigma, size, kernel_size):
    """(B, size, size) Gaussian blur matrices with reflect padding (torchvision's GaussianBlur)."""
    radius = kernel_size // 2
    taps = tf.range(-radius, radius + 1, dtype=tf.float32)
    kernel = tf.exp(-0.5 * tf.square(taps[None, :] / sigma[:, None]))
    kernel = kernel / tf.reduce_sum(kernel, axis=1, keepdims=True)  # (B, K)
    rows = tf.range(size)[:, None] + tf.range(-radius, radius + 1)[None, :]  # (size, K)
    rows = tf.abs(rows)
    rows = tf.where(rows > size - 1, 2 * (size - 1) - rows, rows)  # reflect at both borders
    placement = tf.one_hot(rows, size)  # (size, K, size)
    return tf.einsum("bk,skt->bst", kernel, placement)


def gaussian_blur(images, seed, sigma_range, prob, kernel_size):
    if prob == 0:
        return images
    batch, size = tf.shape(images)[0], images.shape[1]
    seeds = tf.random.experimental.stateless_split(seed, 2, alg="philox")
    sigma = _uniform(seeds[0], [batch], *sigma_range)
    blur = _blur_matrices(sigma, size, kernel_size)
    identity = tf.eye(size, batch_shape=[1])
    apply = _uniform(seeds[1], [batch, 1, 1]) < prob
    blur = tf.where(apply, blur, identity)
    return tf.einsum("bkh,bhwc,blw->bklc", blur, images, blur)


def augment(images, recipe, seed):
    """One augmented view of each image. images: (B, H, W, C) floats in [0, 1] or uint8; seed: shape [2]."""
    if images.dtype == tf.uint8:
        images = tf.cast(images, tf.float32) / 255.0
    images = tf.cast(images, tf.float32)
    batch, height, width = tf.shape(images)[0], images.shape[1], images.shape[2]
    seeds = tf.random.experimental.stateless_split(tf.cast(seed, tf.int64), 5, alg="philox")
    top, left, h, w = crop_boxes(seeds[0], batch, height, width, recipe.crop_scale, recipe.crop_ratio)
    rows = _resize_matrices(top, h, height, recipe.size)
    cols = _resize_matrices(left, w, width, recipe.size)
    flip = _uniform(seeds[1], [batch, 1, 1]) < recipe.flip_prob
    cols = tf.where(flip, tf.reverse(cols, axis=[1]), cols)
    views = tf.einsum("bkh,bhwc,blw->bklc", rows, images, cols)
    views = color_jitter(views, seeds[2], recipe.jitter, recipe.jitter_prob)
    views = random_grayscale(views, seeds[3], recipe.grayscale_prob)
    views = gaussian_blur(views, seeds[4], recipe.blur_sigma, recipe.blur_prob, recipe.kernel_size())
    return tf.clip_by_value(views, 0.0, 1.0)


def two_views(images, recipe, seed):
    """Two independent views of each image, stacked as (B, 2, size, size, C)."""
    seeds = tf.random.experimental.stateless_split(tf.cast(seed, tf.int64), 2, alg="philox")
    return tf.stack([augment(images, recipe, seeds[0]), augment(images, recipe, seeds[1])], axis=1)


_two_views_xla = tf.function(two_views, jit_compile=True)


def two_views_compiled(images, recipe, seed):
    """two_views compiled with XLA (what the host pipeline and the device layer run)."""
    return _two_views_xla(images, recipe, tf.cast(seed, tf.int64))


@keras.saving.register_keras_serializable(package="tf_simsiam")
class TwoViews(keras.layers.Layer):
    """On-device augmentation: images (B, H, W, C) -> stacked views (B, 2, size, size, C).

    Called by the model's train step with a step-dependent seed (`--augment_on=device`). Under a distribution
    strategy with several replicas, each replica folds its replica id into the seed, so that replicas draw
    independent augmentations for their shares of the batch.
    """

    def __init__(self, recipe, seed=0, **kwargs):
        super().__init__(**kwargs)
        self.recipe = recipe if isinstance(recipe, Recipe) else Recipe(**recipe)
        self.seed = int(seed)

    def call(self, images, step):
        seed = tf.stack([tf.cast(self.seed, tf.int64), tf.cast(step, tf.int64)])
        context = tf.distribute.get_replica_context()
        if context is not None and context.num_replicas_in_sync > 1:
            seed = tf.random.experimental.stateless_fold_in(seed, context.replica_id_in_sync_group)
        return two_views_compiled(images, self.recipe, seed)

    def get_config(self):
        return {**super().get_config(), "recipe": dataclasses.asdict(self.recipe), "seed": self.seed}
