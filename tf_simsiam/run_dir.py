"""The run directory: what a training run writes into --model_dir, and how a killed run takes up where it was.

    MODEL_DIR/config.json             the run's settings (a resume must keep the MODEL_KEYS of it)
    MODEL_DIR/checkpoints/step-N.weights.h5   model and optimizer state after global step N; the last `keep`
    MODEL_DIR/checkpoints/checkpoint.json     the newest: {"step": N, "weights": "step-N.weights.h5"}
    MODEL_DIR/result.json             the outcome (always valid JSON: a non-finite number is written as null)

Checkpoints are written every `every_steps` steps and at each epoch end, each under a temporary name and renamed
into place, so a kill at any moment leaves the earlier ones intact. `restore` loads the newest one that reads;
one that does not (a truncated file, a full disk) is named in a warning and the one before it is used.
"""

import json
import logging
import math
import os
import re
import subprocess
import sys
import tempfile

import keras
import numpy as np

log = logging.getLogger("tf_simsiam")

CHECKPOINT = re.compile(r"^(?:step|epoch)-(\d+)\.weights\.h5$")  # epoch-N: written by tf_simsiam 0.2


def prepare(model_dir):
    """Creates model_dir (and its parents) or raises ValueError in one line saying why it cannot be used."""
    if not model_dir:
        raise ValueError("--model_dir must not be empty")
    if os.path.exists(model_dir) and not os.path.isdir(model_dir):
        raise ValueError(f"--model_dir={model_dir} is a file, not a directory: choose another --model_dir")
    try:
        os.makedirs(model_dir, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=model_dir):
            pass
    except OSError as error:
        raise ValueError(f"--model_dir={model_dir} cannot be written: {error.strerror or error}") from None


def _finite(value):
    """value with every non-finite float replaced by None (JSON has no NaN or infinity)."""
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    if isinstance(value, (float, np.floating)):
        return float(value) if math.isfinite(value) else None
    if isinstance(value, np.integer):
        return int(value)
    return value


def write_json(path, payload):
    """Writes payload as valid JSON (non-finite numbers as null), atomically: a reader never sees half a file,
    even with several writers."""
    tmp = f"{path}.{os.getpid()}.tmp"
    with open(tmp, "w") as f:
        json.dump(_finite(payload), f, indent=1, allow_nan=False)
    os.replace(tmp, path)


def saved_config(model_dir):
    """The config.json of model_dir as a dict, {} if it has none."""
    path = os.path.join(model_dir, "config.json")
    if not os.path.exists(path):
        return {}
    with open(path) as f:
        return json.load(f)


def check_same_run(model_dir, settings, keys):
    """Raises ValueError if model_dir holds a run whose `keys` differ from `settings` (a dict)."""
    saved = saved_config(model_dir)
    changed = [k for k in keys if k in saved and saved[k] != settings[k]]
    if changed:
        details = ", ".join(f"--{k}={saved[k]!r} there, {settings[k]!r} now" for k in changed)
        raise ValueError(f"--model_dir={model_dir} holds a run with other settings ({details}); resume it with "
                         f"its own settings or choose a new --model_dir")


def checkpoints(directory):
    """[(step, path)] of the checkpoint files in directory, newest first."""
    if not os.path.isdir(directory):
        return []
    found = [(int(m.group(1)), os.path.join(directory, name))
             for name in os.listdir(directory) if (m := CHECKPOINT.match(name))]
    return sorted(found, reverse=True)


def restore(model, directory):
    """Loads the newest readable checkpoint of directory into model (built, its optimizer built); returns its
    global step (the optimizer's iterations), 0 if there is none. Raises ValueError if there are checkpoints and
    none of them reads."""
    found = checkpoints(directory)
    for step, path in found:
        try:
            model.load_weights(path)
        except Exception as error:  # h5py / Keras raise several kinds for a damaged file
            log.warning("checkpoint %s cannot be read (%s: %s); trying the one before it", path,
                        type(error).__name__, str(error).splitlines()[0] if str(error) else "")
            continue
        log.info("restored %s", path)
        return int(model.optimizer.iterations.numpy())
    if found:
        raise ValueError(f"no checkpoint in {directory} can be read ({', '.join(p for _, p in found)}): move the "
                         f"directory away to start afresh, or choose a new --model_dir")
    return 0


