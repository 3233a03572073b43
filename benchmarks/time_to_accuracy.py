"""Time to accuracy, side by side: kNN top-1 against wall time of ours and of the PyTorch reference, printed as JSON.

Both train the SimSiam paper's CIFAR recipe on Fashion-MNIST (60,000 images, 28x28x1) for the same wall-clock
budget on this machine, one after the other: ResNet-18 with the CIFAR stem at `--width`, 2-layer projector 2048,
predictor 512 with its learning rate fixed, SGD with momentum 0.9 and weight decay 5e-4, lr 0.03 x batch / 256 on
a cosine over `--epochs` (the paper: 800), crops of 0.2-1 of the image, float32, batch `--batch_size`. Both are
evaluated every `--eval_every` steps (default: an epoch) with the same kNN (cosine, k=200, temperature 0.1,
weighted votes, the training images as memory, the test images as queries), the untrained network first; the
time of each point runs from the start of the process that trains (imports and data loading included), and the
kNN evaluations count against the budget of both. Ours is `python -m tf_simsiam.train` with those flags; the
reference is the official main_simsiam.py loop on torchvision (benchmarks/torch_reference.py, the `bench` extra).

    python benchmarks/time_to_accuracy.py --budget=40m [--width=16] [--batch_size=256] [--eval_every=0]

Printed: both curves, the reference's final kNN and the time ours took to reach it, and that time as a fraction
of the reference's.
"""

import argparse
import datetime
import json
import os
import re
import subprocess
import sys
import tempfile
import time

import machine

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
LOG_LINE = re.compile(r"^I(\d{4}) (\d\d):(\d\d):(\d\d\.\d+) .*?(?:epoch (\d+): kNN top-1 ([\d.]+)%|kNN top-1 of the "
                      r"untrained backbone: ([\d.]+)%)")


def parse_seconds(value):
    units = {"s": 1, "m": 60, "h": 3600}
    return float(value[:-1]) * units[value[-1]] if value[-1] in units else float(value)


def _log_time(month_day, hours, minutes, seconds):
    now = datetime.datetime.now()
    moment = datetime.datetime(now.year, int(month_day[:2]), int(month_day[2:]), int(hours), int(minutes))
    return moment.timestamp() + float(seconds)


def ours(args, budget):
    """Our CLI for the budget (stopped at its end): [(seconds, step, kNN top-1), ...] from its log."""
    steps_per_epoch = args.eval_every or 60000 // args.batch_size
    epochs = args.epochs * (60000 // args.batch_size) // steps_per_epoch  # the cosine spans --epochs of the data
    model_dir = tempfile.mkdtemp(prefix="tf_simsiam_tta_")
    cmd = [sys.executable, "-m", "tf_simsiam.train", f"--model_dir={model_dir}", "--dataset=fashion_mnist",
           "--backbone=resnet18", f"--width={args.width}", "--proj_dim=2048", "--pred_dim=512", "--proj_layers=2",
           "--fix_pred_lr", "--augment=simsiam_cifar", "--crop_min_scale=0.2", f"--batch_size={args.batch_size}",
           f"--epochs={epochs}", f"--steps_per_epoch={steps_per_epoch}", "--base_lr=0.03", "--weight_decay=5e-4",
           "--momentum=0.9", "--precision=float32", "--knn_every=1", f"--seed={args.seed}",
           f"--knn_train_size={args.knn_train_size}", f"--knn_test_size={args.knn_test_size}"]
    launched = time.time()
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    points = []
    try:
        proc.communicate(timeout=budget)
    except subprocess.TimeoutExpired:
        proc.kill()
    _, log = proc.communicate()
    for line in log.splitlines():
        match = LOG_LINE.match(line)
        if match:
            month_day, hours, minutes, seconds, epoch, top1, untrained = match.groups()
            step = int(epoch) * steps_per_epoch if epoch else 0
            points.append((round(_log_time(month_day, hours, minutes, seconds) - launched, 1), step,
                           float(top1 or untrained) / 100))
    if not points:
        raise SystemExit(f"our run logged no kNN evaluation within the budget:\n{log[-3000:]}")
    return {"points": points, "model_dir": model_dir, "command": " ".join(cmd[1:])}


def reference(args, budget):
    kwargs = {"budget": budget, "launched_at": time.time(), "width": args.width, "batch_size": args.batch_size,
              "epochs": args.epochs, "eval_every": args.eval_every, "knn_train_size": args.knn_train_size,
              "knn_test_size": args.knn_test_size, "seed": args.seed}
    out = subprocess.run([sys.executable, os.path.join(HERE, "torch_reference.py"), "time_to_accuracy",
                          json.dumps(kwargs)], capture_output=True, text=True)
    if out.returncode:
        raise SystemExit(f"the PyTorch reference failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def first_time_at(points, top1):
    return next((seconds for seconds, _, value in points if value >= top1), None)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--budget", default="40m", help="wall time of each side, e.g. 40m, 600s, 1h")
    parser.add_argument("--width", type=int, default=16)
    parser.add_argument("--batch_size", type=int, default=256)
    parser.add_argument("--epochs", type=int, default=800, help="the cosine schedule's length (the paper: 800)")
    parser.add_argument("--eval_every", type=int, default=0, help="steps between kNN evaluations; 0: an epoch")
    parser.add_argument("--knn_train_size", type=int, default=0, help="0: all 60,000 training images")
    parser.add_argument("--knn_test_size", type=int, default=0, help="0: all 10,000 test images")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    budget = parse_seconds(args.budget)
    peer = reference(args, budget)
    mine = ours(args, budget)
    final = peer["points"][-1]
    reached = first_time_at(mine["points"], final[2])
    print(json.dumps({
        "benchmark": "time_to_accuracy", "machine": machine.describe(), "budget_seconds": budget,
        "recipe": {"width": args.width, "batch_size": args.batch_size, "epochs": args.epochs, "base_lr": 0.03,
                   "weight_decay": 5e-4, "crop_scale": [0.2, 1.0], "precision": "float32"},
        "ours": mine, "reference": peer,
        "reference_final_knn_top1": final[2], "reference_final_seconds": final[0],
        "ours_seconds_to_reference_final": reached,
        "ours_time_over_reference_time": round(reached / final[0], 3) if reached else None,
        "ours_final_knn_top1": mine["points"][-1][2],
    }, indent=1))


if __name__ == "__main__":
    main()
