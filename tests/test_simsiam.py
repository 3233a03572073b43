import keras
import numpy as np
import pytest
import tensorflow as tf

from conftest import tiny_simsiam
from tf_simsiam import SimSiam, optim


def views(batch=8, shape=(16, 16, 1), seed=0):
    return np.random.default_rng(seed).random((batch, 2, *shape), dtype=np.float32)


def compiled(model, steps=100, **compile_kwargs):
    model.compile(optimizer=optim.simsiam_optimizer(batch_size=8, total_steps=steps, base_lr=0.5),
                  **compile_kwargs)
    return model


def loss_and_gradients(model, x, variables=None):
    """The training loss of a batch of view pairs and its gradients (by default for every trainable variable)."""
    with tf.GradientTape() as tape:
        loss, _, _ = model.objective(x[:, 0], x[:, 1])
    return loss, tape.gradient(loss, model.trainable_variables if variables is None else variables)


def backbone_gradients(model, x):
    return loss_and_gradients(model, x, model.backbone.trainable_variables)[1]


def test_model_is_built_at_construction_and_returns_backbone_features(tmp_path):
    model = tiny_simsiam()
    assert model.built
    x = views()[:, 0]
    np.testing.assert_array_equal(model(x).numpy(), model.backbone(x).numpy())
    model.save_weights(str(tmp_path / "w.weights.h5"))  # works before the first fit


def test_stop_gradient_switch_changes_backbone_gradients():
    keras.utils.set_random_seed(1)
    with_sg = tiny_simsiam()
    without_sg = tiny_simsiam(stop_gradient=False)
    without_sg.set_weights(with_sg.get_weights())
    x = views()
    g_sg, g_no = backbone_gradients(with_sg, x), backbone_gradients(without_sg, x)
    assert all(g is not None for g in g_sg + g_no)
    assert max(float(tf.reduce_max(tf.abs(a - b))) for a, b in zip(g_sg, g_no)) > 1e-6


def test_fit_lowers_the_loss_and_reports_metrics():
    model = compiled(tiny_simsiam())
    data = tf.data.Dataset.from_tensors(views()).repeat(30)
    history = model.fit(data, epochs=3, verbose=0).history
    assert set(history) == {"loss", "z_std", "lr"}
    assert history["loss"][-1] < history["loss"][0] - 0.05
    assert -1.0 <= history["loss"][-1] <= 1.0
    assert 0 < history["z_std"][0] <= 1.0
    assert history["lr"][2] < history["lr"][0]  # cosine schedule per step


def test_fix_predictor_lr_registers_exactly_the_predictor():
    model = compiled(tiny_simsiam())
    expected = {model.optimizer._var_key(v) for v in model.predictor.trainable_variables}
    assert model.optimizer.fixed_variable_keys == expected
    assert model.optimizer.fixed_learning_rate == pytest.approx(0.5 * 8 / 256)  # the peak
    free = compiled(tiny_simsiam(fix_predictor_lr=False))
    assert not getattr(free.optimizer, "fixed_variable_keys", set())


def test_fix_predictor_lr_needs_a_schedule_aware_optimizer():
    schedule = keras.optimizers.schedules.CosineDecay(0.1, 10)
    with pytest.raises(TypeError, match="fix_predictor_lr=True .* needs an optimizer from tf_simsiam.optim"):
        tiny_simsiam().compile(optimizer=keras.optimizers.SGD(schedule))
    tiny_simsiam().compile(optimizer=keras.optimizers.SGD(0.1))  # a constant lr is always fixed: fine
    warming_from_zero = keras.optimizers.schedules.PolynomialDecay(0.0, 10, end_learning_rate=0.1)
    with pytest.raises(ValueError, match="predictor_lr"):
        tiny_simsiam().compile(optimizer=optim.SGD(warming_from_zero))
    model = tiny_simsiam(predictor_lr=0.3)
    model.compile(optimizer=optim.SGD(warming_from_zero))
    assert model.optimizer.fixed_learning_rate == pytest.approx(0.3)


