"""Throughput of the SimSiam train step (pairs of views per second) beside its peers, printed as JSON.

ResNet-18 (CIFAR stem, width 64), 2-layer projector 2048, predictor 512, batch 256, 32x32x3. In one invocation,
each configuration in its own process (so that a precision policy, a compiled function or a thread pool of one
does not leak into the next), taken in turn, twice each (the better run is kept; XLA rows once):

- `ours`: the model's own train_step, compiled as `fit` compiles it, called step by step on one batch held in
  memory (the median step gives pairs/s); both views in one pass (the model's default) and as two passes;
- `fit`: the same model through `model.fit` on `tf.data.Dataset.from_tensors(batch).repeat()`, the time from one
  step's end to the next taken by a callback (median step): the step with all that `fit` adds (iterator,
  callbacks, logs);
- `torch`: the PyTorch reference of the same step (benchmarks/torch_reference.py: the official SimSiam builder on
  torchvision's ResNet-18), needs the `bench` extra; left out, with a note, where torch is not installed;
- `matmul`: TensorFlow's (and PyTorch's) 4096 x 4096 matmul, whose rate the step's FLOP rate (FLOPs counted from
  the model, benchmarks/flops.py) is set against.

float32 always; bfloat16 (`mixed_bfloat16`, torch autocast) only where the CPU computes it natively (AVX512-BF16 or
AMX; elsewhere it is emulated and several times slower) or when `--bf16` asks for it.

    python benchmarks/train_step.py [--batch_size 256] [--steps 5] [--warmup 2] [--only ours:fp32:nojit:one]
"""

import argparse
import importlib.util
import json
import os
import subprocess
import sys
import time

import numpy as np

import machine

KINDS = ("ours", "fit", "torch", "matmul")


def parse_only(only):
    """"KIND:PRECISION[:jit|nojit][:one|two]"; a leading precision (the older form) means `ours`."""
    parts = only.split(":")
    if parts[0] in ("fp32", "bf16"):
        parts = ["ours"] + parts
    kind, precision = parts[0], parts[1] if len(parts) > 1 else "fp32"
    jit = len(parts) > 2 and parts[2] == "jit"
    passes = parts[3] if len(parts) > 3 else "one"
    if kind not in KINDS or precision not in ("fp32", "bf16") or passes not in ("one", "two"):
        raise SystemExit(f"--only {only!r}: expected KIND:PRECISION[:jit|nojit][:one|two], KIND one of {KINDS}, "
                         f"PRECISION fp32 or bf16")
    return kind, precision, jit, passes


def _views(batch_size, image_size):
    return np.random.default_rng(0).random((batch_size, 2, image_size, image_size, 3), dtype=np.float32)


def _keras_model(precision, jit, passes, batch_size, width, image_size):
    import keras

    import tf_simsiam
    keras.utils.set_random_seed(0)
    keras.mixed_precision.set_global_policy("mixed_bfloat16" if precision == "bf16" else "float32")
    backbone = tf_simsiam.backbones.resnet18((image_size, image_size, 3), width=width)
    model = tf_simsiam.SimSiam(backbone, proj_dim=2048, pred_dim=512, proj_layers=2)
    model.one_pass = passes == "one"
    model.compile(optimizer=tf_simsiam.optim.simsiam_optimizer(batch_size, 1000, base_lr=0.03, weight_decay=5e-4),
                  jit_compile=jit)
    return model


def _summary(times, warmup, batch_size, flops_per_pair=None):
    seconds = float(np.median(times[warmup:]))
    out = {"pairs_per_sec": round(batch_size / seconds, 2), "sec_per_step_median": round(seconds, 3),
           "sec_per_step": [round(t, 3) for t in times[warmup:]]}
    if flops_per_pair:
        out.update(flops_per_pair=flops_per_pair, gflops_per_sec=round(flops_per_pair * batch_size / seconds / 1e9, 1))
    return out


def measure_ours(precision, jit, passes, batch_size, steps, warmup, width, image_size):
    import tensorflow as tf

    import flops
    model = _keras_model(precision, jit, passes, batch_size, width, image_size)
    views = tf.constant(_views(batch_size, image_size))
    step = tf.function(model.train_step, jit_compile=jit)
    times = []
    for _ in range(warmup + steps):  # the first calls trace, compile and allocate
        start = time.perf_counter()
        float(step(views)["loss"])
        times.append(time.perf_counter() - start)
    return _summary(times, warmup, batch_size, flops.simsiam_step_flops(model))


def measure_fit(precision, jit, passes, batch_size, steps, warmup, width, image_size):
    import keras
    import tensorflow as tf

    import flops
    model = _keras_model(precision, jit, passes, batch_size, width, image_size)
    dataset = tf.data.Dataset.from_tensors(_views(batch_size, image_size)).repeat()
    ends = []

    class StepClock(keras.callbacks.Callback):  # the time from one step's end to the next: all that fit does
        def on_train_begin(self, logs=None):
            ends.append(time.perf_counter())

        def on_train_batch_end(self, batch, logs=None):
            float(logs["loss"])  # what the step computed is ready
            ends.append(time.perf_counter())

    model.fit(dataset, steps_per_epoch=warmup + steps, epochs=1, verbose=0, callbacks=[StepClock()])
    return _summary(list(np.diff(ends)), warmup, batch_size, flops.simsiam_step_flops(model))


