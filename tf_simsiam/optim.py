"""Optimizers and learning-rate schedules of the papers.

- `SGD`: momentum SGD with *coupled* L2 weight decay, as PyTorch's torch.optim.SGD used by the official code:
      g <- g + weight_decay * w;  buf <- momentum * buf + g;  w <- w - lr * buf
  (keras.optimizers.SGD(weight_decay=...) decays the weights outside momentum, which is a different method).
- `LARS`: layer-wise adaptive rate scaling (You et al. 2017) as SimCLR and the SimSiam linear probe use it:
      g <- g + weight_decay * w;  lr_w = lr * eta * ||w|| / ||g||;  buf <- momentum * buf + lr_w * g;  w <- w - buf
  with BN and bias parameters (every variable of rank <= 1) excluded from the adaptation and the weight decay.
- `WarmupCosine`: linear warmup then cosine decay to 0, evaluated per step.
- `scaled_learning_rate`: lr = base_lr * batch_size / 256 (both papers) or base_lr * sqrt(batch_size) (SimCLR).
- `pretrain_optimizer`: SGD or LARS with the scaled lr, warmup and cosine; `simsiam_optimizer`: SimSiam's recipe.
- Variables passed to `exclude_from_schedule` keep the initial (peak) learning rate for the whole run: the paper's
  fixed predictor learning rate (its Table 1, "lr not decayed"); `fixed_learning_rate` reads it from a schedule.
"""

import math

import keras
import tensorflow as tf


@keras.saving.register_keras_serializable(package="tf_simsiam")
class WarmupCosine(keras.optimizers.schedules.LearningRateSchedule):
    """Linear warmup from 0 to peak_learning_rate over warmup_steps, then cosine decay to 0 at total_steps."""

    def __init__(self, peak_learning_rate, total_steps, warmup_steps=0):
        if peak_learning_rate <= 0:
            raise ValueError(f"peak_learning_rate must be > 0, got {peak_learning_rate}")
        if total_steps <= 0 or not 0 <= warmup_steps <= total_steps:
            raise ValueError(f"need 0 <= warmup_steps <= total_steps and total_steps > 0, "
                             f"got warmup_steps={warmup_steps}, total_steps={total_steps}")
        self.peak_learning_rate = float(peak_learning_rate)
        self.total_steps = int(total_steps)
        self.warmup_steps = int(warmup_steps)

    def __call__(self, step):
        step = tf.cast(step, tf.float32)
        peak, warmup = self.peak_learning_rate, float(self.warmup_steps)
        warm = peak * step / max(warmup, 1.0)
        progress = tf.clip_by_value((step - warmup) / max(self.total_steps - warmup, 1.0), 0.0, 1.0)
        cosine = 0.5 * peak * (1.0 + tf.cos(math.pi * progress))
        return tf.where(step < warmup, warm, cosine)

    def get_config(self):
        return {"peak_learning_rate": self.peak_learning_rate, "total_steps": self.total_steps,
                "warmup_steps": self.warmup_steps}


def fixed_learning_rate(learning_rate):
    """The learning rate the paper's fixed-lr variables keep (its "lr not decayed"): the initial learning rate,
    computed once, eagerly, as a Python float.

    A constant is itself; WarmupCosine gives its peak, a keras CosineDecay with warmup its warmup_target; any other
    LearningRateSchedule its value at step 0. A schedule that starts at 0 (a warmup) and says nothing of its peak
    is an error: pass the fixed learning rate yourself (`SimSiam(..., predictor_lr=...)`).
    """
    if not isinstance(learning_rate, keras.optimizers.schedules.LearningRateSchedule):
        return float(learning_rate)
    if isinstance(learning_rate, WarmupCosine):
        return learning_rate.peak_learning_rate
    if isinstance(learning_rate, keras.optimizers.schedules.CosineDecay) and learning_rate.warmup_steps:
        return float(learning_rate.warmup_target)
    value = float(learning_rate(0))
    if not value > 0:
        raise ValueError(f"the learning-rate schedule {type(learning_rate).__name__} is {value} at step 0 (a "
                         f"warmup?): the fixed predictor learning rate cannot be read from it; pass it as "
                         f"predictor_lr=... (or fix_predictor_lr=False)")
    return value


