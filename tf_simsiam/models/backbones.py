"""Backbones (the encoder f without its classifier), returning pooled features.

Every backbone takes float images in [0, 1] of shape (H, W, C), C = 1 or 3, and carries its preprocessing inside
(so an exported encoder does too). ResNet-18 (CIFAR stem) and ResNet-50 (torchvision's v1.5) normalise with a
fixed per-channel mean/std and zero-initialise the last BN gamma of each residual block, as the official SimSiam
code does (`zero_init_residual=True`); `keras:NAME` is any keras.applications model with its own preprocessing. `sync_bn=True` makes every BatchNormalization synchronized across replicas; the
default "auto" does so when the backbone is built under a strategy with several replicas.
"""

import sys

import keras

from tf_simsiam.models.batch_norm import BatchNormalization, batch_norm, resolve_sync_bn

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def _normalization(channels, mean, std):
    if mean is None:
        mean = IMAGENET_MEAN if channels == 3 else (sum(IMAGENET_MEAN) / 3,) * channels
    if std is None:
        std = IMAGENET_STD if channels == 3 else (sum(IMAGENET_STD) / 3,) * channels
    mean, std = tuple(float(m) for m in mean), tuple(float(s) for s in std)
    if len(mean) != channels or len(std) != channels:
        raise ValueError(f"mean and std need one value per channel ({channels}), got mean={mean}, std={std}")
    return keras.layers.Normalization(mean=mean, variance=[s * s for s in std], name="normalize")


def _check_input_shape(input_shape):
    if len(input_shape) != 3 or input_shape[-1] not in (1, 3):
        raise ValueError(f"input_shape must be (height, width, channels) with 1 or 3 channels, got {input_shape}")
    for size in input_shape[:2]:
        if size is not None and size < 8:
            raise ValueError(f"input_shape height and width must be at least 8 pixels, got {input_shape}")


def _conv(filters, kernel_size, strides, name):
    # torchvision's ResNet init: kaiming_normal_(mode="fan_out", nonlinearity="relu"), no bias.
    init = keras.initializers.VarianceScaling(2.0, mode="fan_out", distribution="untruncated_normal")
    return keras.layers.Conv2D(filters, kernel_size, strides=strides, padding="same" if strides == 1 else "valid",
                               use_bias=False, kernel_initializer=init, name=name)


