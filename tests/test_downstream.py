"""The downstream protocols of tf_simsiam.evaluation (linear probe, fine-tuning, label fractions) on tiny data."""

import numpy as np
import pytest

from conftest import tiny_backbone
from tf_simsiam import evaluation

FAST = evaluation.Schedule(epochs=2, batch_size=32)


def labelled(n=96, seed=0, size=16):
    """Images whose class is the brightness of their left or right half: learnable, with crops and flips."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 3, n)
    images = rng.integers(0, 40, (n, size, size, 1))
    images[:, :, : size // 2] += 60 * labels[:, None, None, None]
    return images.astype("uint8"), labels


def test_label_fractions_are_class_balanced_and_seeded():
    labels = np.repeat(np.arange(10), 100)
    index = evaluation.sample_fraction(labels, 0.1, seed=1)
    assert len(index) == 100 and np.all(np.bincount(labels[index]) == 10)
    np.testing.assert_array_equal(index, evaluation.sample_fraction(labels, 0.1, seed=1))
    assert not np.array_equal(index, evaluation.sample_fraction(labels, 0.1, seed=2))
    assert np.all(np.bincount(labels[evaluation.sample_fraction(labels, 0.001)]) == 1)  # at least one per class
    assert len(evaluation.sample_fraction(labels, 1.0)) == 1000
    with pytest.raises(ValueError, match="--label_fraction"):
        evaluation.sample_fraction(labels, 0)


def test_linear_probe_keeps_the_encoder_frozen():
    backbone = tiny_backbone()
    before = [w.copy() for w in backbone.get_weights()]  # kernels and BN moving statistics
    top1, predicted, losses = evaluation.linear_probe(evaluation.keras_encoder(backbone), labelled(),
                                                      labelled(48, seed=1), 3, FAST)
    for a, b in zip(before, backbone.get_weights()):
        np.testing.assert_array_equal(a, b)
    assert len(losses) == 2 and predicted.shape == (48,) and 0 <= top1 <= 1


def test_linear_probe_learns_on_pixels_with_and_without_augmentation():
    import dataclasses
    train, test = labelled(192), labelled(96, seed=1)
    for augment in (True, False):
        schedule = dataclasses.replace(FAST, epochs=10, base_lr=2.0, optimizer="sgd", augment=augment)
        top1, _, losses = evaluation.linear_probe(evaluation.pixel_encoder, train, test, 3, schedule)
        assert top1 > 0.6 and losses[-1] < losses[0], (augment, top1, losses)


def test_fine_tune_trains_the_backbone():
    backbone = tiny_backbone()
    before = [w.numpy().copy() for w in backbone.trainable_weights]
    evaluation.fine_tune(backbone, labelled(), labelled(48, seed=1), 3, FAST)
    assert any(not np.allclose(a, b.numpy()) for a, b in zip(before, backbone.trainable_weights))
