import numpy as np
import tensorflow as tf

from conftest import tiny_backbone
from tf_simsiam import SimSiam, optim
from tf_simsiam.data import augment, pipeline

RECIPE = augment.simsiam_cifar(12)


def images(n=40, seed=0):
    # each image carries its index in its first pixel, to follow it through the pipeline
    x = np.random.default_rng(seed).integers(0, 256, (n, 12, 12, 1)).astype("uint8")
    x[:, 0, 0, 0] = np.arange(n)
    return x


def take(dataset, n):
    return [batch.numpy() for batch in dataset.take(n)]


def test_host_batches_are_static_stacked_views():
    ds = pipeline.pretrain_dataset(images(), 8, RECIPE)
    assert ds.element_spec.shape == (8, 2, 12, 12, 1) and ds.element_spec.dtype == tf.uint8


def test_each_epoch_is_a_seeded_permutation():
    x = images()
    ids = np.concatenate(take(pipeline.pretrain_dataset(x, 8, RECIPE, augment_on="device", seed=3), 10))
    order = ids[:, 0, 0, 0]
    assert sorted(order[:40]) == list(range(40)) and sorted(order[40:]) == list(range(40))
    assert order[:40].tolist() != order[40:].tolist()  # a new order every epoch
    again = np.concatenate(take(pipeline.pretrain_dataset(x, 8, RECIPE, augment_on="device", seed=3), 10))
    np.testing.assert_array_equal(ids, again)
    other = np.concatenate(take(pipeline.pretrain_dataset(x, 8, RECIPE, augment_on="device", seed=4), 5))
    assert other[:, 0, 0, 0].tolist() != order[:40].tolist()


def test_resuming_at_a_step_gives_the_same_batches():
    x = images()
    full = take(pipeline.pretrain_dataset(x, 8, RECIPE, seed=1), 7)
    resumed = take(pipeline.pretrain_dataset(x, 8, RECIPE, seed=1, start_step=5), 2)
    np.testing.assert_array_equal(full[5], resumed[0])
    np.testing.assert_array_equal(full[6], resumed[1])


def test_host_and_device_placements_give_the_same_views():
    x = images()
    host = take(pipeline.pretrain_dataset(x, 8, RECIPE, seed=2), 3)
    device_images = take(pipeline.pretrain_dataset(x, 8, RECIPE, seed=2, augment_on="device"), 3)
    layer = augment.TwoViews(RECIPE, seed=2)
    for step in range(3):
        np.testing.assert_array_equal(layer(device_images[step], step=step).numpy(), host[step])


def test_model_augments_on_device():
    x = images()
    model = SimSiam(tiny_backbone((12, 12, 1)), proj_dim=16, pred_dim=4, proj_layers=2,
                    augment=augment.TwoViews(RECIPE, seed=0))
    model.compile(optimizer=optim.simsiam_optimizer(8, 10))
    history = model.fit(pipeline.pretrain_dataset(x, 8, RECIPE, augment_on="device"), steps_per_epoch=2,
                        verbose=0).history
    assert np.isfinite(history["loss"][0])
