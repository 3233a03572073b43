import keras
import numpy as np
import pytest
import tensorflow as tf

from tf_simsiam import losses
from tf_simsiam.models import heads


def layer_kinds(model):
    return [type(layer).__name__ for layer in model.layers]


@pytest.mark.parametrize("proj_layers", [2, 3])
def test_projector_layout_and_shape(proj_layers):
    g = heads.projector(proj_dim=16, proj_layers=proj_layers)
    assert g(np.zeros((4, 10), "float32")).shape == (4, 16)
    assert layer_kinds(g) == ["Dense", "BatchNormalization", "ReLU"] * (proj_layers - 1) + [
        "Dense", "BatchNormalization"]
    dense = [layer for layer in g.layers if isinstance(layer, keras.layers.Dense)]
    assert all(not d.use_bias for d in dense)  # every Linear is followed by BN
    out_bn = g.layers[-1]
    assert not out_bn.center and not out_bn.scale  # the output BN has no affine parameters
    assert all(bn.center and bn.scale for bn in g.layers[:-1] if isinstance(bn, keras.layers.BatchNormalization))


def test_predictor_is_a_bottleneck_without_output_bn():
    h = heads.predictor(proj_dim=16, pred_dim=4)
    assert h(np.zeros((4, 16), "float32")).shape == (4, 16)
    assert layer_kinds(h) == ["Dense", "BatchNormalization", "ReLU", "Dense"]
    assert h.layers[0].units == 4 and not h.layers[0].use_bias
    assert h.layers[-1].units == 16 and h.layers[-1].use_bias


def test_bn_placements_of_table_3():
    none = heads.projector(8, 2, bn="none")
    assert "BatchNormalization" not in layer_kinds(none)
    assert all(d.use_bias for d in none.layers if isinstance(d, keras.layers.Dense))
    hidden = heads.projector(8, 2, bn="hidden")
    assert layer_kinds(hidden) == ["Dense", "BatchNormalization", "ReLU", "Dense"]
    pred_all = heads.predictor(8, 4, bn="all")
    assert layer_kinds(pred_all)[-1] == "BatchNormalization"


def test_affine_output_bn_lets_z_leave_zero_mean():
    """Without affine parameters (the official code) every channel of z has zero mean over the batch, so z cannot
    be one constant vector; with them (--proj_bn_affine) gamma -> 0 and beta give exactly that collapse."""
    x = np.random.default_rng(0).normal(size=(32, 10)).astype("float32")
    plain = heads.projector(8, 2)
    np.testing.assert_allclose(plain(x, training=True).numpy().mean(0), 0, atol=1e-5)
    affine = heads.projector(8, 2, affine_output=True)
    affine(x, training=True)
    out_bn = affine.layers[-1]
    assert out_bn.center and out_bn.scale and len(out_bn.trainable_weights) == 2
    beta = np.linspace(-1, 1, 8).astype("float32")
    out_bn.gamma.assign(np.zeros(8, "float32"))
    out_bn.beta.assign(beta)
    z = affine(x, training=True).numpy()
    np.testing.assert_allclose(z, np.tile(beta, (32, 1)), atol=1e-6)  # every sample at one point


def test_projector_sees_only_the_pattern_of_the_features_differences():
    """In training the projector's first BN removes the batch mean and the scale of the backbone's features, so z
    (and the loss) is the same for features that bunch 10 times tighter around a far-off point (up to BN's eps):
    nothing in the loss drives a collapsing backbone on to one point (docs/ablations.md)."""
    f = np.random.default_rng(1).normal(size=(32, 10))
    bunched = (5.0 + 0.1 * (f - f.mean(0))).astype("float32")
    f = f.astype("float32")
    projector = heads.projector(8, 2)
    z, z_bunched = projector(f, training=True), projector(bunched, training=True)
    np.testing.assert_allclose(z_bunched.numpy(), z.numpy(), atol=5e-3)
    assert np.abs(z.numpy()).max() > 0.5
    without_bn = heads.projector(8, 2, bn="none")  # Table 3's "no BN": the bunch shows in z
    moved = without_bn(bunched, training=True).numpy() - without_bn(f, training=True).numpy()
    assert np.abs(moved).max() > 0.1
    # in inference mode (moving statistics) the two differ: the invariance is the batch statistics'
    moving = projector(bunched, training=False).numpy() - projector(f, training=False).numpy()
    assert np.abs(moving).max() > 0.1


