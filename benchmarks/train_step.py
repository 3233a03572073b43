"""Throughput of the SimSiam train step (pairs of views per second), printed as JSON.

ResNet-18 (CIFAR stem, width 64), 2-layer projector 2048, predictor 512, batch 256, 32x32x3, for fp32 and
mixed_bfloat16, with and without XLA (jit_compile), both views in one pass (the model's default, BN statistics per
view) and, for comparison, as two passes. The model's own train_step, compiled as `fit` compiles it, is timed step
by step on one batch held in memory; the median step gives pairs/s. Each configuration runs in its own process, so
that the precision policy and the compiled functions of one do not leak into the next; the one- and two-pass runs
of a precision alternate, twice each, and the better of each pair is kept.

    python benchmarks/train_step.py [--batch_size 256] [--steps 5] [--warmup 2] [--only fp32:nojit:one]
"""

import argparse
import json
import os
import subprocess
import sys
import time

import machine

def measure(precision, jit, passes, batch_size, steps, warmup, width, image_size):
    import keras
    import numpy as np
    import tensorflow as tf

    import tf_simsiam

    keras.utils.set_random_seed(0)
    keras.mixed_precision.set_global_policy("mixed_bfloat16" if precision == "bf16" else "float32")
    backbone = tf_simsiam.backbones.resnet18((image_size, image_size, 3), width=width)
    model = tf_simsiam.SimSiam(backbone, proj_dim=2048, pred_dim=512, proj_layers=2)
    model.one_pass = passes == "one"
    model.compile(optimizer=tf_simsiam.optim.simsiam_optimizer(batch_size, 1000, base_lr=0.03, weight_decay=5e-4),
                  jit_compile=jit)
    views = tf.constant(np.random.default_rng(0).random((batch_size, 2, image_size, image_size, 3),
                                                        dtype=np.float32))
    step = tf.function(model.train_step, jit_compile=jit)
    times = []
    for i in range(warmup + steps):  # the first calls trace, compile and allocate
        start = time.perf_counter()
        float(step(views)["loss"])
        times.append(time.perf_counter() - start)
    seconds = float(np.median(times[warmup:]))
    return {"precision": precision, "jit_compile": jit, "passes": passes, "pairs_per_sec": round(batch_size / seconds, 2),
            "sec_per_step_median": round(seconds, 3), "sec_per_step": [round(t, 3) for t in times[warmup:]]}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch_size", type=int, default=256)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--width", type=int, default=64)
    parser.add_argument("--image_size", type=int, default=32)
    parser.add_argument("--only", help="run one configuration in this process, e.g. bf16:jit")
    args = parser.parse_args()
    if args.only:
        precision, jit, passes = (args.only.split(":") + ["one"])[:3]
        print(json.dumps(measure(precision, jit == "jit", passes, args.batch_size, args.steps, args.warmup,
                                 args.width, args.image_size)))
        return
    runs = {}
    order = ["fp32:nojit:one", "fp32:nojit:two"] * 2 + ["fp32:jit:one"] + \
        ["bf16:nojit:one", "bf16:nojit:two"] * 2 + ["bf16:jit:one"]
    for config in order:
        out = subprocess.run([sys.executable, __file__, "--only", config] + [
            f"--{k}={v}" for k, v in vars(args).items() if k != "only"], capture_output=True, text=True)
        if out.returncode:
            run = {"config": config, "error": out.stderr.strip().splitlines()[-1:]}
        else:
            run = json.loads(out.stdout.strip().splitlines()[-1])
        if run.get("pairs_per_sec", 0) >= runs.get(config, {}).get("pairs_per_sec", 0):
            runs[config] = run
    results = list(runs.values())
    import tensorflow as tf
    best = {p: max((r.get("pairs_per_sec", 0) for r in results if r.get("precision") == p), default=0)
            for p in ("fp32", "bf16")}
    one_pass_speedup = {p: round(runs[f"{p}:nojit:one"]["pairs_per_sec"] / runs[f"{p}:nojit:two"]["pairs_per_sec"], 3)
                        for p in ("fp32", "bf16") if "pairs_per_sec" in runs[f"{p}:nojit:one"]
                        and "pairs_per_sec" in runs[f"{p}:nojit:two"]}
    print(json.dumps({
        "benchmark": "simsiam_train_step", "model": f"resnet18_cifar_w{args.width}", "batch_size": args.batch_size,
        "image_size": args.image_size, "steps": args.steps, "machine": machine.describe(),
        "intra_op_threads": tf.config.threading.get_intra_op_parallelism_threads() or os.cpu_count(),
        "inter_op_threads": tf.config.threading.get_inter_op_parallelism_threads() or os.cpu_count(),
        "results": results, "best_pairs_per_sec": best, "one_pass_over_two_passes": one_pass_speedup,
    }, indent=1))


if __name__ == "__main__":
    main()