def _conv_bn(x, filters, kernel_size, strides, sync_bn, name, zero_gamma=False):
    if strides != 1 and kernel_size > 1:  # pad like PyTorch (1 on every side), not like TF's "same"
        x = keras.layers.ZeroPadding2D(kernel_size // 2, name=f"{name}_pad")(x)
    elif strides != 1:
        # A strided 1x1 convolution reads every `strides`-th pixel: subsample, then convolve at stride 1. Same
        # weights and outputs; it also avoids a oneDNN fault (heap corruption) in the input gradient of strided
        # 1x1 convolutions on batches of odd size, seen with TF 2.21 on CPU.
        x = keras.layers.MaxPooling2D(1, strides, name=f"{name}_subsample")(x)
        strides = 1
    x = _conv(filters, kernel_size, strides, name=f"{name}_conv")(x)
    return batch_norm(sync_bn, zero_init=zero_gamma, name=f"{name}_bn")(x)


def _basic_block(x, filters, strides, sync_bn, name):
    shortcut = x
    if strides != 1 or x.shape[-1] != filters:
        shortcut = _conv_bn(x, filters, 1, strides, sync_bn, name=f"{name}_down")
    x = _conv_bn(x, filters, 3, strides, sync_bn, name=f"{name}_1")
    x = keras.layers.ReLU(name=f"{name}_1_relu")(x)
    x = _conv_bn(x, filters, 3, 1, sync_bn, name=f"{name}_2", zero_gamma=True)
    x = keras.layers.Add(name=f"{name}_add")([x, shortcut])
    return keras.layers.ReLU(name=f"{name}_out")(x)


def resnet18(input_shape=(32, 32, 3), width=64, sync_bn="auto", mean=None, std=None, name="resnet18"):
    """ResNet-18 with the CIFAR stem of the SimSiam appendix: 3x3 conv stride 1, no max-pool.

    width is the channel count of the first stage (64 in the paper); stages have width x (1, 2, 4, 8) and the
    pooled feature has 8 * width dimensions. width=16 or 32 gives a variant that trains on a CPU.
    """
    input_shape = tuple(input_shape)
    _check_input_shape(input_shape)
    if not isinstance(width, int) or width <= 0:
        raise ValueError(f"width must be a positive integer, got {width!r}")
    inputs = keras.Input(input_shape, name="images")
    x = _normalization(input_shape[-1], mean, std)(inputs)
    x = _conv_bn(x, width, 3, 1, sync_bn, name="stem")
    x = keras.layers.ReLU(name="stem_relu")(x)
    for stage, (multiplier, strides) in enumerate(((1, 1), (2, 2), (4, 2), (8, 2)), start=1):
        for block in range(2):
            x = _basic_block(x, width * multiplier, strides if block == 0 else 1, sync_bn,
                             name=f"stage{stage}_block{block + 1}")
    features = keras.layers.GlobalAveragePooling2D(name="avg_pool")(x)
    return keras.Model(inputs, features, name=name)


def _bottleneck(x, filters, strides, sync_bn, name):
    """torchvision's Bottleneck (ResNet v1.5): 1x1 -> 3x3 (the stride) -> 1x1 (4 x filters, zero gamma)."""
    shortcut = x
    if strides != 1 or x.shape[-1] != 4 * filters:
        shortcut = _conv_bn(x, 4 * filters, 1, strides, sync_bn, name=f"{name}_down")
    x = keras.layers.ReLU(name=f"{name}_1_relu")(_conv_bn(x, filters, 1, 1, sync_bn, name=f"{name}_1"))
    x = keras.layers.ReLU(name=f"{name}_2_relu")(_conv_bn(x, filters, 3, strides, sync_bn, name=f"{name}_2"))
    x = _conv_bn(x, 4 * filters, 1, 1, sync_bn, name=f"{name}_3", zero_gamma=True)
    x = keras.layers.Add(name=f"{name}_add")([x, shortcut])
    return keras.layers.ReLU(name=f"{name}_out")(x)


def resnet50(input_shape=(224, 224, 3), sync_bn="auto", mean=None, std=None, name="resnet50"):
    """torchvision's ResNet-50 (v1.5, the paper's): 7x7 stride-2 stem, 3x3 stride-2 max-pool, bottleneck stages
    (3, 4, 6, 3) of widths 64-512 with the stride on each down-sampling block's 3x3 conv, no conv biases, Kaiming
    fan-out init, the last BN gamma of each block 0; 2048-d pooled features (23,508,032 parameters, as
    torchvision's without its classifier)."""
    input_shape = tuple(input_shape)
    _check_input_shape(input_shape)
    inputs = keras.Input(input_shape, name="images")
    x = _normalization(input_shape[-1], mean, std)(inputs)
    x = keras.layers.ReLU(name="stem_relu")(_conv_bn(x, 64, 7, 2, sync_bn, name="stem"))
    # MaxPool2d(3, 2, padding=1): zero padding is -inf padding after a ReLU
    x = keras.layers.MaxPooling2D(3, 2, name="stem_pool")(keras.layers.ZeroPadding2D(1, name="stem_pool_pad")(x))
    for stage, (filters, blocks, strides) in enumerate(((64, 3, 1), (128, 4, 2), (256, 6, 2), (512, 3, 2)), start=1):
        for block in range(blocks):
            x = _bottleneck(x, filters, strides if block == 0 else 1, sync_bn, name=f"stage{stage}_block{block + 1}")
    features = keras.layers.GlobalAveragePooling2D(name="avg_pool")(x)
    return keras.Model(inputs, features, name=name)


KERAS_PREFIX = "keras:"


@keras.saving.register_keras_serializable(package="tf_simsiam")
class ApplicationPreprocessing(keras.layers.Layer):
    """A keras.applications model's own preprocessing (its module's preprocess_input) of images in [0, 1]."""

    def __init__(self, application, **kwargs):
        super().__init__(**kwargs)
        self.application = application
        self._preprocess = sys.modules[_application(application).__module__].preprocess_input

    def call(self, images):
        return self._preprocess(images * 255.0)

    def get_config(self):
        return {**super().get_config(), "application": self.application}


def _application(name):
    constructor = getattr(keras.applications, name, None)
    if not callable(constructor) or not name[:1].isupper():
        raise ValueError(f"--backbone={KERAS_PREFIX}{name}: keras.applications has no model {name!r} (for "
                         f"example keras:ResNet50, keras:EfficientNetV2B0, keras:ConvNeXtTiny, "
                         f"keras:MobileNetV3Small)")
    return constructor


def keras_application(name, input_shape=(224, 224, 3), sync_bn="auto"):
    """keras.applications.NAME as a backbone: random weights, top removed, average-pooled, images in [0, 1] with
    the model's own preprocessing inside (1-channel images repeated to 3), its BatchNormalization layers made the
    project's (the fused kernel, SyncBN; their momentum and epsilon kept)."""
    input_shape = tuple(input_shape)
    _check_input_shape(input_shape)
    constructor = _application(name)
    base = constructor(weights=None, include_top=False, pooling="avg", input_shape=(*input_shape[:2], 3))
    synchronized = resolve_sync_bn(sync_bn)

    def project_batch_norm(layer):
        if isinstance(layer, keras.layers.BatchNormalization):
            return BatchNormalization.from_config({**layer.get_config(), "synchronized": synchronized})
        return layer.__class__.from_config(layer.get_config())

    base = keras.models.clone_model(base, clone_function=project_batch_norm)
    inputs = keras.Input(input_shape, name="images")
    x = inputs if input_shape[-1] == 3 else keras.layers.Concatenate(name="to_rgb")([inputs] * 3)
    x = ApplicationPreprocessing(name, name="preprocess")(x)
    return keras.Model(inputs, base(x), name=name.lower())


BACKBONES = ("resnet18", "resnet50", f"{KERAS_PREFIX}NAME")


def check_name(name, flag="--backbone"):
    """Raises ValueError unless name is resnet18, resnet50 or keras:NAME of a keras.applications model."""
    if name.startswith(KERAS_PREFIX):
        _application(name[len(KERAS_PREFIX):])
    elif name not in ("resnet18", "resnet50"):
        raise ValueError(f"{flag} must be one of {', '.join(BACKBONES)}; got {name!r}")


def get(name, input_shape, width=64, sync_bn="auto", mean=None, std=None):
    """Builds a backbone by name: "resnet18" (with width), "resnet50" or "keras:NAME" (keras.applications.NAME,
    which brings its own preprocessing: mean and std are not used)."""
    check_name(name)
    if name == "resnet18":
        return resnet18(input_shape, width=width, sync_bn=sync_bn, mean=mean, std=std)
    if name == "resnet50":
        return resnet50(input_shape, sync_bn=sync_bn, mean=mean, std=std)
    return keras_application(name[len(KERAS_PREFIX):], input_shape, sync_bn=sync_bn)


def from_encoder_config(config, sync_bn="auto"):
    """The backbone described by an export's `encoder.json` (name, input_shape, width, mean, std)."""
    return get(config["name"], tuple(config["input_shape"]), width=config.get("width", 64), sync_bn=sync_bn,
               mean=config.get("mean"), std=config.get("std"))
