"""Input pipeline and end-to-end training throughput (pairs of views per second), printed as JSON.

1. The augmentation pipeline alone at 32x32x3 (60,000 random images), SimSiam recipes, batch 256:
   host placement (tf.data, XLA-compiled augmentation, the default), host with plain TF ops, and the device
   placement's layer (what the train step runs); beside them, in the same invocation, the peer: torchvision's
   SimSiam CIFAR augmentation through a DataLoader with a worker process per core (the `bench` extra).
2. End to end for a config (default: configs/fashion_mnist.cfg): SimSiam.fit on the real pipeline, against the
   model's compiled train step called on one batch held in memory (median step). If the two agree, the input
   pipeline is not the bottleneck. The same fit with the views sent as float32 instead of uint8 (what the
   pipeline sent before) gives the bytes per batch and pairs/s of both.
3. A folder stream: JPEGs on disk (written here, ~500x375 like ImageNet's), 224x224 views of crops decoded from
   the originals (decode_and_crop_jpeg), SimSiam's ImageNet recipe, batch 64, with tf.data limited to 1 and to
   all worker threads: pairs/s per thread, and the threads a GPU step of 1,000 pairs/s would need.

    python benchmarks/input_pipeline.py [--config configs/fashion_mnist.cfg] [--steps 20] [--only stream]
"""

import argparse
import json
import os
import tempfile
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
    peer = torchvision_peer(batch_size, batches)
    if "torchvision_dataloader_pairs_per_sec" in peer:
        results["simsiam_cifar"]["torchvision_dataloader"] = peer.pop("torchvision_dataloader_pairs_per_sec")
        results["simsiam_cifar"]["host_xla_over_torchvision"] = round(
            results["simsiam_cifar"]["host_xla"] / results["simsiam_cifar"]["torchvision_dataloader"], 2)
    results["torchvision_peer"] = peer
    return results


def torchvision_peer(batch_size, batches, workers=None):
    """torchvision's SimSiam CIFAR augmentation through a DataLoader with a worker process per core, run in its own
    process (benchmarks/torch_reference.py; the `bench` extra), on the same number of random 32x32 images."""
    import importlib.util
    import subprocess
    import sys
    if importlib.util.find_spec("torchvision") is None:
        return {"note": "torchvision not installed (pip install -e .[bench]): no peer run"}
    workers = workers or os.cpu_count()
    script = os.path.join(os.path.dirname(os.path.abspath(__file__)), "torch_reference.py")
    out = subprocess.run([sys.executable, script, "augmentation", str(batch_size), str(batches), str(workers)],
                         capture_output=True, text=True)
    if out.returncode:
        return {"error": out.stderr.strip().splitlines()[-1:]}
    return json.loads(out.stdout.strip().splitlines()[-1])