class Checkpoint(keras.callbacks.Callback):
    """Model and optimizer state at every multiple of `every_steps` global steps (0: only at epoch ends) and at each epoch end,
    as `step-N.weights.h5`; `checkpoint.json` names the newest. The last `keep` are kept.

    Weights that are not finite are never written (a diverged step must not replace a good checkpoint). In a
    multi-worker run every worker saves (so that all take part in whatever reading the variables involves),
    but only the chief keeps its file.
    """

    def __init__(self, directory, every_steps=0, keep=3, chief=True):
        super().__init__()
        self.directory, self.every_steps, self.keep, self.chief = directory, int(every_steps), keep, chief
        self.last_saved = None
        if chief:
            os.makedirs(directory, exist_ok=True)

    def _step(self):
        return int(self.model.optimizer.iterations.numpy())

    def on_train_begin(self, logs=None):
        self.last_saved = self._step()

    def on_train_batch_end(self, batch, logs=None):
        # at each multiple of every_steps (or the first step past one, with several steps per execution)
        if self.every_steps and self._step() // self.every_steps > self.last_saved // self.every_steps:
            self.save()

    def on_epoch_end(self, epoch, logs=None):
        if self._step() != self.last_saved:
            self.save()

    def save(self):
        step = self._step()
        self.last_saved = step
        if not all(np.isfinite(w).all() for w in self.model.get_weights()):
            log.warning("step %d: the weights are not finite; no checkpoint written", step)
            return
        if not self.chief:
            with tempfile.TemporaryDirectory() as scratch:
                self.model.save_weights(os.path.join(scratch, "worker.weights.h5"))
            return
        name = f"step-{step}.weights.h5"
        tmp = os.path.join(self.directory, f"tmp-{name}")
        self.model.save_weights(tmp)
        os.replace(tmp, os.path.join(self.directory, name))
        write_json(os.path.join(self.directory, "checkpoint.json"), {"step": step, "weights": name})
        for _, old in checkpoints(self.directory)[self.keep:]:
            os.remove(old)


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite."""


class StopOnNonFiniteLoss(keras.callbacks.Callback):
    """Stops training at the first step whose loss is not finite, with an error naming the step and what to try
    (`advice`). Put it before the Checkpoint callback: the diverged step is then never checkpointed."""

    def __init__(self, advice=""):
        super().__init__()
        self.advice = advice

    def on_train_batch_end(self, batch, logs=None):
        loss = float(np.mean((logs or {}).get("loss", 0.0)))
        if not math.isfinite(loss):
            step = int(self.model.optimizer.iterations.numpy())
            raise TrainingDiverged(f"the loss is {loss} at step {step}: training diverged and was stopped. "
                                   f"{self.advice}".strip())


def read_flagfile(path, extra=()):
    """The settings of a flagfile and of `--set` items, as {name: value string}; later ones win."""
    settings = {}
    with open(path) as f:
        items = [line.strip()[2:] for line in f if line.strip().startswith("--")]
    for item in [*items, *extra]:
        name, _, value = item.partition("=")
        if not value and name.startswith("no"):
            name, value = name[2:], "false"
        settings[name] = value or "true"
    return settings


def train_once(model_dir, settings, what="run"):
    """Runs `python -m tf_simsiam.train` with the flags `settings` into model_dir, unless a run with the same
    settings finished there before (its result.json exists): returns "ran" or "done before". A finished run of
    other settings there, or a failed run, is a SystemExit naming the folder; running the same again resumes an
    interrupted run (the settings are kept in model_dir/variant.txt)."""
    record = os.path.join(model_dir, "variant.txt")
    if os.path.exists(os.path.join(model_dir, "result.json")):
        before = open(record).read().split("\n") if os.path.exists(record) else None
        if before != list(settings):
            raise SystemExit(f"error: {model_dir} holds a finished run of other settings (another recipe, --set or "
                             f"--budget); choose another --output_dir or remove that folder")
        return "done before"
    os.makedirs(model_dir, exist_ok=True)
    with open(record, "w") as f:
        f.write("\n".join(settings))
    cmd = [sys.executable, "-m", "tf_simsiam.train", *settings, f"--model_dir={model_dir}"]
    print(" ".join(cmd[1:]), flush=True)
    out = subprocess.run(cmd)
    if out.returncode:
        raise SystemExit(f"error: the {what} in {model_dir} failed (exit {out.returncode}); run the same command "
                         f"again to resume it")
    return "ran"