def measure_torch(precision, batch_size, steps, warmup, width, image_size):
    import torch

    import torch_reference
    torch.manual_seed(0)
    model = torch_reference.SimSiam(width=width, dim=2048, pred_dim=512, proj_layers=2)
    step = torch_reference.train_step_fn(model, lr=0.03 * batch_size / 256, weight_decay=5e-4,
                                         bf16=precision == "bf16")
    views = torch.from_numpy(_views(batch_size, image_size)).permute(0, 1, 4, 2, 3).contiguous()
    x1, x2 = views[:, 0], views[:, 1]
    times = []
    for _ in range(warmup + steps):
        start = time.perf_counter()
        float(step(x1, x2))
        times.append(time.perf_counter() - start)
    out = _summary(times, warmup, batch_size)  # FLOPs: the parent counts them on our twin (torch and TF in one
    # process crash)
    matmul = torch_reference.matmul_flops_per_sec(dtype="bfloat16" if precision == "bf16" else "float32")
    out.update(torch=torch.__version__, torch_threads=torch.get_num_threads(),
               torch_matmul_gflops_per_sec=round(matmul / 1e9, 1))
    return out


def measure_matmul(precision, n=4096):
    import flops
    dtype = "bfloat16" if precision == "bf16" else "float32"
    return {"n": n, "tf_gflops_per_sec": round(flops.matmul_flops_per_sec(n, dtype) / 1e9, 1)}


def run_one(only, args):
    kind, precision, jit, passes = parse_only(only)
    common = dict(batch_size=args.batch_size, steps=args.steps, warmup=args.warmup, width=args.width,
                  image_size=args.image_size)
    if kind == "ours":
        out = measure_ours(precision, jit, passes, **common)
    elif kind == "fit":
        out = measure_fit(precision, jit, passes, **common)
    elif kind == "torch":
        out = measure_torch(precision, **common)
    else:
        out = measure_matmul(precision)
    return {"config": only, "kind": kind, "precision": precision, "jit_compile": jit, "passes": passes, **out}


def _in_subprocess(config, args):
    out = subprocess.run([sys.executable, __file__, "--only", config] + [
        f"--{k}={v}" for k, v in vars(args).items() if k not in ("only", "bf16", "no_xla")],
        capture_output=True, text=True)
    if out.returncode:
        return {"config": config, "error": out.stderr.strip().splitlines()[-1:]}
    return json.loads(out.stdout.strip().splitlines()[-1])


def _ratio(a, b):
    return round(a / b, 3) if a and b else None


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch_size", type=int, default=256)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--width", type=int, default=64)
    parser.add_argument("--image_size", type=int, default=32)
    parser.add_argument("--bf16", action="store_true", help="also bfloat16 where the CPU only emulates it")
    parser.add_argument("--no_xla", action="store_true", help="leave out the XLA (jit_compile) rows")
    parser.add_argument("--only", help="run one configuration in this process, e.g. ours:bf16:nojit:one")
    args = parser.parse_args()
    if args.only:
        print(json.dumps(run_one(args.only, args)))
        return
    from tf_simsiam import distribute
    native_bf16 = distribute.cpu_has_native_bf16()
    have_torch = importlib.util.find_spec("torch") is not None
    precisions = ["fp32"] + (["bf16"] if native_bf16 or args.bf16 else [])
    runs = {}
    for p in precisions:
        turn = [f"ours:{p}:nojit:one", f"ours:{p}:nojit:two", f"fit:{p}:nojit:one"]
        turn += [f"torch:{p}"] if have_torch else []
        order = turn * 2 + ([] if args.no_xla else [f"ours:{p}:jit:one"]) + [f"matmul:{p}"]
        for config in order:
            run = _in_subprocess(config, args)
            if run.get("pairs_per_sec", 0) >= runs.get(config, {}).get("pairs_per_sec", 0):
                runs[config] = run

    def rate(config, key="pairs_per_sec"):
        return runs.get(config, {}).get(key)

    summary = {}
    for p in precisions:
        ours, torch_peer = rate(f"ours:{p}:nojit:one"), rate(f"torch:{p}")
        flops_per_pair = rate(f"ours:{p}:nojit:one", "flops_per_pair") or 0  # the torch twin has the same layers
        summary[p] = {
            "ours_pairs_per_sec": ours, "fit_pairs_per_sec": rate(f"fit:{p}:nojit:one"), "torch_pairs_per_sec": torch_peer,
            "ours_over_torch": _ratio(ours, torch_peer),
            "ours_over_torch_fp32": _ratio(ours, rate("torch:fp32")),
            "fit_over_step": _ratio(rate(f"fit:{p}:nojit:one"), ours),
            "one_pass_over_two_passes": _ratio(ours, rate(f"ours:{p}:nojit:two")),
            "step_gflops_per_sec": rate(f"ours:{p}:nojit:one", "gflops_per_sec"),
            "matmul_gflops_per_sec": rate(f"matmul:{p}", "tf_gflops_per_sec"),
            "step_over_matmul": _ratio(rate(f"ours:{p}:nojit:one", "gflops_per_sec"),
                                       rate(f"matmul:{p}", "tf_gflops_per_sec")),
            "torch_step_gflops_per_sec": round(torch_peer * flops_per_pair / 1e9, 1) if torch_peer else None,
            "torch_matmul_gflops_per_sec": rate(f"torch:{p}", "torch_matmul_gflops_per_sec"),
        }
    import tensorflow as tf
    print(json.dumps({
        "benchmark": "simsiam_train_step", "model": f"resnet18_cifar_w{args.width}", "batch_size": args.batch_size,
        "image_size": args.image_size, "steps": args.steps, "machine": machine.describe(),
        "native_bf16": native_bf16, "torch": "installed" if have_torch else "not installed (pip install -e .[bench])",
        "intra_op_threads": tf.config.threading.get_intra_op_parallelism_threads() or os.cpu_count(),
        "inter_op_threads": tf.config.threading.get_inter_op_parallelism_threads() or os.cpu_count(),
        "summary": summary, "results": list(runs.values()),
    }, indent=1))


if __name__ == "__main__":
    main()
