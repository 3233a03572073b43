"""Training monitors and checkpoints, as Keras callbacks.

- KNNMonitor: weighted kNN top-1 (cosine, k=200, t=0.1) of backbone features on a labelled split, every
  `every` epochs, plus once the same kNN on raw pixels as the baseline. Adds `knn_top1` to the epoch logs, and
  `feature_std`: z_std's statistic on the backbone's features of the test split, which shows whether a collapse
  reaches the backbone or stays in the heads.
- CollapseMonitor: warns when z_std falls towards 0 (the paper's collapse signal, Fig. 2).
- EpochHistory: one CSV row per epoch (epoch, loss, z_std, lr, knn_top1, feature_std, ...).
- StepHistory: about 200 CSV rows over a run (step, loss, z_std, lr, ...), for curves of short runs too.
- TrainingReport: writes training.png (kNN, z_std, loss, lr) after each kNN evaluation and at the end.
- ViewPairs: writes an image grid of augmented view pairs to TensorBoard.
"""

import csv
import logging
import math
import os
import time

import keras
import numpy as np
import tensorflow as tf

from tf_simsiam import evaluation, losses

log = logging.getLogger("tf_simsiam")


class KNNMonitor(keras.callbacks.Callback):
    def __init__(self, train, test, every=1, k=200, temperature=0.1, batch_size=512, strategy=None):
        super().__init__()
        if train.labels is None or test.labels is None:
            raise ValueError("the kNN monitor needs labelled train and test splits")
        self.train, self.test, self.every = train, test, every
        self.k, self.temperature, self.batch_size = k, temperature, batch_size
        self.pixel_top1 = None
        self.history = []  # (epoch, top1)
        self.feature_std_history = []  # (epoch, feature_std)
        self._features = None  # (encoder, its compiled inference function), traced once, not every epoch
        self.last_features = None  # (train, test) features of the last evaluation
        self.strategy = strategy  # features on its replicas; default: the strategy the model was built under

    def accuracy(self, train_features, test_features):
        return evaluation.knn_accuracy(train_features, self.train.labels, test_features, self.test.labels,
                                       self.k, self.temperature)

    def on_train_begin(self, logs=None):
        self.pixel_baseline()

    def pixel_baseline(self):
        """The same kNN on raw pixels (computed once, at the start of training unless called before)."""
        if self.pixel_top1 is None:
            self.pixel_top1 = self.accuracy(evaluation.pixel_features(self.train.images),
                                            evaluation.pixel_features(self.test.images))
            log.info("kNN top-1 of raw pixels (baseline, k=%d, t=%s, %d train / %d test): %.2f%%", self.k,
                     self.temperature, len(self.train.images), len(self.test.images), 100 * self.pixel_top1)

    def pixel_linear_top1(self, seed=0):
        """The linear probe on raw pixels (evaluation.linear_probe_on_features), computed once."""
        if getattr(self, "_pixel_linear", None) is None:
            self._pixel_linear = evaluation.linear_probe_on_features(
                evaluation.pixel_features(self.train.images), evaluation.pixel_features(self.test.images),
                self.train.labels, self.test.labels, seed=seed)[0]
        return self._pixel_linear

    def evaluate(self, encoder=None):
        """(kNN top-1, feature_std) of an encoder, by default the model's backbone. feature_std is the std over the
        test images of their l2-normalised features, averaged over channels (as z_std for z): 0 when every image
        maps to one direction."""
        encoder = encoder or self.model.backbone
        if self._features is None or self._features[0] is not encoder:
            strategy = self.strategy or (self.model.distribute_strategy if self.model is not None else None)
            self._features = (encoder, evaluation.Features(encoder, strategy))
        features = self._features[1]
        test = features(self.test.images, self.batch_size)
        train = features(self.train.images, self.batch_size)
        self.last_features = (train, test)
        return self.accuracy(train, test), float(losses.std_of_l2_normalized(test))

    def on_epoch_end(self, epoch, logs=None):
        last = epoch + 1 == self.params.get("epochs")
        if not (last or (self.every and (epoch + 1) % self.every == 0)):
            return
        start = time.time()
        top1, feature_std = self.evaluate()
        self.history.append((epoch + 1, top1))
        self.feature_std_history.append((epoch + 1, feature_std))
        if logs is not None:
            logs["knn_top1"], logs["feature_std"] = top1, feature_std
        log.info("epoch %d: kNN top-1 %.2f%% (raw pixels %.2f%%), backbone feature_std %.4g [%.0fs]", epoch + 1,
                 100 * top1, 100 * self.pixel_top1, feature_std, time.time() - start)


class CollapseMonitor(keras.callbacks.Callback):
    """Warns when z_std < fraction / sqrt(dim): the outputs are collapsing to a constant vector."""

    def __init__(self, dim, fraction=0.2):
        super().__init__()
        self.healthy = 1.0 / math.sqrt(dim)
        self.threshold = fraction * self.healthy
        self.collapsed_epochs = []

    def on_epoch_end(self, epoch, logs=None):
        z_std = float(np.mean((logs or {}).get("z_std", np.nan)))
        if z_std < self.threshold:
            self.collapsed_epochs.append(epoch + 1)
            log.warning("COLLAPSE WARNING, epoch %d: z_std = %.4g is below %.4g (healthy is about 1/sqrt(d) = "
                        "%.4g): the projector outputs are collapsing to a constant.", epoch + 1, z_std,
                        self.threshold, self.healthy)


