"""The papers' augmentations as batched, vectorised TF ops with per-image random parameters.

The same function runs in a tf.data pipeline (host) or inside the train step (device): static shapes, no Python
randomness, no data-dependent control flow, XLA-compatible. Randomness is stateless: `seed` is a shape-[2] int
tensor, so a given (seed, batch) pair gives the same views on every run and on either placement.

Order and semantics follow torchvision, as in the official SimSiam code:
    RandomResizedCrop(size, scale, ratio)      -> interpolation matrices, bilinear with antialiasing (like PIL)
    RandomApply(ColorJitter(b, c, s, h), p)    -> the four adjustments in a random order per image
    RandomGrayscale(p)
    RandomApply(GaussianBlur(sigma), p)        -> separable Gaussian, reflect padding, as matrices
    RandomSolarize(128, p)                     -> levels >= 128 inverted (BYOL's recipe; p=0 elsewhere)
    RandomHorizontalFlip()                     -> folded into the crop matrices (it commutes with the rest)
Crop, resize and flip are one pair of per-image matrices Ay (size x H) and Ax (size x W):
views = Ay @ image @ Ax^T, which is two small matmuls instead of gathers. The crop box is drawn on each image's own
height and width (images of several sizes lie on a padded canvas with their `sizes`), and the matrices give no
weight outside the box, so the result is that of cropping first and resizing the crop, as PIL does.

Two views are made in stages: `two_crops` draws both views' boxes and flips, `crops_of` cuts and resizes them
(uint8, rounded as a PIL crop is), `two_views_of_crops` applies the colour stages and rounds the views to uint8.
A stream runs the same stages, its crops decoded from the file one image at a time (data.streams).

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
    """Augmentation hyperparameters. Probabilities are per image; blur_prob and solarize_prob are one probability
    for both views or a pair (first view, second view), as in BYOL's asymmetric recipe."""

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
    solarize_prob: float = 0.0

    def __post_init__(self):
        for name in ("crop_scale", "crop_ratio", "jitter", "blur_sigma"):  # from a saved config they are lists
            object.__setattr__(self, name, tuple(getattr(self, name)))
        for name in PER_VIEW:
            value = getattr(self, name)
            if isinstance(value, (list, tuple)):
                if len(value) != 2:
                    raise ValueError(f"{name} must be one probability or a pair (first view, second view), "
                                     f"got {value!r}")
                object.__setattr__(self, name, tuple(value))
        if not isinstance(self.size, int) or self.size <= 0:
            raise ValueError(f"augmentation size must be a positive integer, got {self.size!r}")
        low, high = self.crop_scale
        if not 0 < low <= high <= 1:
            raise ValueError(f"crop_scale must satisfy 0 < low <= high <= 1, got {self.crop_scale}")
        for name in ("flip_prob", "jitter_prob", "grayscale_prob", *PER_VIEW):
            if not all(0 <= p <= 1 for p in _pair(getattr(self, name))):
                raise ValueError(f"{name} must be a probability in [0, 1], got {getattr(self, name)}")

    def of_view(self, view):
        """The recipe of view 0 or 1: the per-view probabilities resolved to that view's."""
        return dataclasses.replace(self, **{name: _pair(getattr(self, name))[view] for name in PER_VIEW})

    def kernel_size(self):
        size = self.blur_kernel_size or 2 * math.ceil(3 * self.blur_sigma[1]) + 1
        return min(size | 1, 2 * self.size - 1)


PER_VIEW = ("blur_prob", "solarize_prob")  # the probabilities a recipe may set per view


def _pair(value):
    return tuple(value) if isinstance(value, (list, tuple)) else (value, value)


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