def test_the_collapse_the_official_projector_allows_keeps_one_image_per_batch_apart():
    """With the output BN without scale and shift, a backbone that maps every image to one point gives z = 0 and a
    loss of 0, not the -1 of a constant output. The low end the loss can reach is z on one point for every image
    but one, which sits opposite (z_std on its floor of 2 sqrt(B-1)/B x mean |u_j|), and -1 needs that image to be
    the same in both views: the backbone has to keep telling images apart (docs/ablations.md)."""
    batch = 32
    # A BN of a constant batch divides the rounding error of (x - mean) by sqrt(eps), so "z = 0" would hold only
    # as well as one CPU's matmul rounds. Small integers and weights on a 1/16 grid make every product and sum of
    # the constant batch exact in float32, whatever the kernel's order: x - mean is exactly 0, and so is z.
    point = np.random.default_rng(2).integers(-3, 4, size=(1, 10))
    same = np.tile(point, (batch, 1)).astype("float32")
    projector = heads.projector(8, 2)
    projector(same)
    projector.set_weights([np.round(w * 16) / 16 if w.ndim == 2 else w for w in projector.get_weights()])
    z = projector(same, training=True)
    np.testing.assert_array_equal(z.numpy(), 0)
    assert float(losses.simsiam_loss(z, z, z, z, stop_gradient=False)) == pytest.approx(0, abs=1e-5)

    def with_outlier(image):
        features = same.copy()
        features[image] += 3.0
        return projector(features, training=True)

    z1, z2 = with_outlier(0), with_outlier(1)  # the backbone singles out image 0 in one view, image 1 in the other
    u = tf.math.l2_normalize(z1, axis=-1).numpy()
    np.testing.assert_allclose(u[1:], np.tile(u[1], (batch - 1, 1)), atol=1e-5)  # all others at one point
    np.testing.assert_allclose(u[0], -u[1], atol=1e-5)  # the one left out sits opposite
    floor = 2 * np.sqrt(batch - 1) / batch * np.abs(u[1]).mean()
    np.testing.assert_allclose(float(losses.std_of_l2_normalized(z1)), floor, rtol=1e-4)
    # no predictor (h = identity), no stop-gradient: D(z1, z2) is -1 only for the same image left out in both views
    assert float(losses.simsiam_loss(z1, z1, z1, z1, stop_gradient=False)) == pytest.approx(-1, abs=1e-5)
    np.testing.assert_allclose(float(losses.simsiam_loss(z1, z2, z1, z2, stop_gradient=False)),
                               -(batch - 4) / batch, atol=1e-5)


def test_affine_output_needs_an_output_bn():
    with pytest.raises(ValueError, match="proj_bn_affine needs proj_bn='all'"):
        heads.projector(8, 2, bn="hidden", affine_output=True)
    with pytest.raises(ValueError, match="pred_bn_affine needs pred_bn='all'"):
        heads.predictor(8, 4, bn="hidden", affine_output=True)


def test_predictor_output_bn_with_and_without_scale_and_shift():
    x = np.random.default_rng(1).normal(size=(32, 8)).astype("float32")
    plain = heads.predictor(8, 4, bn="all")
    np.testing.assert_allclose(plain(x, training=True).numpy().mean(0), 0, atol=1e-5)
    assert not plain.layers[-1].scale and not plain.layers[-1].center
    affine = heads.predictor(8, 4, bn="all", affine_output=True)
    affine(x, training=True)
    out_bn = affine.layers[-1]
    assert out_bn.center and out_bn.scale
    out_bn.gamma.assign(np.full(8, 2.0, "float32"))
    out_bn.beta.assign(np.arange(8, dtype="float32"))
    p = affine(x, training=True).numpy()
    np.testing.assert_allclose(p.mean(0), np.arange(8), atol=1e-4)  # the shift moves the batch mean
    np.testing.assert_allclose(p.std(0), 2.0, rtol=1e-2)  # the scale sets the batch std


def test_bn_uses_pytorch_defaults_and_sync_option():
    g = heads.projector(8, 2, sync_bn=True)
    bns = [layer for layer in g.layers if isinstance(layer, keras.layers.BatchNormalization)]
    assert all(bn.synchronized and bn.momentum == 0.9 and bn.epsilon == 1e-5 for bn in bns)


@pytest.mark.parametrize("kwargs, match", [
    ({"proj_dim": 0}, "proj_dim must be a positive integer, got 0"),
    ({"proj_layers": -1}, "proj_layers must be a positive integer, got -1"),
    ({"bn": "output"}, "proj_bn must be one of"),
])
def test_projector_rejects_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        heads.projector(**kwargs)


def test_predictor_rejects_bad_pred_dim():
    with pytest.raises(ValueError, match="pred_dim must be a positive integer, got 2.5"):
        heads.predictor(8, 2.5)
