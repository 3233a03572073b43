import numpy as np
import pytest
import tensorflow as tf

from tf_simsiam import losses


def numpy_d(p, z):
    p = p / np.linalg.norm(p, axis=1, keepdims=True)
    z = z / np.linalg.norm(z, axis=1, keepdims=True)
    return -np.mean(np.sum(p * z, axis=1))


@pytest.fixture
def pz():
    rng = np.random.default_rng(1)
    return [rng.normal(size=(8, 5)).astype("float32") for _ in range(4)]


def test_negative_cosine_similarity_matches_numpy(pz):
    p, z = pz[:2]
    np.testing.assert_allclose(losses.negative_cosine_similarity(p, z).numpy(), numpy_d(p, z), rtol=1e-5)


def test_negative_cosine_similarity_extremes():
    x = np.random.default_rng(2).normal(size=(4, 3)).astype("float32")
    np.testing.assert_allclose(losses.negative_cosine_similarity(x, 3 * x).numpy(), -1.0, rtol=1e-6)
    np.testing.assert_allclose(losses.negative_cosine_similarity(x, -x).numpy(), 1.0, rtol=1e-6)


def test_symmetric_and_asymmetric_loss_match_numpy(pz):
    p1, p2, z1, z2 = pz
    expected = numpy_d(p1, z2) / 2 + numpy_d(p2, z1) / 2
    np.testing.assert_allclose(losses.simsiam_loss(p1, p2, z1, z2).numpy(), expected, rtol=1e-5)
    np.testing.assert_allclose(losses.simsiam_loss(p1, p2, z1, z2, symmetric=False).numpy(), numpy_d(p1, z2),
                               rtol=1e-5)


def test_loss_is_float32_for_bfloat16_inputs(pz):
    bf16 = [tf.cast(t, tf.bfloat16) for t in pz]
    loss = losses.simsiam_loss(*bf16)
    assert loss.dtype == tf.float32
    np.testing.assert_allclose(loss.numpy(), losses.simsiam_loss(*pz).numpy(), atol=2e-2)


@pytest.mark.parametrize("stop_gradient", [True, False])
def test_stop_gradient_branch_gets_no_gradient(pz, stop_gradient):
    p1, p2, z1, z2 = [tf.Variable(t) for t in pz]
    with tf.GradientTape() as tape:
        loss = losses.simsiam_loss(p1, p2, z1, z2, stop_gradient=stop_gradient)
    g_p1, g_p2, g_z1, g_z2 = tape.gradient(loss, [p1, p2, z1, z2], unconnected_gradients="zero")
    assert np.abs(g_p1.numpy()).sum() > 0 and np.abs(g_p2.numpy()).sum() > 0
    if stop_gradient:
        assert np.all(g_z1.numpy() == 0) and np.all(g_z2.numpy() == 0)
    else:
        assert np.abs(g_z1.numpy()).sum() > 0 and np.abs(g_z2.numpy()).sum() > 0


def test_std_of_l2_normalized_detects_collapse():
    rng = np.random.default_rng(3)
    healthy = rng.normal(size=(4096, 64)).astype("float32")
    np.testing.assert_allclose(losses.std_of_l2_normalized(healthy).numpy(), 1 / np.sqrt(64), rtol=0.02)
    collapsed = np.tile(rng.normal(size=(1, 64)), (128, 1)).astype("float32")
    assert losses.std_of_l2_normalized(collapsed).numpy() < 1e-6


def test_cross_entropy_similarity_matches_numpy(pz):
    p1, p2, z1, z2 = pz

    def numpy_ce(p, z):
        soft_z = np.exp(z) / np.exp(z).sum(1, keepdims=True)
        log_soft_p = p - np.log(np.exp(p).sum(1, keepdims=True))
        return -np.mean(np.sum(soft_z * log_soft_p, axis=1))

    got = losses.simsiam_loss(p1, p2, z1, z2, similarity="cross_entropy")
    np.testing.assert_allclose(float(got), 0.5 * numpy_ce(p1, z2) + 0.5 * numpy_ce(p2, z1), rtol=1e-5)
    with pytest.raises(ValueError, match="--similarity"):
        losses.simsiam_loss(p1, p2, z1, z2, similarity="dot")


def test_z_std_floor_under_batch_norm_without_affine():
    """With BN (no affine) on z, each channel has zero mean and unit variance over the batch, so z cannot be one
    constant vector: the most collapsed batch it allows (all samples but one at one point, one opposite) has
    z_std = 2 sqrt(B - 1) / B of 1/sqrt(d). Lower needs the pre-BN variance below BN's eps."""
    rng = np.random.default_rng(0)
    for batch, dim in ((64, 512), (512, 2048)):
        a = np.ones(batch)
        a[0] = -(batch - 1)
        h = a[:, None] * rng.uniform(0.5, 2, dim) * rng.choice([-1, 1], dim) + rng.normal(size=dim)
        z = ((h - h.mean(0)) / np.sqrt(h.var(0) + 1e-5)).astype("float32")
        got = float(losses.std_of_l2_normalized(z)) * np.sqrt(dim)
        np.testing.assert_allclose(got, 2 * np.sqrt(batch - 1) / batch, rtol=1e-3)


def test_first_component_share_sees_the_dimensional_collapse_z_std_misses():
    """Under BN without a shift, z = s(x) v (one zero-mean scalar feature s times one direction v) is a collapse onto
    one line that keeps z_std at about 1/sqrt(d); the first principal component's share of variance is 1 there."""
    rng = np.random.default_rng(0)
    batch, dim = 256, 64
    s = rng.normal(size=batch)
    h = s[:, None] * rng.uniform(0.5, 2, dim) * rng.choice([-1, 1], dim) + rng.normal(size=dim)
    z = ((h - h.mean(0)) / np.sqrt(h.var(0) + 1e-5)).astype("float32")
    assert float(losses.std_of_l2_normalized(z)) * np.sqrt(dim) > 0.9  # z_std: healthy
    np.testing.assert_allclose(float(losses.first_component_share(z)), 1.0, rtol=1e-6)
    # a spread-out z: the share is the top eigenvalue of the normalised rows' covariance over its trace
    spread = rng.normal(size=(batch, dim)).astype("float32")
    rows = spread / np.linalg.norm(spread, axis=1, keepdims=True)
    eigenvalues = np.linalg.eigvalsh(np.cov(rows, rowvar=False))
    got = float(losses.first_component_share(spread))
    np.testing.assert_allclose(got, eigenvalues[-1] / eigenvalues.sum(), rtol=1e-5)
    assert got < 0.1
    # two directions, equally used: half
    two = np.concatenate([np.eye(dim)[[0]] * rng.normal(size=(batch // 2, 1)),
                          np.eye(dim)[[1]] * rng.normal(size=(batch // 2, 1))]) + 1e-3 * np.eye(dim)[2]
    assert 0.3 < float(losses.first_component_share(two)) < 0.7
    assert float(losses.first_component_share(np.ones((8, 4), "float32"))) == 1.0  # no variance: a point
