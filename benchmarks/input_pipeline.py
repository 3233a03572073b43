"""Input pipeline and end-to-end training throughput (pairs of views per second), printed as JSON.

1. The augmentation pipeline alone at 32x32x3 (60,000 random images), SimSiam recipes, batch 256:
   host placement (tf.data, XLA-compiled augmentation, the default), host with plain TF ops, and the device
   placement's layer (what the train step runs).
2. End to end for a config (default: configs/fashion_mnist.cfg): SimSiam.fit on the real pipeline, against the
   model's compiled train step called on one batch held in memory (median step). If the two agree, the input
   pipeline is not the bottleneck.

    python benchmarks/input_pipeline.py [--config configs/fashion_mnist.cfg] [--steps 20]
"""

import argparse
import json
import time

import numpy as np
import tensorflow as tf

import machine


def pairs_per_sec(iterator, batch_size, batches, warmup=3):
    for _ in range(warmup):
        next(iterator)
    start = time.perf_counter()
    for _ in range(batches):
        batch = next(iterator)
    np.asarray(batch)
    return round(batch_size * batches / (time.perf_counter() - start), 1)


def augmentation(batch_size=256, batches=60):
    from tf_simsiam.data import augment, pipeline
    images = np.random.default_rng(0).integers(0, 256, (60000, 32, 32, 3)).astype("uint8")
    results = {}
    for name, recipe in (("simsiam_imagenet", augment.simsiam_imagenet(32)),
                         ("simsiam_cifar", augment.simsiam_cifar(32))):
        host = pipeline.pretrain_dataset(images, batch_size, recipe)
        plain = pipeline.pretrain_dataset(images, batch_size, recipe, jit_compile=False)
        raw = iter(pipeline.pretrain_dataset(images, batch_size, recipe, augment_on="device"))
        layer = augment.TwoViews(recipe)
        step = tf.Variable(0, dtype=tf.int64)

        def device():
            while True:
                step.assign_add(1)
                yield layer(tf.convert_to_tensor(next(raw)), step=step)

        results[name] = {"host_xla": pairs_per_sec(iter(host), batch_size, batches),
                         "host_plain_tf": pairs_per_sec(iter(plain), batch_size, batches // 6),
                         "device_layer": pairs_per_sec(device(), batch_size, batches)}
    return results


def end_to_end(config_path, steps):
    from absl import flags

    from tf_simsiam import distribute, pretrain, train
    flags.FLAGS(["train", f"--flagfile={config_path}"])
    config = train.config_from_flags()
    import keras
    precision = distribute.resolve_precision(config.precision)
    keras.mixed_precision.set_global_policy(precision)
    split = pretrain.load_splits(config, need_test=False)[0]
    enc = pretrain.encoder_config(config, split)
    model = pretrain.build_model(config, enc, steps_per_epoch=len(split.images) // config.batch_size)
    recipe = pretrain.recipe_of(config, enc["input_shape"][0])
    data = pretrain.pipeline.pretrain_dataset(split.images, config.batch_size, recipe, augment_on=config.augment_on)
    out = {"config": config_path, "batch_size": config.batch_size, "precision": precision,
           "augment_on": config.augment_on}
    model.fit(data, steps_per_epoch=3, epochs=1, verbose=0)
    start = time.perf_counter()
    model.fit(data, steps_per_epoch=steps, epochs=1, verbose=0)
    out["fit_with_pipeline"] = round(config.batch_size * steps / (time.perf_counter() - start), 1)
    batch = next(iter(data))
    step = tf.function(model.train_step, jit_compile=config.jit_compile)
    times = []
    for _ in range(steps + 2):
        start = time.perf_counter()
        float(step(batch)["loss"])
        times.append(time.perf_counter() - start)
    out["train_step_alone"] = round(config.batch_size / float(np.median(times[2:])), 1)
    out["input_overhead"] = round(1 - out["fit_with_pipeline"] / out["train_step_alone"], 3)
    return out


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="configs/fashion_mnist.cfg")
    parser.add_argument("--steps", type=int, default=20)
    args = parser.parse_args()
    print(json.dumps({"benchmark": "input_pipeline", "machine": machine.describe(),
                      "augmentation_32x32_batch256": augmentation(),
                      "end_to_end": end_to_end(args.config, args.steps)}, indent=1))


if __name__ == "__main__":
    main()