def effective_learning_rates(model, x, gradients_of):
    """(predictor's, backbone's) effective learning rate of one train step under SGD without momentum or weight
    decay: the median over the variables' larger-gradient entries of -(w_after - w_before) / gradient."""
    parts = (model.predictor.trainable_variables, model.backbone.trainable_variables)
    gradients = gradients_of(tf.constant(x))
    rates = [(variables, [np.asarray(g, np.float64).ravel() for g in gradients[i]],
              [v.numpy().astype(np.float64).ravel() for v in variables]) for i, variables in enumerate(parts)]
    model.train_on_batch(x)
    medians = []
    for variables, gradients, before in rates:
        ratio = []
        for v, g, w in zip(variables, gradients, before):
            big = (np.abs(g) >= np.quantile(np.abs(g), 0.5)) & (np.abs(g) > 1e-3 * np.abs(g).max())
            ratio.append((w - v.numpy().astype(np.float64).ravel())[big] / g[big])
        medians.append(float(np.median(np.concatenate(ratio))))
    return medians


@pytest.mark.parametrize("precision", ["float32", "mixed_float16", "mixed_bfloat16"])
@pytest.mark.parametrize("schedule", ["project", "keras_warmup_cosine"])
def test_predictor_keeps_the_initial_lr_while_the_backbone_follows_the_schedule(precision, schedule):
    keras.mixed_precision.set_global_policy(precision)
    if schedule == "project":
        lr = optim.WarmupCosine(0.5, total_steps=4)
    else:  # warms up from 0 to 0.5 in 2 steps, then decays over 4
        lr = keras.optimizers.schedules.CosineDecay(0.0, 4, warmup_target=0.5, warmup_steps=2)
    inputs = keras.Input((8, 8, 1))  # a small backbone: what is tested here is the optimizer
    backbone = keras.Model(inputs, keras.layers.GlobalAveragePooling2D()(keras.layers.Conv2D(16, 3)(inputs)))
    model = SimSiam(backbone, proj_dim=32, pred_dim=8, proj_layers=2)
    model.compile(optimizer=optim.SGD(lr, momentum=0.0, weight_decay=0.0))
    if precision == "mixed_float16":
        assert isinstance(model.optimizer, keras.optimizers.LossScaleOptimizer)
    inner = getattr(model.optimizer, "inner_optimizer", model.optimizer)
    x = views(shape=(8, 8, 1))
    gradients_of = tf.function(lambda x: [loss_and_gradients(model, x, variables)[1] for variables in (
        model.predictor.trainable_variables, model.backbone.trainable_variables)])
    applied = []
    for _ in range(8):
        step = int(inner.iterations)
        predictor_lr, backbone_lr = effective_learning_rates(model, x, gradients_of)
        if int(inner.iterations) == step:  # mixed_float16: an overflowing step is skipped, the loss scale lowered
            continue
        applied.append(step)
        # 2% for the low-precision gradients (a bfloat16 mantissa has 8 bits); the updates are float32
        np.testing.assert_allclose(predictor_lr, 0.5, rtol=0.02)
        np.testing.assert_allclose(backbone_lr, float(lr(step)), rtol=0.02, atol=1e-6)
        if len(applied) == 4:
            break
    assert len(applied) == 4
    assert max(abs(float(lr(step)) - 0.5) for step in applied) > 0.05  # the backbone's lr moved, the predictor's not


def fixed_predictor_in_numpy(model, z):
    """h(z) of the paper's fixed random predictor in training: Linear -> BN with the batch's moments -> ReLU ->
    Linear + bias, in float64."""
    w1, gamma, beta, _, _, w2, b2 = [np.asarray(w, np.float64) for w in model.predictor.get_weights()]
    h = z @ w1
    h = (h - h.mean(0)) / np.sqrt(h.var(0) + 1.001e-5) * gamma + beta
    return np.maximum(h, 0) @ w2 + b2