def with_method_metrics(keys, model):
    """`keys` and then the metrics of the model's method (TwoViewModel.extra_metrics: SimCLR's contrastive
    accuracy, Barlow Twins' two terms, ...)."""
    return tuple(keys) + tuple(m for m in getattr(model, "extra_metrics", ()) if m not in keys)


class EpochHistory(keras.callbacks.Callback):
    """Appends one row per epoch to a CSV file (a resumed run goes on appending): the epoch, its metrics, and
    `seconds`, the run's wall time so far (the kNN evaluations included; a resumed run goes on from the last
    row's)."""

    KEYS = ("loss", "z_std", "lr", "knn_top1", "feature_std")  # then the method's own metrics, then seconds

    def __init__(self, path):
        super().__init__()
        self.path = path
        before = 0.0
        if os.path.exists(path):
            with open(path) as f:
                rows = list(csv.DictReader(f))
            before = float(rows[-1].get("seconds") or 0) if rows else 0.0
        self.start = time.time() - before

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        keys = with_method_metrics(self.KEYS, self.model)
        values = ["" if logs.get(k) is None else f"{float(np.mean(logs[k])):.6g}" for k in keys]
        header = not os.path.exists(self.path)
        with open(self.path, "a") as f:
            if header:
                f.write(",".join(("epoch",) + keys + ("seconds",)) + "\n")
            f.write(",".join([str(epoch + 1)] + values + [f"{time.time() - self.start:.1f}"]) + "\n")


class StepHistory(keras.callbacks.Callback):
    """Appends rows (step, loss, z_std, lr, ...) to a CSV file about `points` times over `total_steps`: loss and
    z_std are the means over the steps since the row before (recovered from Keras' running means of the epoch),
    lr the step's own."""

    KEYS = ("loss", "z_std", "lr")  # then the method's own metrics

    def __init__(self, path, total_steps, points=200):
        super().__init__()
        self.path, self.every = path, max(1, total_steps // points)
        self.rows = []

    def on_epoch_begin(self, epoch, logs=None):
        self.done, self.sums = 0, {}

    def on_train_batch_end(self, batch, logs=None):
        logs = logs or {}
        done = batch + 1  # steps of this epoch so far (with several steps per execution: the last one's)
        if done - self.done < self.every:
            return
        step = int(self.model.optimizer.iterations.numpy())
        row = [str(step)]
        for key in with_method_metrics(self.KEYS, self.model):
            if logs.get(key) is None:
                row.append("")
                continue
            value = float(np.mean(logs[key]))
            if key != "lr":  # a running mean of the epoch: the mean of the steps since the last row
                total = value * done
                value = (total - self.sums.get(key, 0.0)) / (done - self.done)
                self.sums[key] = total
            row.append(f"{value:.6g}")
        self.done = done
        self.rows.append(",".join(row))

    def on_epoch_end(self, epoch, logs=None):
        self.flush()

    def on_train_end(self, logs=None):
        self.flush()

    def flush(self):
        if not self.rows:
            return
        header = not os.path.exists(self.path)
        with open(self.path, "a") as f:
            if header:
                f.write(",".join(("step",) + with_method_metrics(self.KEYS, self.model)) + "\n")
            f.write("\n".join(self.rows) + "\n")
        self.rows = []


class TrainingReport(keras.callbacks.Callback):
    """Writes MODEL_DIR/training.png (report.training_figure) after each kNN evaluation and at the end of
    training, from history.csv and steps.csv (put it after EpochHistory and StepHistory in the callbacks)."""

    def __init__(self, model_dir, knn=None, untrained=None, dim=2048, threshold=None):
        super().__init__()
        self.model_dir, self.knn, self.untrained = model_dir, knn, untrained or {}
        self.dim, self.threshold = dim, threshold
        self.path = os.path.join(model_dir, "training.png")

    def write(self):
        from tf_simsiam import report
        path = self.path
        report.training_report(os.path.join(self.model_dir, "history.csv"),
                               os.path.join(self.model_dir, "steps.csv"), path,
                               pixels_top1=self.knn.pixel_top1 if self.knn else None,
                               untrained_top1=self.untrained.get("knn_top1"), dim=self.dim,
                               threshold=self.threshold)
        return path

    def on_epoch_end(self, epoch, logs=None):
        if (logs or {}).get("knn_top1") is not None:
            self.write()

    def on_train_end(self, logs=None):
        self.write()


def view_grid(views, pairs=8):
    """(1, rows*H, 2*W, C) image: each row a pair of views of one image."""
    v = tf.convert_to_tensor(views[:pairs])
    rows = tf.concat([v[:, 0], v[:, 1]], axis=2)  # (pairs, H, 2W, C)
    return tf.reshape(rows, [1, -1, rows.shape[2], rows.shape[3]])


class ViewPairs(keras.callbacks.Callback):
    """Writes a grid of augmented view pairs (from the first batch) to TensorBoard at the start of training."""

    def __init__(self, log_dir, views):
        super().__init__()
        self.log_dir, self.views = log_dir, views

    def on_train_begin(self, logs=None):
        with tf.summary.create_file_writer(os.path.join(self.log_dir, "train")).as_default():
            tf.summary.image("augmented_view_pairs", view_grid(self.views), step=0)
