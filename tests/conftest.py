import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")  # the suite is CPU-only and deterministic

import keras  # noqa: E402
import pytest  # noqa: E402
import tensorflow as tf  # noqa: E402

# Two logical CPU devices for the MirroredStrategy tests (tests/test_distribute.py); the other tests run on the
# first one, as before. This must happen before TensorFlow starts, hence here.
tf.config.set_logical_device_configuration(tf.config.list_physical_devices("CPU")[0],
                                           [tf.config.LogicalDeviceConfiguration()] * 2)


@pytest.fixture(autouse=True)
def _seed_and_policy():
    keras.utils.set_random_seed(0)
    yield
    keras.mixed_precision.set_global_policy("float32")


def tiny_backbone(input_shape=(16, 16, 1), width=4, **kwargs):
    from tf_simsiam.models import backbones
    return backbones.resnet18(input_shape, width=width, **kwargs)


def tiny_simsiam(input_shape=(16, 16, 1), backbone_sync_bn=False, **kwargs):
    from tf_simsiam import SimSiam
    kwargs = {"proj_dim": 32, "pred_dim": 8, "proj_layers": 2, **kwargs}
    return SimSiam(tiny_backbone(input_shape, sync_bn=backbone_sync_bn), **kwargs)


def fit_replicated(strategy, build, images, recipe, steps=3, batch=16, seed=2):
    """(model, history): `build()` (a compiled model) made under strategy.scope(), then fitted for `steps` steps of
    view pairs of `images` (global batch `batch`, split across the replicas): the mirrored-update tests' run."""
    from tf_simsiam import distribute
    from tf_simsiam.data import pipeline
    with strategy.scope():
        model = build()
    dataset = distribute.distribute_dataset(strategy, lambda context: pipeline.pretrain_dataset(
        images, batch, recipe, seed=seed, input_context=context))
    return model, model.fit(dataset, epochs=1, steps_per_epoch=steps, verbose=0).history