class FixedLearningRateMixin:
    """Lets some variables keep a fixed learning rate (by default the schedule's initial one) while the others
    follow the schedule."""

    def exclude_from_schedule(self, var_list, learning_rate=None):
        """var_list keeps `learning_rate` (default: fixed_learning_rate of this optimizer's schedule) throughout."""
        self.fixed_learning_rate = float(fixed_learning_rate(self.schedule) if learning_rate is None
                                         else learning_rate)
        self.fixed_variable_keys = {self._var_key(v) for v in var_list}

    def _learning_rate_for(self, variable, learning_rate):
        if self._var_key(variable) in getattr(self, "fixed_variable_keys", ()):
            return tf.constant(self.fixed_learning_rate, variable.dtype)
        return tf.cast(learning_rate, variable.dtype)


def fix_learning_rate(optimizer, variables, learning_rate=None):
    """Keeps `variables` at a fixed learning rate (default: the optimizer's initial one) under `optimizer`, also
    when Keras wrapped it in a LossScaleOptimizer (mixed_float16). Needs an optimizer of this module unless the
    learning rate is a constant (then every variable keeps it anyway)."""
    inner = optimizer
    while isinstance(inner, keras.optimizers.LossScaleOptimizer):
        inner = inner.inner_optimizer
    if isinstance(inner, FixedLearningRateMixin):
        inner.exclude_from_schedule(variables, learning_rate)
        return
    if isinstance(inner.get_config()["learning_rate"], dict) or learning_rate is not None:
        raise TypeError(
            f"fix_predictor_lr=True with a learning-rate schedule (or a predictor_lr) needs an optimizer from "
            f"tf_simsiam.optim (SGD or LARS); got {type(inner).__name__}. Build one with "
            f"tf_simsiam.optim.simsiam_optimizer(...) or tf_simsiam.optim.SGD(schedule), or pass "
            f"fix_predictor_lr=False.")


class _MomentumOptimizer(FixedLearningRateMixin, keras.optimizers.Optimizer):
    """Momentum buffers, coupled L2 weight decay and Nesterov switch shared by SGD and LARS."""

    def __init__(self, learning_rate, momentum, weight_decay, nesterov, name, **kwargs):
        kwargs.pop("weight_decay", None)  # Keras' own (decoupled) weight decay is never used
        super().__init__(learning_rate=learning_rate, weight_decay=None, name=name, **kwargs)
        self.schedule = learning_rate  # a float or a LearningRateSchedule, as given
        if not 0.0 <= momentum < 1.0:
            raise ValueError(f"momentum must be in [0, 1), got {momentum}")
        if weight_decay < 0:
            raise ValueError(f"weight_decay must be >= 0, got {weight_decay}")
        self.momentum = float(momentum)
        self.l2_weight_decay = float(weight_decay)
        self.nesterov = bool(nesterov)

    def build(self, variables):
        if self.built:
            return
        super().build(variables)
        self.momentum_buffers = self.add_optimizer_variables(variables, "momentum")

    def get_config(self):
        config = super().get_config()
        config.update({"momentum": self.momentum, "weight_decay": self.l2_weight_decay, "nesterov": self.nesterov})
        return config


@keras.saving.register_keras_serializable(package="tf_simsiam")
class SGD(_MomentumOptimizer):
    """Momentum SGD with coupled L2 weight decay (torch.optim.SGD semantics, also its Nesterov form)."""

    def __init__(self, learning_rate=0.05, momentum=0.9, weight_decay=1e-4, nesterov=False, name="sgd", **kwargs):
        super().__init__(learning_rate, momentum, weight_decay, nesterov, name, **kwargs)

    def update_step(self, gradient, variable, learning_rate):
        learning_rate = self._learning_rate_for(variable, learning_rate)
        gradient = tf.cast(gradient, variable.dtype)
        if self.l2_weight_decay:
            gradient = gradient + self.l2_weight_decay * variable
        buffer = self.momentum_buffers[self._get_variable_index(variable)]
        self.assign(buffer, self.momentum * buffer + gradient)
        if self.nesterov:  # torch.optim.SGD(nesterov=True): step along g + momentum * buf
            self.assign_sub(variable, learning_rate * (gradient + self.momentum * buffer))
        else:
            self.assign_sub(variable, learning_rate * buffer)


