"""A run sized by wall time (--time_budget=10m): the number of steps and the learning-rate schedule fitted to it.

The runner measures this machine's step rate on a probe of the model (the same network, batch and data, whose
weights are then dropped), times one kNN evaluation (on the untrained network, a figure the run reports anyway),
and `make_plan` turns the time left into steps:

    steps = (budget - time already spent - evaluations and probes still to come) * measured steps per second

The steps become epochs of at most one pass over the data each (--epochs is the most the run trains); the cosine
decay ends at the last step and the warmup keeps its share of the recipe (--warmup_epochs / --epochs of the steps).
The plan is recorded in config.json and a resumed run follows it: it is never re-measured.
"""

import dataclasses
import math
import re

_UNITS = {"": 1, "s": 1, "m": 60, "min": 60, "h": 3600}
_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)\s*(min|h|m|s|)")


def parse(text, flag="time_budget"):
    """Seconds of a budget: '600', '90s', '10m', '1.5h', '1h30m'; '' or '0' -> 0 (no budget)."""
    text = (text or "").strip().lower()
    if text in ("", "0"):
        return 0.0
    parts = _PART.findall(text)
    if not parts or _PART.sub("", text).strip():
        raise ValueError(f"--{flag}={text!r} is not a duration: write seconds (600), minutes (10m) or hours (1.5h)")
    seconds = sum(float(value) * _UNITS[unit] for value, unit in parts)
    if seconds <= 0:
        raise ValueError(f"--{flag}={text!r} must be a positive duration")
    return seconds


def knn_evaluations(epochs, every):
    """How many kNN evaluations a run of `epochs` makes: every `every` epochs and after the last (0: none)."""
    if not every:
        return 0
    return epochs // every + (epochs % every != 0)


@dataclasses.dataclass
class Plan:
    """The steps a budget buys on this machine, and the schedule they follow (all fields in config.json)."""

    budget_seconds: float
    steps_per_second: float  # measured on the probe
    spent_seconds: float  # wall time of the run when the plan was made
    seconds_per_evaluation: float  # one kNN evaluation, measured (0: no monitor)
    reserved_seconds: float  # set aside for what comes before the first step (building and tracing the model)
    evaluations: int
    total_steps: int
    epochs: int
    steps_per_epoch: int
    warmup_steps: int

    @classmethod
    def from_json(cls, values):
        return cls(**{f.name: values[f.name] for f in dataclasses.fields(cls)})

    def to_json(self):
        return dataclasses.asdict(self)

    def describe(self):
        return (f"{self.total_steps} steps ({self.epochs} epoch(s) of {self.steps_per_epoch}, {self.warmup_steps} "
                f"of warmup) at the measured {self.steps_per_second:.3g} steps/s, with {self.evaluations} kNN "
                f"evaluation(s) of {self.seconds_per_evaluation:.0f}s, in the {self.budget_seconds:.0f}s budget "
                f"({self.spent_seconds:.0f}s already spent)")


def make_plan(budget_seconds, spent_seconds, steps_per_second, steps_per_pass, max_epochs, warmup_share=0.0,
              knn_every=0, seconds_per_evaluation=0.0, reserved_seconds=0.0, min_steps=1):
    """The Plan that fills the budget.

    Args:
      budget_seconds: the whole run's wall-time budget.
      spent_seconds: what the run has used so far (loading, probing).
      steps_per_second: the measured train-step rate.
      steps_per_pass: steps of one pass over the training data (the most an epoch has).
      max_epochs: the most epochs the run trains (--epochs), however large the budget.
      warmup_share: the share of the steps that warm the learning rate up.
      knn_every, seconds_per_evaluation: the kNN monitor's period in epochs and the time of one evaluation.
      reserved_seconds: time still to come outside the steps and evaluations (building the model).
      min_steps: fewer steps than this is an error (the budget is too small for this machine).
    """
    if steps_per_second <= 0 or steps_per_pass <= 0 or max_epochs <= 0:
        raise ValueError("the plan needs a positive step rate, steps per pass and --epochs")
    left = budget_seconds - spent_seconds - reserved_seconds
    evaluations = 1 if knn_every else 0
    while True:
        steps = math.floor(max(0.0, left - evaluations * seconds_per_evaluation) * steps_per_second)
        steps = min(steps, max_epochs * steps_per_pass)
        epochs = max(1, math.ceil(steps / steps_per_pass))
        needed = knn_evaluations(epochs, knn_every)
        if needed <= evaluations:
            break
        evaluations = needed
    if steps < min_steps:
        raise ValueError(
            f"--time_budget={budget_seconds:g}s leaves time for {steps} training steps on this machine "
            f"({steps_per_second:.3g} steps/s measured, {spent_seconds:.0f}s spent before training, "
            f"{evaluations} kNN evaluation(s) of {seconds_per_evaluation:.0f}s): give a larger budget")
    steps_per_epoch = steps // epochs
    total = epochs * steps_per_epoch
    return Plan(budget_seconds=float(budget_seconds), steps_per_second=float(steps_per_second),
                spent_seconds=round(float(spent_seconds), 1),
                seconds_per_evaluation=round(float(seconds_per_evaluation), 1),
                reserved_seconds=round(float(reserved_seconds), 1), evaluations=evaluations, total_steps=total,
                epochs=epochs, steps_per_epoch=steps_per_epoch, warmup_steps=round(warmup_share * total))


def measure_steps_per_second(model, dataset, steps_per_execution=1, min_seconds=10.0, max_steps=512):
    """Steps per second of model.fit on `dataset` in its steady state. A first call of two executions traces the
    step (not timed; its seconds are returned). Then one call runs until `min_seconds` have passed and at least 6
    executions are done (at most `max_steps` steps), and the rate is that of its second half: by then the input
    pipeline has used up the batches it prepared ahead while the step was traced and started, and it competes for
    the CPU as it does in training. Trains the model: use a probe whose weights are dropped. Returns (steps per
    second, seconds of the first call)."""
    import time

    import keras

    class Clock(keras.callbacks.Callback):
        def __init__(self):
            super().__init__()
            self.start, self.ends = time.perf_counter(), []

        def on_train_batch_end(self, batch, logs=None):
            self.ends.append(time.perf_counter())
            if len(self.ends) >= 6 and self.ends[-1] - self.start >= min_seconds:
                self.model.stop_training = True

    start = time.perf_counter()
    model.fit(dataset, epochs=1, steps_per_epoch=2 * steps_per_execution, verbose=0, shuffle=False)
    first = time.perf_counter() - start
    clock = Clock()
    executions = max(6, max_steps // steps_per_execution)
    model.fit(dataset, epochs=1, steps_per_epoch=executions * steps_per_execution, verbose=0, shuffle=False,
              callbacks=[clock])
    half = clock.ends[len(clock.ends) // 2:]
    return (len(half) - 1) * steps_per_execution / (half[-1] - half[0]), first