def test_fixed_random_predictor_keeps_its_weights_and_normalises_with_batch_statistics():
    keras.utils.set_random_seed(3)
    fixed = compiled(tiny_simsiam(predictor="fixed_random"))
    assert not fixed.predictor.trainable_variables and fixed.predictor.trainable
    z = np.random.default_rng(0).normal(2.0, 3.0, (8, 32)).astype(np.float32)
    np.testing.assert_allclose(fixed.predictor(z, training=True).numpy(), fixed_predictor_in_numpy(fixed, z),
                               rtol=1e-4, atol=1e-4)
    before = [v.numpy().copy() for v in fixed.predictor.weights if "moving" not in v.path]
    backbone_before = [w.copy() for w in fixed.backbone.get_weights()]
    fixed.fit(tf.data.Dataset.from_tensors(views()).repeat(2), verbose=0)
    for a, v in zip(before, [v for v in fixed.predictor.weights if "moving" not in v.path]):
        np.testing.assert_array_equal(a, v.numpy())  # kernels, bias, gamma, beta: as initialised
    assert any(not np.array_equal(a, b) for a, b in zip(backbone_before, fixed.backbone.get_weights()))
    # its BN was in training mode: the moving statistics moved (as PyTorch's running stats in train())
    assert not np.allclose(fixed.predictor.get_layer("bn1").moving_variance.numpy(), 1.0)


def test_absent_predictor():
    none = compiled(tiny_simsiam(predictor="none"))
    assert none.predictor is None
    none.fit(tf.data.Dataset.from_tensors(views()).repeat(2), verbose=0)


def test_without_a_predictor_stop_gradient_halves_the_gradient_of_the_loss_without_it():
    """The paper, Sec. 4.2: with h the identity, the symmetric loss with stop-gradient has the gradient of
    D(z1, z2) scaled by 1/2, i.e. the run without stop-gradient at half the learning rate."""
    keras.utils.set_random_seed(5)
    with_sg = tiny_simsiam(predictor="none")
    without_sg = tiny_simsiam(predictor="none", stop_gradient=False)
    without_sg.set_weights(with_sg.get_weights())
    x = views(seed=1)
    (loss_sg, g_sg), (loss_no, g_no) = loss_and_gradients(with_sg, x), loss_and_gradients(without_sg, x)
    np.testing.assert_allclose(float(loss_sg), float(loss_no), rtol=1e-6)
    assert len(g_sg) == len(with_sg.backbone.trainable_variables) + len(with_sg.projector.trainable_variables)
    for a, b in zip(g_sg, g_no):
        np.testing.assert_allclose(a.numpy(), 0.5 * b.numpy(), rtol=1e-3, atol=1e-7)
    assert max(float(tf.reduce_max(tf.abs(b))) for b in g_no) > 1e-4


def test_accepts_a_pair_of_views():
    model = compiled(tiny_simsiam())
    x = views()
    pairs = tf.data.Dataset.from_tensors((x[:, 0], x[:, 1])).repeat(2)
    assert np.isfinite(model.fit(pairs, verbose=0).history["loss"][0])


@pytest.mark.parametrize("batch, match", [
    (np.zeros((8, 16, 16, 1), "float32"), r"\(B, 2, H, W, C\); got shape \(8, 16, 16, 1\)"),
    (np.zeros((8, 3, 16, 16, 1), "float32"), r"got shape \(8, 3, 16, 16, 1\)"),
])
def test_bad_batch_shape_is_explained(batch, match):
    model = compiled(tiny_simsiam())
    with pytest.raises(ValueError, match=match):
        model.fit(tf.data.Dataset.from_tensors(batch), verbose=0)


@pytest.mark.parametrize("kwargs, match", [
    ({"proj_dim": 0}, "proj_dim must be a positive integer, got 0"),
    ({"pred_dim": -3}, "pred_dim must be a positive integer, got -3"),
    ({"predictor": "linear"}, r"predictor must be one of \('mlp', 'none', 'fixed_random'\), got 'linear'"),
])
def test_bad_arguments_are_explained(kwargs, match):
    with pytest.raises(ValueError, match=match):
        tiny_simsiam(**kwargs)


def test_backbone_must_return_pooled_features():
    inputs = keras.Input((8, 8, 1))
    unpooled = keras.Model(inputs, keras.layers.Conv2D(2, 3)(inputs))
    with pytest.raises(ValueError, match="pooled features"):
        SimSiam(unpooled)


