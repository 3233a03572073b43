"""Downstream evaluation as a plain function of a plain config (no flags): what `python -m tf_simsiam.evaluate` runs.

    config = EvaluateConfig(export_dir="runs/fashion_mnist/export", protocols=("knn", "linear"), output_dir="eval")
    rows = evaluate(config)      # also writes results.json, results.md and PNG plots into output_dir

Every protocol runs on the exported SimSiam encoder and, through the same code, on the baselines: raw pixels and a
randomly initialised encoder of the same architecture (kNN and linear), and the same architecture trained from
scratch on the same labels (`supervised`).
"""

import dataclasses
import json
import logging
import os
import time

import keras
import numpy as np

from tf_simsiam import evaluation, pretrained, report
from tf_simsiam.data import sources
from tf_simsiam.models import backbones

log = logging.getLogger("tf_simsiam")

PROTOCOLS = ("knn", "linear", "finetune", "supervised")
BASELINES = ("pixels", "random")


@dataclasses.dataclass
class EvaluateConfig:
    export_dir: str = ""
    protocols: tuple = ("knn", "linear")
    baselines: tuple = BASELINES
    dataset: str = "fashion_mnist"
    data_dir: str = None
    image_size: int = 0  # 0: the encoder's input size (or the data set's own for supervised alone)
    label_fractions: tuple = (1.0,)  # for finetune and supervised
    epochs: int = 0  # 0: each protocol's own default (linear 90, finetune/supervised 30)
    batch_size: int = 256
    base_lr: float = 0.0  # 0: each protocol's own default
    optimizer: str = ""  # "": each protocol's own default (linear: lars; finetune/supervised: sgd)
    augment: bool = True
    knn_k: int = 200
    knn_temperature: float = 0.1
    knn_plain_k: int = 20
    train_size: int = 0  # 0: the whole split
    test_size: int = 0
    seed: int = 0
    output_dir: str = "eval"

    def validate(self):
        if not self.protocols:
            raise ValueError("--protocol needs at least one of " + ", ".join(PROTOCOLS))
        for p in self.protocols:
            if p not in PROTOCOLS:
                raise ValueError(f"--protocol must be among {PROTOCOLS}, got {p!r}")
        for b in self.baselines:
            if b not in BASELINES:
                raise ValueError(f"--baselines must be among {BASELINES}, got {b!r}")
        for f in self.label_fractions:
            if not 0 < f <= 1:
                raise ValueError(f"--label_fraction values must be in (0, 1], got {f}")
        for name in ("epochs", "train_size", "test_size", "base_lr", "image_size"):
            if getattr(self, name) < 0:
                raise ValueError(f"--{name} must be >= 0, got {getattr(self, name)}")
        if self.batch_size <= 0 or self.knn_k <= 0 or self.knn_plain_k <= 0:
            raise ValueError("--batch_size, --knn_k and --knn_plain_k must be positive")
        if self.optimizer not in ("", "lars", "sgd"):
            raise ValueError(f"--optimizer must be lars or sgd, got {self.optimizer!r}")
        needs_export = set(self.protocols) & {"knn", "linear", "finetune"}
        if needs_export and not self.export_dir:
            raise ValueError(f"--export_dir is needed for --protocol={','.join(sorted(needs_export))}")
        if self.export_dir and not os.path.exists(os.path.join(self.export_dir, "encoder.json")):
            raise ValueError(f"--export_dir={self.export_dir} holds no encoder.json: not an exported encoder "
                             f"(python -m tf_simsiam.export writes one)")
        if not self.output_dir:
            raise ValueError("--output_dir must not be empty")

    def schedule(self, default):
        changes = {"batch_size": self.batch_size, "augment": self.augment}
        if self.epochs:
            changes["epochs"] = self.epochs
        if self.base_lr:
            changes["base_lr"] = self.base_lr
        if self.optimizer:
            changes["optimizer"] = self.optimizer
        return dataclasses.replace(default, **changes)


def _splits(config, image_size):
    train = sources.load(config.dataset, "train", config.data_dir, image_size)
    test = sources.load(config.dataset, "test", config.data_dir, image_size)
    if isinstance(train, sources.Stream):
        train = train.subset(config.train_size or 50_000, config.seed, image_size)
        test = test.subset(config.test_size or 10_000, config.seed, image_size)
    else:
        train = sources.resized(train.subset(config.train_size, config.seed), image_size)
        test = sources.resized(test.subset(config.test_size, config.seed), image_size)
    if train.labels is None or test.labels is None:
        raise ValueError(f"--dataset={config.dataset} has no labels: evaluation needs class folders or a "
                         f"labelled data set")
    if image_size is not None and train.image_shape[:2] != (image_size, image_size):
        raise ValueError(f"--dataset={config.dataset} gives {train.image_shape} images, the encoder expects "
                         f"{image_size}x{image_size}")
    return train, test


