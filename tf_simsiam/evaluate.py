"""Evaluate an exported encoder:  python -m tf_simsiam.evaluate --export_dir=runs/fashion_mnist/export

The only module of the evaluation that reads flags: they become a plain EvaluateConfig for tf_simsiam.downstream.
"""

import logging
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from absl import app, flags  # noqa: E402
from absl import logging as absl_logging  # noqa: E402

from tf_simsiam import pretrained  # noqa: E402
from tf_simsiam.downstream import BASELINES, PROTOCOLS, EvaluateConfig  # noqa: E402

D = EvaluateConfig()

flags.DEFINE_list("protocol", list(D.protocols), f"Protocols, comma-separated, among {', '.join(PROTOCOLS)}: knn "
                  "(cosine k=200 t=0.1 weighted, and plain majority kNN), linear (frozen encoder, the paper's LARS "
                  "probe), finetune (the whole backbone), supervised (the same architecture from scratch).")
flags.DEFINE_string("export_dir", D.export_dir, "The exported encoder (saved_model/, encoder.weights.h5, "
                    "encoder.json) from python -m tf_simsiam.train or tf_simsiam.export, or pretrained:NAME, an "
                    f"encoder shipped with tf_simsiam ({', '.join(pretrained.NAMES)}). Alias: --init_from.")
flags.DEFINE_alias("init_from", "export_dir")
flags.DEFINE_list("baselines", list(D.baselines), f"Baselines for knn and linear, among {', '.join(BASELINES)} "
                  "(raw pixels; a randomly initialised encoder of the same architecture); empty for none.")
flags.DEFINE_string("dataset", D.dataset, "fashion_mnist, tfds:NAME or folder:PATH (labelled; as for training).")
flags.DEFINE_string("data_dir", D.data_dir, "TFDS data directory.")
flags.DEFINE_integer("image_size", D.image_size, "Image size for --protocol=supervised without --export_dir "
                     "(folder: data sets need it); otherwise the encoder's.", lower_bound=0)
flags.DEFINE_list("label_fraction", [str(f) for f in D.label_fractions], "Fractions of the training labels for "
                  "finetune and supervised (class-balanced, seeded), e.g. 0.01,0.1,1.0.")
flags.DEFINE_integer("epochs", D.epochs, "Training epochs of linear/finetune/supervised; 0: the protocol's "
                     "default (90 / 30 / 30).", lower_bound=0)
flags.DEFINE_integer("batch_size", D.batch_size, "Batch size of the trained protocols.", lower_bound=1)
flags.DEFINE_float("base_lr", D.base_lr, "lr = base_lr * batch_size / 256; 0: the protocol's default (linear 3.0 "
                   "with LARS, finetune 0.05, supervised 0.1).", lower_bound=0)
flags.DEFINE_enum("optimizer", D.optimizer or None, ["lars", "sgd"], "Optimizer of the trained protocols; "
                  "default: lars for linear, sgd for finetune and supervised.")
flags.DEFINE_bool("augment", D.augment, "Random-resized-crop + flip on the training images (the paper). Off, the "
                  "linear probe trains on features computed once (much faster on a CPU).")
flags.DEFINE_integer("knn_k", D.knn_k, "Neighbours of the weighted kNN.", lower_bound=1)
flags.DEFINE_float("knn_temperature", D.knn_temperature, "Temperature of the weighted kNN.", lower_bound=1e-6)
flags.DEFINE_integer("knn_plain_k", D.knn_plain_k, "Neighbours of the plain (majority) kNN.", lower_bound=1)
flags.DEFINE_integer("train_size", D.train_size, "Seeded subset of the training split; 0: all.", lower_bound=0)
flags.DEFINE_integer("test_size", D.test_size, "Seeded subset of the test split; 0: all.", lower_bound=0)
flags.DEFINE_integer("seed", D.seed, "Seed of subsets, heads and augmentation.")
flags.DEFINE_string("output_dir", D.output_dir, "Where results.json, results.md and the PNG plots go.")

FLAGS = flags.FLAGS


def config_from_flags():
    try:
        fractions = tuple(float(f) for f in FLAGS.label_fraction)
    except ValueError:
        raise ValueError(f"--label_fraction must be numbers, got {','.join(FLAGS.label_fraction)}") from None
    return EvaluateConfig(
        export_dir=FLAGS.export_dir, protocols=tuple(FLAGS.protocol), baselines=tuple(FLAGS.baselines),
        dataset=FLAGS.dataset, data_dir=FLAGS.data_dir, image_size=FLAGS.image_size, label_fractions=fractions,
        epochs=FLAGS.epochs,
        batch_size=FLAGS.batch_size, base_lr=FLAGS.base_lr, optimizer=FLAGS.optimizer or "", augment=FLAGS.augment,
        knn_k=FLAGS.knn_k, knn_temperature=FLAGS.knn_temperature, knn_plain_k=FLAGS.knn_plain_k,
        train_size=FLAGS.train_size, test_size=FLAGS.test_size, seed=FLAGS.seed, output_dir=FLAGS.output_dir)


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
    absl_logging.set_verbosity(absl_logging.WARNING)
    logging.getLogger("tf_simsiam").setLevel(logging.INFO)
    from tf_simsiam import downstream, report
    from tf_simsiam.data import DataError
    try:
        config = config_from_flags()
        rows = downstream.evaluate(config)
    except (DataError, ValueError, FileNotFoundError, OSError) as error:
        sys.exit(f"error: {error}")
    print()
    print(report.markdown_table(rows))
    print(f"results, table and plots in {config.output_dir}/")


def run():
    app.run(main)


if __name__ == "__main__":
    run()
