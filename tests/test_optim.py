import math

import keras
import numpy as np
import pytest

from tf_simsiam import optim


def test_sgd_step_is_pytorch_sgd_with_coupled_weight_decay():
    lr, momentum, wd = 0.1, 0.9, 0.01
    w0 = np.array([1.0, -2.0, 3.0], "float32")
    grads = [np.array([0.5, 0.5, -1.0], "float32"), np.array([-0.2, 0.1, 0.3], "float32")]
    var = keras.Variable(w0)
    opt = optim.SGD(lr, momentum=momentum, weight_decay=wd)
    w, buf = w0.astype("float64"), np.zeros(3)
    for g in grads:  # torch.optim.SGD: d_p = g + wd * w; buf = momentum * buf + d_p; w -= lr * buf
        opt.apply([g], [var])
        buf = momentum * buf + (g + wd * w)
        w = w - lr * buf
    np.testing.assert_allclose(var.numpy(), w, rtol=1e-6)
    # keras' own SGD(weight_decay=...) decays outside momentum and ends elsewhere
    other = keras.Variable(w0)
    keras_sgd = keras.optimizers.SGD(lr, momentum=momentum, weight_decay=wd)
    for g in grads:
        keras_sgd.apply([g], [other])
    assert not np.allclose(other.numpy(), w, rtol=1e-4)


def test_warmup_cosine_schedule():
    schedule = optim.WarmupCosine(1.0, total_steps=110, warmup_steps=10)
    assert float(schedule(0)) == 0.0
    np.testing.assert_allclose(float(schedule(5)), 0.5)
    np.testing.assert_allclose(float(schedule(10)), 1.0)
    np.testing.assert_allclose(float(schedule(60)), 0.5 * (1 + math.cos(math.pi * 0.5)), atol=1e-6)
    np.testing.assert_allclose(float(schedule(110)), 0.0, atol=1e-7)


def test_simsiam_optimizer_scales_lr_with_batch():
    opt = optim.simsiam_optimizer(batch_size=512, total_steps=100)
    assert opt.schedule.peak_learning_rate == pytest.approx(0.1)  # 0.05 * 512 / 256
    assert opt.l2_weight_decay == 1e-4 and opt.momentum == 0.9


def test_variables_excluded_from_schedule_keep_the_peak_lr():
    schedule = optim.WarmupCosine(0.5, total_steps=4)
    opt = optim.SGD(schedule, momentum=0.0, weight_decay=0.0)
    fixed, scheduled = keras.Variable([0.0]), keras.Variable([0.0])
    opt.exclude_from_schedule([fixed])
    moves_fixed, moves_scheduled = [], []
    for step in range(3):
        before = fixed.numpy()[0], scheduled.numpy()[0]
        opt.apply([np.ones(1, "float32"), np.ones(1, "float32")], [fixed, scheduled])
        moves_fixed.append(before[0] - fixed.numpy()[0])
        moves_scheduled.append(before[1] - scheduled.numpy()[0])
        np.testing.assert_allclose(moves_scheduled[-1], float(schedule(step)), rtol=1e-6)
    np.testing.assert_allclose(moves_fixed, [0.5, 0.5, 0.5], rtol=1e-6)
    assert moves_scheduled[2] < moves_scheduled[0]


@pytest.mark.parametrize("kwargs", [{"momentum": 1.0}, {"weight_decay": -1.0}])
def test_sgd_rejects_bad_hyperparameters(kwargs):
    with pytest.raises(ValueError):
        optim.SGD(0.1, **kwargs)


def test_lars_step_matches_a_hand_computed_update():
    lr, momentum, wd, eta = 0.5, 0.9, 0.01, 1e-3
    kernel0 = np.array([[1.0, -2.0], [3.0, 0.5]], "float32")
    bias0 = np.array([0.3, -0.1], "float32")
    grads = [(np.array([[0.5, 0.5], [-1.0, 0.2]], "float32"), np.array([0.1, -0.4], "float32")),
             (np.array([[-0.2, 0.1], [0.3, 0.0]], "float32"), np.array([0.2, 0.2], "float32"))]
    kernel, bias = keras.Variable(kernel0), keras.Variable(bias0)
    opt = optim.LARS(lr, momentum=momentum, weight_decay=wd, eta=eta)
    w, b = kernel0.astype("float64"), bias0.astype("float64")
    buf_w, buf_b = np.zeros_like(w), np.zeros_like(b)
    for gw, gb in grads:
        opt.apply([gw, gb], [kernel, bias])
        d = gw + wd * w  # the kernel: weight decay, then the trust ratio eta * ||w|| / ||d||
        buf_w = momentum * buf_w + lr * eta * np.linalg.norm(w) / np.linalg.norm(d) * d
        w = w - buf_w
        buf_b = momentum * buf_b + lr * gb  # the bias (rank 1): neither decay nor adaptation
        b = b - buf_b
    np.testing.assert_allclose(kernel.numpy(), w, rtol=1e-5)
    np.testing.assert_allclose(bias.numpy(), b, rtol=1e-5)


def test_lars_zero_norms_and_explicit_exclusion():
    var, other = keras.Variable(np.zeros((2, 2), "float32")), keras.Variable(np.ones((2, 2), "float32"))
    opt = optim.LARS(0.1, momentum=0.0, weight_decay=0.5)
    opt.build([var, other])
    opt.exclude_from_adaptation([other])
    opt.apply([np.ones((2, 2), "float32")] * 2, [var, other])
    np.testing.assert_allclose(var.numpy(), -0.1)  # ||w|| = 0: ratio 1, plain step (its decay term is 0)
    np.testing.assert_allclose(other.numpy(), 0.9)  # excluded: no decay, no adaptation
    clone = optim.LARS.from_config(opt.get_config())
    assert (clone.eta, clone.momentum, clone.l2_weight_decay) == (1e-3, 0.0, 0.5)