def evaluate(config):
    """Runs the configured protocols and baselines; returns the result rows and writes the report."""
    config = dataclasses.replace(config, export_dir=pretrained.resolve(config.export_dir, "--export_dir"))
    config.validate()
    encoder_config = None
    if config.export_dir:
        with open(os.path.join(config.export_dir, "encoder.json")) as f:
            encoder_config = json.load(f)
    image_size = encoder_config["input_shape"][0] if encoder_config else (config.image_size or None)
    train, test = _splits(config, image_size)
    if encoder_config is None:  # supervised only: the default architecture at the data's size
        encoder_config = {"name": "resnet18", "input_shape": list(train.image_shape), "width": 16}
    num_classes = int(max(train.labels.max(), test.labels.max())) + 1
    rows, predictions, embeddings = [], {}, {}

    def record(method, protocol, top1, started, fraction=None, predicted=None, **extra):
        row = {"method": method, "protocol": protocol, "label_fraction": fraction, "top1": round(top1, 4),
               "seconds": round(time.time() - started, 1), **extra}
        rows.append(row)
        if predicted is not None:
            predictions[f"{method} {protocol}" + (f" {fraction:g}" if fraction else "")] = predicted
        log.info("%-8s %-10s%s top-1 %.2f%% [%.0fs]", method, protocol,
                 f" {fraction:g} of labels" if fraction else "", 100 * top1, row["seconds"])

    encoders = {}
    if set(config.protocols) & {"knn", "linear"}:
        if config.export_dir:
            encoders["simsiam"] = evaluation.saved_model_encoder(os.path.join(config.export_dir, "saved_model"))
        if "pixels" in config.baselines:
            encoders["pixels"] = evaluation.pixel_encoder
        if "random" in config.baselines:
            keras.utils.set_random_seed(config.seed)
            encoders["random"] = evaluation.keras_encoder(backbones.from_encoder_config(encoder_config))

    for method, encoder in encoders.items():
        if "knn" in config.protocols:
            started = time.time()
            train_features = evaluation.encode_all(encoder, train.images)
            test_features = evaluation.encode_all(encoder, test.images)
            if method == "simsiam":
                embeddings[method] = test_features
            for k, temperature, name in ((config.knn_k, config.knn_temperature, "knn"),
                                         (config.knn_plain_k, None, "knn_plain")):
                predicted = evaluation.knn_classify(train_features, train.labels, test_features, num_classes, k,
                                                    temperature)
                record(method, name, float(np.mean(predicted == test.labels)), started, predicted=predicted,
                       k=k, temperature=temperature)
        if "linear" in config.protocols:
            started = time.time()
            schedule = config.schedule(evaluation.LINEAR)
            top1, predicted, losses = evaluation.linear_probe(encoder, (train.images, train.labels),
                                                              (test.images, test.labels), num_classes, schedule,
                                                              config.seed)
            record(method, "linear", top1, started, predicted=predicted, epochs=schedule.epochs,
                   optimizer=schedule.optimizer, final_loss=round(losses[-1], 4))

    from tf_simsiam import export
    for fraction in config.label_fractions:
        index = evaluation.sample_fraction(train.labels, fraction, config.seed)
        labelled = (train.images[index], train.labels[index])
        runs = []
        if "finetune" in config.protocols:
            runs.append(("simsiam", "finetune", lambda: export.load_encoder(config.export_dir), evaluation.FINE_TUNE))
        if "supervised" in config.protocols:
            runs.append(("scratch", "supervised", lambda: backbones.from_encoder_config(encoder_config),
                         evaluation.SUPERVISED))
        for method, protocol, build, default in runs:
            started = time.time()
            keras.utils.set_random_seed(config.seed)
            schedule = config.schedule(default)
            top1, predicted, losses = evaluation.fine_tune(build(), labelled, (test.images, test.labels),
                                                           num_classes, schedule, config.seed)
            record(method, protocol, top1, started, fraction, predicted, labelled_images=len(index),
                   epochs=schedule.epochs, final_loss=round(losses[-1], 4))

    os.makedirs(config.output_dir, exist_ok=True)
    report.write(config.output_dir, rows, predictions, embeddings, test.labels, test.class_names,
                 {"config": {k: v for k, v in dataclasses.asdict(config).items()},
                  "train_images": len(train.images), "test_images": len(test.images)})
    return rows