def end_to_end(config_path, steps):
    from absl import flags

    from tf_simsiam import distribute, pretrain, train
    flags.FLAGS(["train", f"--flagfile={config_path}"])
    config = train.config_from_flags()
    import keras
    precision = distribute.resolve_precision(config.precision)
    keras.mixed_precision.set_global_policy(precision)
    split = pretrain.load_train(config)
    enc = pretrain.encoder_config(config, split)
    model = pretrain.build_model(config, enc, steps_per_epoch=split.num_examples // config.batch_size)
    recipe = pretrain.recipe_of(config, enc["input_shape"][0])
    data = pretrain.pipeline.pretrain_dataset(split, config.batch_size, recipe, augment_on=config.augment_on)
    out = {"config": config_path, "batch_size": config.batch_size, "precision": precision,
           "augment_on": config.augment_on}
    as_float32 = data.map(lambda views: tf.cast(views, tf.float32) / 255.0)
    for name, dataset in (("fit_with_pipeline", data), ("fit_with_float32_views", as_float32)) * 2:
        model.fit(dataset, steps_per_epoch=3, epochs=1, verbose=0)
        start = time.perf_counter()
        model.fit(dataset, steps_per_epoch=steps, epochs=1, verbose=0)
        rate = round(config.batch_size * steps / (time.perf_counter() - start), 1)
        out[name] = max(rate, out.get(name, 0))  # the better of two runs each, alternating
        spec = dataset.element_spec
        out[name.replace("fit_with", "bytes_per_batch")] = int(np.prod(spec.shape)) * spec.dtype.size
    batch = next(iter(data))
    step = tf.function(model.train_step, jit_compile=False)  # as the model was compiled (build_model: no XLA)
    times = []
    for _ in range(steps + 2):
        start = time.perf_counter()
        float(step(batch)["loss"])
        times.append(time.perf_counter() - start)
    out["train_step_alone"] = round(config.batch_size / float(np.median(times[2:])), 1)
    out["input_overhead"] = round(1 - out["fit_with_pipeline"] / out["train_step_alone"], 3)
    return out


def folder_stream(batch_size=64, batches=8, images=256):
    """Pairs/s of a streamed JPEG folder at 224 px, with 1 worker thread and with all of them."""
    from tf_simsiam.data import augment, pipeline, sources
    rng = np.random.default_rng(0)
    directory = tempfile.mkdtemp(prefix="tf_simsiam_stream_")
    for i in range(images):  # smooth images (photographs compress like these, unlike noise)
        h, w = (375, 500) if i % 4 else (500, 375)
        small = rng.integers(0, 256, (h // 25, w // 25, 3)).astype(np.float32)
        image = tf.cast(tf.image.resize(small[None], (h, w), "bicubic")[0], tf.uint8)
        tf.io.write_file(os.path.join(directory, f"{i:05d}.jpg"), tf.io.encode_jpeg(image, quality=90))
    stream = sources.load(f"folder:{directory}", image_size=224, options=sources.ReadOptions(stream="true"))
    recipe = augment.simsiam_imagenet(224)
    out = {"images": "JPEG 500x375 and 375x500 on disk", "views": "224x224x3", "batch_size": batch_size}
    for threads in (1, os.cpu_count()):
        options = tf.data.Options()
        options.threading.private_threadpool_size = threads
        dataset = pipeline.pretrain_dataset(stream, batch_size, recipe).with_options(options)
        out[f"pairs_per_sec_{threads}_threads"] = pairs_per_sec(iter(dataset), batch_size, batches, warmup=2)
    per_thread = out["pairs_per_sec_1_threads"]
    out["pairs_per_sec_per_thread"] = per_thread
    out["threads_for_1000_pairs_per_sec"] = int(np.ceil(1000 / per_thread))
    out["train_step_it_feeds"] = train_step_at_224(stream, recipe)
    return out


def train_step_at_224(stream, recipe, batch_size=8, steps=3):
    """Pairs/s of the train step of configs/folder.cfg's network (ResNet-18, CIFAR stem, width 64) at 224 px on
    this CPU, float32, on a batch of the stream: what the stream feeds."""
    from absl import flags

    from tf_simsiam import pretrain, train
    flags.FLAGS.unparse_flags()
    flags.FLAGS(["train", "--flagfile=configs/folder.cfg", "--image_size=224", "--precision=float32",
                 f"--batch_size={batch_size}"])
    config = train.config_from_flags()
    enc = {"name": "resnet18", "input_shape": [224, 224, 3], "width": config.width, "mean": [0.5] * 3,
           "std": [0.25] * 3}
    model = pretrain.build_model(config, enc, steps_per_epoch=100)
    from tf_simsiam.data import pipeline
    batch = next(iter(pipeline.pretrain_dataset(stream, batch_size, recipe)))
    step = tf.function(model.train_step)
    float(step(batch)["loss"])
    start = time.perf_counter()
    for _ in range(steps):
        float(step(batch)["loss"])
    return {"network": "ResNet-18 CIFAR stem, width 64, float32", "batch_size": batch_size,
            "pairs_per_sec": round(batch_size * steps / (time.perf_counter() - start), 2)}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="configs/fashion_mnist.cfg")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--only", choices=["augmentation", "end_to_end", "stream"], default=None)
    args = parser.parse_args()
    parts = {"augmentation_32x32_batch256": augmentation, "end_to_end": lambda: end_to_end(args.config, args.steps),
             "folder_stream_224": folder_stream}
    if args.only:
        parts = {name: run for name, run in parts.items() if name.startswith(args.only) or
                 (args.only == "stream" and name == "folder_stream_224")}
    print(json.dumps({"benchmark": "input_pipeline", "machine": machine.describe(),
                      **{name: run() for name, run in parts.items()}}, indent=1))


if __name__ == "__main__":
    main()
