import os
import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf

from tf_simsiam.models import backbones

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def batch_norms(model):
    found = []
    for layer in model.layers:
        if isinstance(layer, keras.Model):
            found += batch_norms(layer)
        elif isinstance(layer, keras.layers.BatchNormalization):
            found.append(layer)
    return found


@pytest.mark.parametrize("shape", [(28, 28, 1), (32, 32, 3), (20, 24, 3)])
def test_resnet18_features(shape):
    model = backbones.resnet18(shape, width=4)
    assert model(np.random.rand(2, *shape).astype("float32")).shape == (2, 32)


def test_resnet18_cifar_stem_keeps_resolution():
    model = backbones.resnet18((32, 32, 3), width=4)
    assert model.get_layer("stem_conv").kernel.shape == (3, 3, 3, 4)
    assert model.get_layer("stem_conv").strides == (1, 1)
    assert not any(isinstance(layer, keras.layers.MaxPooling2D) and layer.pool_size != (1, 1) for layer in model.layers)
    assert model.get_layer("stage1_block2_out").output.shape[1:3] == (32, 32)
    assert model.get_layer("stage4_block2_out").output.shape[1:3] == (4, 4)


def test_resnet18_zero_initialises_last_bn_of_each_block():
    model = backbones.resnet18((16, 16, 3), width=4)
    zero = sorted(bn.name for bn in batch_norms(model) if not np.any(bn.gamma.numpy()))
    assert zero == sorted(f"stage{s}_block{b}_2_bn" for s in range(1, 5) for b in (1, 2))


def test_resnet50_is_torchvisions_v1_5():
    model = backbones.resnet50((32, 32, 3), sync_bn=True)
    assert model(np.random.rand(2, 32, 32, 3).astype("float32")).shape == (2, 2048)
    # torchvision.models.resnet50() has 25,557,032 parameters, 2,049,000 of them in its classifier
    assert sum(int(np.prod(w.shape)) for w in model.trainable_weights) == 23_508_032
    convs = [layer for layer in model.layers if isinstance(layer, keras.layers.Conv2D)]
    assert len(convs) == 53 and not any(conv.use_bias for conv in convs)
    # v1.5: a down-sampling block has its stride on the 3x3 conv, none on the first 1x1
    assert model.get_layer("stage2_block1_2_conv").strides == (2, 2)
    assert model.get_layer("stage2_block1_1_conv").strides == (1, 1)
    # Kaiming normal, fan-out: std sqrt(2 / (k * k * out))
    kernel = model.get_layer("stage3_block2_2_conv").kernel.numpy()
    np.testing.assert_allclose(kernel.std(), np.sqrt(2 / (3 * 3 * 256)), rtol=0.02)
    bns = batch_norms(model)
    assert len(bns) == 53 and all(bn.synchronized for bn in bns)
    zero = [bn.name for bn in bns if not np.any(bn.gamma.numpy())]
    assert len(zero) == 16 and all(name.endswith("_3_bn") for name in zero)


@pytest.mark.parametrize("name", ["MobileNetV3Small", "MobileNetV2", "MobileNet"])
def test_a_keras_application_trains_a_step_and_exports(tmp_path, name):
    from tf_simsiam import SimSiam, export, optim
    from tf_simsiam.models.batch_norm import BatchNormalization
    backbone = backbones.get(f"keras:{name}", (32, 32, 1))
    bns = batch_norms(backbone)
    assert bns and all(isinstance(bn, BatchNormalization) for bn in bns)  # the project's: fused, SyncBN
    model = SimSiam(backbone, proj_dim=16, pred_dim=4, proj_layers=2)
    assert model.one_pass
    model.compile(optimizer=optim.simsiam_optimizer(4, 2))
    views = np.random.default_rng(0).random((4, 2, 32, 32, 1), dtype=np.float32)
    before = [w.numpy().copy() for w in backbone.trainable_weights]
    logs = model.train_on_batch(views, return_dict=True)
    assert np.isfinite(logs["loss"])
    assert any(not np.array_equal(a, w.numpy()) for a, w in zip(before, backbone.trainable_weights))
    path = export.export_encoder(backbone, str(tmp_path / "export"), {"name": f"keras:{name}"})
    loaded = tf.saved_model.load(os.path.join(path, "saved_model"))
    images = np.random.default_rng(1).integers(0, 256, (3, 32, 32, 1)).astype("uint8")
    np.testing.assert_allclose(loaded.serve(images).numpy(),
                               backbone(images.astype("float32") / 255.0, training=False).numpy(),
                               rtol=1e-4, atol=1e-5)


def test_sync_bn_runs_on_one_device():
    model = backbones.resnet18((16, 16, 3), width=4, sync_bn=True)
    assert all(bn.synchronized for bn in batch_norms(model))
    before = model.get_layer("stem_bn").moving_mean.numpy().copy()
    model(np.random.rand(4, 16, 16, 3).astype("float32"), training=True)
    assert not np.allclose(before, model.get_layer("stem_bn").moving_mean.numpy())


@pytest.mark.parametrize("kwargs, match", [
    ({"input_shape": (16, 16, 2)}, "1 or 3 channels"),
    ({"input_shape": (16, 16)}, "1 or 3 channels"),
    ({"input_shape": (16, 16, 3), "width": 0}, "width must be a positive integer"),
])
def test_resnet18_rejects_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        backbones.resnet18(**kwargs)


def test_unknown_backbone_name():
    with pytest.raises(ValueError, match="--backbone must be one of resnet18, resnet50, keras:NAME; got 'vgg'"):
        backbones.get("vgg", (16, 16, 3))
    with pytest.raises(ValueError, match="keras.applications has no model 'ResNet5'"):
        backbones.get("keras:ResNet5", (16, 16, 3))


def test_strided_shortcut_is_a_strided_1x1_convolution():
    # The shortcut subsamples, then convolves at stride 1: the strided 1x1 convolution of the paper's ResNet.
    model = backbones.resnet18((16, 16, 3), width=4)
    inputs = model.get_layer("stage2_block1_down_subsample").input
    shortcut = keras.Model(model.input, model.get_layer("stage2_block1_down_conv").output)
    trunk = keras.Model(model.input, inputs)
    x = np.random.default_rng(0).random((3, 16, 16, 3)).astype("float32")
    kernel = model.get_layer("stage2_block1_down_conv").kernel
    expected = tf.nn.conv2d(trunk(x), kernel, strides=2, padding="VALID")
    np.testing.assert_allclose(shortcut(x), expected, atol=1e-5)


def test_gradient_on_an_odd_batch(tmp_path):
    # oneDNN's input gradient of strided 1x1 convolutions corrupts the heap on odd batches (TF 2.21, CPU);
    # in a fresh process, since a corrupted heap may only crash later.
    code = ("import numpy as np, tensorflow as tf\n"
            "from tf_simsiam.models import backbones\n"
            "m = backbones.resnet18((28, 28, 1), width=4)\n"
            "x = tf.constant(np.random.default_rng(0).random((29, 28, 28, 1), np.float32))\n"
            "@tf.function\n"
            "def f(x):\n"
            "    with tf.GradientTape() as t:\n"
            "        y = tf.reduce_sum(m(x, training=True) ** 2)\n"
            "    return t.gradient(y, m.trainable_variables)\n"
            "for _ in range(10): f(x)\n"
            "print('done')\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert out.returncode == 0 and "done" in out.stdout, out.stderr[-2000:]