def test_save_and_load_round_trip(tmp_path):
    model = compiled(tiny_simsiam())
    model.fit(tf.data.Dataset.from_tensors(views()).repeat(2), verbose=0)
    path = str(tmp_path / "simsiam.keras")
    model.save(path)
    loaded = keras.models.load_model(path)
    x = views(seed=5)
    np.testing.assert_array_equal(loaded(x[:, 0]).numpy(), model(x[:, 0]).numpy())
    p_a = model.forward(x[:, 0], x[:, 1], training=False)
    p_b = loaded.forward(x[:, 0], x[:, 1], training=False)
    for a, b in zip(p_a, p_b):
        np.testing.assert_array_equal(a.numpy(), b.numpy())
    assert int(loaded.optimizer.iterations) == 2
    assert loaded.optimizer.fixed_variable_keys  # the fixed predictor lr survives the round trip
    loaded.fit(tf.data.Dataset.from_tensors(views()).repeat(1), verbose=0)  # and it trains on


def test_backup_and_restore_before_first_fit(tmp_path):
    model = compiled(tiny_simsiam())
    backup = keras.callbacks.BackupAndRestore(str(tmp_path / "backup"))
    model.fit(tf.data.Dataset.from_tensors(views()).repeat(2), epochs=2, callbacks=[backup], verbose=0)


def test_jit_compile_path_runs():
    model = compiled(tiny_simsiam(), jit_compile=True)
    history = model.fit(tf.data.Dataset.from_tensors(views()).repeat(3), verbose=0).history
    assert np.isfinite(history["loss"][0])


def test_mixed_bfloat16_path_runs_and_learns():
    keras.mixed_precision.set_global_policy("mixed_bfloat16")
    model = compiled(tiny_simsiam())
    assert model.backbone.get_layer("stem_conv").compute_dtype == "bfloat16"
    assert model.backbone.get_layer("stem_conv").kernel.dtype == "float32"
    history = model.fit(tf.data.Dataset.from_tensors(views()).repeat(30), epochs=2, verbose=0).history
    assert history["loss"][-1] < history["loss"][0]


def test_proj_bn_affine_reaches_the_projector_and_is_validated():
    from tf_simsiam.pretrain import PretrainConfig
    model = tiny_simsiam(proj_bn_affine=True)
    assert model.projector.layers[-1].scale and model.get_config()["proj_bn_affine"] is True
    assert not tiny_simsiam().projector.layers[-1].scale
    with pytest.raises(ValueError, match="--proj_bn_affine needs --proj_bn=all"):
        PretrainConfig(proj_bn="hidden", proj_bn_affine=True).validate()


def test_pred_bn_affine_reaches_the_predictor_and_is_validated():
    from tf_simsiam.pretrain import PretrainConfig
    model = tiny_simsiam(pred_bn="all", pred_bn_affine=True)
    assert model.predictor.layers[-1].scale and model.get_config()["pred_bn_affine"] is True
    assert not tiny_simsiam(pred_bn="all").predictor.layers[-1].scale
    with pytest.raises(ValueError, match="--pred_bn_affine needs --pred_bn=all"):
        PretrainConfig(pred_bn="hidden", pred_bn_affine=True).validate()


def test_evaluate_validation_data_and_predict_work_as_in_keras():
    model = compiled(tiny_simsiam())
    train, held_out = views(seed=0), views(seed=1)
    history = model.fit(tf.data.Dataset.from_tensors(train).repeat(2), validation_data=(held_out,), epochs=1,
                        verbose=0).history
    assert {"val_loss", "val_z_std"} <= set(history)
    before = [v.numpy() for v in model.weights]
    results = model.evaluate(held_out, batch_size=8, return_dict=True, verbose=0)
    assert all(np.array_equal(a, v.numpy()) for a, v in zip(before, model.weights))  # nothing trained or updated
    # inference mode: the loss the paper's forward pass gives with BN on its moving statistics
    p1, p2, z1, z2 = model.forward(held_out[:, 0], held_out[:, 1], training=False)
    from tf_simsiam import losses
    np.testing.assert_allclose(results["loss"], float(losses.simsiam_loss(p1, p2, z1, z2)), rtol=1e-5)
    np.testing.assert_allclose(results["loss"], history["val_loss"][0], rtol=1e-5)  # the same weights
    images = np.random.default_rng(3).integers(0, 256, (5, 16, 16, 1)).astype("uint8")
    np.testing.assert_allclose(model.predict(images, verbose=0),
                               model.backbone(images.astype("float32") / 255.0, training=False).numpy(), rtol=1e-5,
                               atol=1e-6)