@keras.saving.register_keras_serializable(package="tf_simsiam")
class LARS(_MomentumOptimizer):
    """LARS with momentum, as in google-research/simclr (LARSOptimizer) and SimSiam's main_lincls.py.

    For each variable w with gradient g:
        g <- g + weight_decay * w                          (not for excluded variables)
        ratio = eta * ||w|| / ||g||  (1 if either norm is 0, or for excluded variables)
        buf <- momentum * buf + lr * ratio * g
        w <- w - buf
    Excluded from weight decay and adaptation: variables of rank <= 1 (BN gamma/beta, biases), as both papers do,
    and any variable passed to `exclude_from_adaptation`.

    Args:
      learning_rate: a float or a schedule.
      momentum: 0.9 in both papers.
      weight_decay: coupled L2 weight decay (SimCLR: 1e-6; SimSiam's linear probe: 0).
      eta: the trust coefficient (1e-3).
      nesterov: Nesterov momentum (off in both papers).
    """

    def __init__(self, learning_rate=0.1, momentum=0.9, weight_decay=0.0, eta=1e-3, nesterov=False,
                 name="lars", **kwargs):
        super().__init__(learning_rate, momentum, weight_decay, nesterov, name, **kwargs)
        if eta <= 0:
            raise ValueError(f"eta must be > 0, got {eta}")
        self.eta = float(eta)

    def exclude_from_adaptation(self, var_list):
        self._excluded_keys = getattr(self, "_excluded_keys", set()) | {self._var_key(v) for v in var_list}

    def _adapted(self, variable):
        return len(variable.shape) > 1 and self._var_key(variable) not in getattr(self, "_excluded_keys", ())

    def update_step(self, gradient, variable, learning_rate):
        learning_rate = self._learning_rate_for(variable, learning_rate)
        gradient = tf.cast(gradient, variable.dtype)
        if self._adapted(variable):
            if self.l2_weight_decay:
                gradient = gradient + self.l2_weight_decay * variable
            w_norm, g_norm = tf.norm(variable), tf.norm(gradient)
            ratio = tf.where((w_norm > 0) & (g_norm > 0), self.eta * w_norm / tf.maximum(g_norm, 1e-12), 1.0)
            learning_rate = learning_rate * ratio
        buffer = self.momentum_buffers[self._get_variable_index(variable)]
        self.assign(buffer, self.momentum * buffer + learning_rate * gradient)
        if self.nesterov:
            self.assign_sub(variable, self.momentum * buffer + learning_rate * gradient)
        else:
            self.assign_sub(variable, buffer)

    def get_config(self):
        return {**super().get_config(), "eta": self.eta}


LR_SCALINGS = ("linear", "sqrt")
OPTIMIZERS = ("sgd", "lars")  # SGD: SimSiam's; LARS: SimCLR's


def scaled_learning_rate(base_lr, batch_size, scaling="linear"):
    """The papers' learning-rate scaling: linear, lr = base_lr * batch_size / 256 (both papers), or SimCLR's
    square-root rule, lr = base_lr * sqrt(batch_size) (0.075 x sqrt(batch) in its Appendix B.1)."""
    if scaling == "linear":
        return base_lr * batch_size / 256.0
    if scaling == "sqrt":
        return base_lr * math.sqrt(batch_size)
    raise ValueError(f"--lr_scaling must be one of {LR_SCALINGS}, got {scaling!r}")


def pretrain_optimizer(name, batch_size, total_steps, base_lr, momentum=0.9, weight_decay=0.0, warmup_steps=0,
                       lr_scaling="linear"):
    """SGD (SimSiam) or LARS (SimCLR) with the scaled learning rate, linear warmup then cosine, per step."""
    schedule = WarmupCosine(scaled_learning_rate(base_lr, batch_size, lr_scaling), total_steps, warmup_steps)
    if name == "sgd":
        return SGD(schedule, momentum=momentum, weight_decay=weight_decay)
    if name == "lars":
        return LARS(schedule, momentum=momentum, weight_decay=weight_decay)
    raise ValueError(f"--optimizer must be one of {OPTIMIZERS}, got {name!r}")


def simsiam_optimizer(batch_size, total_steps, base_lr=0.05, momentum=0.9, weight_decay=1e-4, warmup_steps=0):
    """The SimSiam paper's optimizer: SGD(momentum, coupled wd) with lr = base_lr * batch/256, cosine per step.

    Defaults are the ImageNet recipe (base_lr 0.05, wd 1e-4); the CIFAR recipe uses base_lr 0.03, wd 5e-4.
    """
    return pretrain_optimizer("sgd", batch_size, total_steps, base_lr, momentum, weight_decay, warmup_steps)
