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


def test_resnet50_from_keras_applications():
    model = backbones.resnet50((28, 28, 1), sync_bn=True)
    assert model(np.random.rand(2, 28, 28, 1).astype("float32")).shape == (2, 2048)
    bns = batch_norms(model)
    assert len(bns) == 53 and all(bn.synchronized for bn in bns)
    zero = [bn.name for bn in bns if not np.any(bn.gamma.numpy())]
    assert len(zero) == 16 and all(name.endswith("_3_bn") for name in zero)


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
    with pytest.raises(ValueError, match="unknown backbone 'vgg'"):
        backbones.get("vgg", (16, 16, 3))


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