def byol(size=224, blur=None):
    """BYOL's asymmetric augmentation (its Table 6; Barlow Twins and VICReg use it too): random resized crop
    0.08-1 and flip; colour jitter (brightness 0.4, contrast 0.4, saturation 0.2, hue 0.1) with p=0.8; grayscale
    p=0.2; Gaussian blur (sigma 0.1-2, a 23 x 23 kernel at 224: 10% of the side) with p=1.0 on the first view and
    0.1 on the second; solarisation with p=0 and 0.2. The blur is left out for small images (CIFAR, as in
    solo-learn's CIFAR recipes) unless blur=True."""
    blur = size > 64 if blur is None else blur
    return Recipe(size, crop_scale=(0.08, 1.0), jitter=(0.4, 0.4, 0.2, 0.1), blur_prob=(1.0, 0.1) if blur else 0.0,
                  blur_kernel_size=max(3, size // 10) | 1, solarize_prob=(0.0, 0.2))


RECIPES = {"simsiam_imagenet": simsiam_imagenet, "simsiam_cifar": simsiam_cifar, "simclr": simclr, "byol": byol}


def _uniform(seed, shape, low=0.0, high=1.0):
    return tf.random.stateless_uniform(shape, seed=seed, minval=low, maxval=high, alg="philox")


def _resize_matrices(start, length, in_size, out_size):
    """(B, out, in) bilinear weights sampling the crop [start, start+length) of a 1-D signal at out_size points.

    Pixel j covers [j, j+1). A triangle filter, widened by the downscaling factor (antialiasing as in PIL), is
    centred on each output pixel and cut to the crop's own pixels, as when the crop is cut out first and then
    resized (PIL never reads outside the image it resizes); the weights of each row sum to 1.
    """
    scale = length / out_size  # (B,)
    centres = start[:, None] + (tf.range(out_size, dtype=tf.float32)[None, :] + 0.5) * scale[:, None]
    support = tf.maximum(scale, 1.0)[:, None, None]
    pixels = tf.range(in_size, dtype=tf.float32)[None, None, :]
    inside = (pixels >= start[:, None, None]) & (pixels < (start + length)[:, None, None])
    weights = tf.nn.relu(1.0 - tf.abs(pixels + 0.5 - centres[:, :, None]) / support)
    weights = tf.where(inside, weights, 0.0)
    return weights / tf.maximum(tf.reduce_sum(weights, axis=-1, keepdims=True), 1e-12)


def crop_boxes(seed, batch, height, width, scale, ratio, attempts=10):
    """torchvision's RandomResizedCrop.get_params for a whole batch: (top, left, h, w) in pixels, float32 (B,).

    `height` and `width` are each image's own size: numbers, or tensors (B,). Up to `attempts` (area, log-ratio)
    draws per image; the first that fits wins, else the centre crop with the aspect ratio clamped into `ratio`
    (torchvision's fallback).
    """
    seeds = tf.random.experimental.stateless_split(seed, 4, alg="philox")
    height = tf.broadcast_to(tf.cast(height, tf.float32), [batch])
    width = tf.broadcast_to(tf.cast(width, tf.float32), [batch])
    area = (height * width)[:, None] * _uniform(seeds[0], [batch, attempts], *scale)
    aspect = tf.exp(_uniform(seeds[1], [batch, attempts], math.log(ratio[0]), math.log(ratio[1])))
    w = tf.round(tf.sqrt(area * aspect))
    h = tf.round(tf.sqrt(area / aspect))
    fits = (w > 0) & (w <= width[:, None]) & (h > 0) & (h <= height[:, None])
    first = tf.argmax(tf.cast(fits, tf.int32), axis=1, output_type=tf.int32)
    w = tf.gather(w, first, batch_dims=1)
    h = tf.gather(h, first, batch_dims=1)
    any_fits = tf.reduce_any(fits, axis=1)
    in_ratio = width / height
    fallback_w = tf.where(in_ratio > ratio[1], tf.round(height * ratio[1]), width)
    fallback_h = tf.where(in_ratio < ratio[0], tf.round(width / ratio[0]), height)
    w = tf.where(any_fits, w, fallback_w)
    h = tf.where(any_fits, h, fallback_h)
    # randint(0, n - k + 1); the minimum guards against float32 rounding u * (n - k + 1) up to n - k + 1
    top = tf.minimum(tf.floor(_uniform(seeds[2], [batch]) * (height - h + 1)), height - h)
    left = tf.minimum(tf.floor(_uniform(seeds[3], [batch]) * (width - w + 1)), width - w)
    top = tf.where(any_fits, top, tf.floor((height - h) / 2))
    left = tf.where(any_fits, left, tf.floor((width - w) / 2))
    return top, left, h, w


def _view_seeds(seed):
    """(2, 5, 2): per view, the seeds of crop, flip, colour jitter, grayscale and blur."""
    return tf.stack([tf.random.experimental.stateless_split(s, 5, alg="philox")
                     for s in tf.unstack(tf.random.experimental.stateless_split(tf.cast(seed, tf.int64), 2,
                                                                                 alg="philox"))])


def crop_params(seeds, recipe, batch, height, width):
    """(top, left, h, w, flip) of one view, each (B,): the crop box and the horizontal flip."""
    top, left, h, w = crop_boxes(seeds[0], batch, height, width, recipe.crop_scale, recipe.crop_ratio)
    return top, left, h, w, _uniform(seeds[1], [batch]) < recipe.flip_prob


def _to_levels(images):
    """Rounded to the 256 levels of a uint8 image (as each PIL transform of torchvision's pipeline rounds),
    still float in [0, 1]."""
    return tf.round(tf.clip_by_value(images, 0.0, 1.0) * 255.0) / 255.0


def resized_crops(images, box, size):
    """The crops box = (top, left, h, w, flip) of a batch of images (B, H, W, C) in [0, 1], resized to
    size x size as torchvision's resized_crop on a PIL image: crop, then an antialiased bilinear resize of
    the crop alone (pixels beyond the box, such as a canvas' padding, get no weight); then the flip."""
    top, left, h, w, flip = box
    rows = _resize_matrices(top, h, tf.shape(images)[1], size)
    cols = _resize_matrices(left, w, tf.shape(images)[2], size)
    cols = tf.where(flip[:, None, None], tf.reverse(cols, axis=[1]), cols)
    return _to_levels(tf.einsum("bkh,bhwc,blw->bklc", rows, images, cols))


def _as_float(images):
    return tf.cast(images, tf.float32) / 255.0 if images.dtype == tf.uint8 else tf.cast(images, tf.float32)


def photometric(views, recipe, seeds, view=0):
    """Colour jitter, grayscale, blur and solarisation of crops (B, size, size, C) in [0, 1] as view 0 or 1 of
    the recipe; seeds (5, 2) of the view."""
    recipe = recipe.of_view(view)
    views = color_jitter(views, seeds[2], recipe.jitter, recipe.jitter_prob)
    views = random_grayscale(views, seeds[3], recipe.grayscale_prob)
    views = gaussian_blur(views, seeds[4], recipe.blur_sigma, recipe.blur_prob, recipe.kernel_size())
    views = random_solarize(views, tf.random.experimental.stateless_fold_in(seeds[4], 1), recipe.solarize_prob)
    return _to_levels(views)


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


def random_solarize(images, seed, prob):
    """torchvision's RandomSolarize(threshold=128, p) of images in [0, 1], rounded to the 256 levels first (as the
    PIL image it is applied to): each image with probability p has its levels >= 128 inverted (x -> 1 - x)."""
    if prob == 0:
        return images
    images = _to_levels(images)
    apply = _uniform(seed, [tf.shape(images)[0], 1, 1, 1]) < prob
    return tf.where(apply & (images > 127.5 / 255.0), 1.0 - images, images)


def augment(images, recipe, seed, sizes=None):
    """One augmented view of each image, float in [0, 1] on the 256 uint8 levels.

    images: (B, H, W, C) uint8 (or floats in [0, 1]); sizes: optional (B, 2) int (height, width) of each image
    in the top-left corner of its canvas (images of several sizes padded to one shape), else every image fills
    it; seed: shape [2].
    """
    seeds = tf.random.experimental.stateless_split(tf.cast(seed, tf.int64), 5, alg="philox")
    return _view(_as_float(images), recipe, seeds, sizes)


def _view(images, recipe, seeds, sizes):
    batch = tf.shape(images)[0]
    height, width = (images.shape[1], images.shape[2]) if sizes is None else (sizes[:, 0], sizes[:, 1])
    crops = resized_crops(images, crop_params(seeds, recipe, batch, height, width), recipe.size)
    return photometric(crops, recipe, seeds)


def two_crops(seed, recipe, sizes):
    """The crop boxes and flips of both views of a batch: (B, 2, 5) float32 rows (top, left, h, w, flip), drawn
    on each image's own height and width, sizes (B, 2)."""
    seeds = _view_seeds(seed)
    sizes = tf.cast(sizes, tf.float32)
    batch = tf.shape(sizes)[0]
    params = [tf.stack([tf.cast(p, tf.float32) for p in crop_params(seeds[v], recipe, batch, sizes[:, 0],
                                                                      sizes[:, 1])], axis=1) for v in range(2)]
    return tf.stack(params, axis=1)


def _box(boxes, view):
    return [boxes[:, view, i] for i in range(4)] + [boxes[:, view, 4] > 0.5]


def crops_of(images, boxes, size):
    """The resized crops (B, 2, size, size, C) uint8 of both views, boxes (B, 2, 5) from `two_crops`."""
    images = _as_float(images)
    crops = [resized_crops(images, _box(boxes, v), size) for v in range(2)]
    return tf.cast(tf.round(tf.stack(crops, axis=1) * 255.0), tf.uint8)


def two_views_of_crops(crops, recipe, seed):
    """Both views' colour stages (jitter, grayscale, blur, solarisation) on resized crops (B, 2, size, size, C)
    uint8."""
    crops = _as_float(crops)
    seeds = _view_seeds(seed)
    views = [photometric(crops[:, v], recipe, seeds[v], v) for v in range(2)]
    return tf.cast(tf.round(tf.stack(views, axis=1) * 255.0), tf.uint8)


def _full_sizes(images):
    return tf.tile(tf.constant([list(images.shape[1:3])], tf.int32), [tf.shape(images)[0], 1])


def two_views(images, recipe, seed, sizes=None):
    """Two independent views of each image, stacked as (B, 2, size, size, C) uint8 (see `augment`): the crops
    (`two_crops`, `crops_of`), then the colour stages (`two_views_of_crops`). Streams run the same stages with
    the crops decoded one image at a time."""
    images = tf.convert_to_tensor(images)
    sizes = _full_sizes(images) if sizes is None else sizes
    return two_views_of_crops(crops_of(images, two_crops(seed, recipe, sizes), recipe.size), recipe, seed)


_two_crops_xla = tf.function(two_crops, jit_compile=True)
_crops_of_xla = tf.function(crops_of, jit_compile=True)
_two_views_of_crops_xla = tf.function(two_views_of_crops, jit_compile=True)
CROP_CHUNK_BYTES = 2 ** 28  # float32 canvas bytes resized at a time: bounds the working memory of large images


def two_crops_compiled(seed, recipe, sizes):
    return _two_crops_xla(tf.cast(seed, tf.int64), recipe, tf.cast(sizes, tf.int32))


def crops_of_compiled(images, boxes, size):
    """crops_of compiled with XLA. When the batch of canvases is large in float32, a chunk of images at a time,
    every chunk of the same shape (the last one padded), so an image's crops do not depend on the batch size."""
    batch = images.shape[0]
    chunk = max(1, CROP_CHUNK_BYTES // (4 * math.prod(images.shape[1:])))
    if batch is None or chunk >= batch:
        return _crops_of_xla(images, boxes, size)
    pad = -batch % chunk
    images = tf.pad(images, [[0, pad], [0, 0], [0, 0], [0, 0]])
    boxes = tf.pad(boxes, [[0, pad], [0, 0], [0, 0]])  # empty boxes: zero crops, cut off below
    crops = [_crops_of_xla(images[i:i + chunk], boxes[i:i + chunk], size) for i in range(0, batch + pad, chunk)]
    return tf.concat(crops, axis=0)[:batch]


def two_views_of_crops_compiled(crops, recipe, seed):
    return _two_views_of_crops_xla(crops, recipe, tf.cast(seed, tf.int64))


def two_views_compiled(images, recipe, seed, sizes=None):
    """two_views with each stage compiled with XLA (what the host pipeline and the device layer run)."""
    images = tf.convert_to_tensor(images)
    sizes = _full_sizes(images) if sizes is None else sizes
    boxes = two_crops_compiled(seed, recipe, sizes)
    return two_views_of_crops_compiled(crops_of_compiled(images, boxes, recipe.size), recipe, seed)


@keras.saving.register_keras_serializable(package="tf_simsiam")
class TwoViews(keras.layers.Layer):
    """On-device augmentation: images (B, H, W, C) -> stacked views (B, 2, size, size, C) uint8.

    The input is what `pipeline.pretrain_dataset(..., augment_on="device")` yields: images of one size; a dict
    {"images": canvases, "sizes": (B, 2)} for images of several sizes; or {"crops": (B, 2, size, size, C)}
    from a stream, whose crops are cut while decoding on the host, leaving the colour stages to the device.

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
        if isinstance(images, dict) and "crops" in images:
            return two_views_of_crops_compiled(images["crops"], self.recipe, seed)
        if isinstance(images, dict):
            return two_views_compiled(images["images"], self.recipe, seed, images["sizes"])
        return two_views_compiled(images, self.recipe, seed)

    def get_config(self):
        return {**super().get_config(), "recipe": dataclasses.asdict(self.recipe), "seed": self.seed}