def test_compile_with_a_loss_is_refused():
    with pytest.raises(ValueError, match="the loss is the method's own"):
        tiny_simsiam().compile(optimizer="sgd", loss="mse")


def test_get_config_follows_keras_conventions():
    config = tiny_simsiam(name="mine").get_config()
    assert config["name"] == "mine" and config["trainable"] is True and "dtype" in config
    assert SimSiam.from_config(config).name == "mine"


@pytest.mark.parametrize("on_device", [False, True])
def test_a_saved_model_with_or_without_device_augmentation_reloads_and_trains(tmp_path, on_device):
    from tf_simsiam.data import augment
    augmenter = augment.TwoViews(augment.simsiam_cifar(16), seed=3) if on_device else None
    model = compiled(tiny_simsiam(augment=augmenter))
    data = np.random.default_rng(0).integers(0, 256, (8, 16, 16, 1)).astype("uint8") if on_device else views()
    model.fit(tf.data.Dataset.from_tensors(data).repeat(1), verbose=0)
    model.save(str(tmp_path / "model.keras"))
    loaded = keras.models.load_model(str(tmp_path / "model.keras"))
    assert (loaded.augment is not None) == on_device
    if on_device:
        assert loaded.augment.recipe == augmenter.recipe and loaded.augment.seed == 3
    history = loaded.fit(tf.data.Dataset.from_tensors(data).repeat(2), verbose=0).history
    assert np.isfinite(history["loss"][0])


def one_and_two_passes(model, x):
    """(loss, gradients, BN moving statistics) of a training forward pass, both views in one batch and as two
    passes, from the same weights."""
    start = model.get_weights()
    out = []
    for one_pass in (True, False):
        model.set_weights(start)
        model.one_pass = one_pass
        loss, gradients = loss_and_gradients(model, x)
        moving = [v.numpy() for v in model.non_trainable_variables if "moving" in v.path]
        out.append((float(loss), [g.numpy() for g in gradients], moving))
    model.set_weights(start)
    return out


def assert_same_step(one, two):
    np.testing.assert_allclose(one[0], two[0], rtol=1e-5)
    for a, b in zip(one[1], two[1]):  # float32 sums over the batch in another order: 1e-5 of the largest entry
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5 * max(np.abs(b).max(), 1e-12))
    assert len(one[2]) > 10
    for a, b in zip(one[2], two[2]):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)


def test_both_views_in_one_pass_equal_two_passes_with_bn_statistics_per_view():
    model = tiny_simsiam()
    assert model.one_pass
    x = views(batch=16)
    x[:, 1] = x[:, 1] * 0.5 + 0.4  # views of different statistics: BN over both at once would differ
    one, two = one_and_two_passes(model, x)
    assert_same_step(one, two)
    model.one_pass = True
    _, _, z1, z2 = model.forward(x[:, 0], x[:, 1])
    # the projector's output BN has no scale or shift: zero mean per channel over each view
    np.testing.assert_allclose(np.mean(z1.numpy(), 0), 0, atol=1e-5)
    np.testing.assert_allclose(np.mean(z2.numpy(), 0), 0, atol=1e-5)


def test_a_backbone_with_keras_own_batch_norm_keeps_two_passes():
    inputs = keras.Input((8, 8, 1))
    x = keras.layers.BatchNormalization()(keras.layers.Conv2D(4, 3)(inputs))
    backbone = keras.Model(inputs, keras.layers.GlobalAveragePooling2D()(x))
    assert not SimSiam(backbone, proj_dim=16, pred_dim=4, proj_layers=2).one_pass
