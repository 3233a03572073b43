"""The SimSiam paper's comparison on your data:  python -m tf_simsiam.compare --methods=simsiam,byol --budget=10m

Trains each method of --methods from its recipe (RECIPES: each paper's heads, loss and optimizer) on the same data,
backbone, width, image size, seed and budget (--set gives every run more flags, e.g. dataset=folder:PATH), then
evaluates each the same way: the kNN monitor after every epoch and a linear probe on the frozen encoder at the end.
--budget is wall time for each method's training (10m, 1.5h: --time_budget) or a number of training steps (2000:
--evaluations epochs of steps). An interrupted comparison resumes: a method whose run finished (its result.json
exists) with the same settings is not run again.
Writes into --output_dir: compare.md (method, kNN, linear, wall time, pairs/s, final z_std, and the SimSiam paper's
Table 4 figure for the methods it reports), compare.json, and knn_steps.png and knn_time.png (kNN against training
steps and against wall time, one colour per method).
"""

import csv
import json
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from absl import app, flags  # noqa: E402

from tf_simsiam import run_dir as run_dir_lib  # noqa: E402
from tf_simsiam.run_dir import read_flagfile  # noqa: E402
from tf_simsiam import time_budget  # noqa: E402
from tf_simsiam.models import METHODS  # noqa: E402

# each method's recipe for the comparison: the demo's network and data with the method's own heads and optimizer
RECIPES = {"simsiam": "configs/fashion_mnist.cfg", **{m: f"configs/fashion_mnist_{m}.cfg" for m in METHODS[1:]}}
# the SimSiam paper's Table 4: ImageNet linear top-1 (%) after 100 epochs of pretraining, batch 256 for SimSiam and
# 4096 for SimCLR and BYOL, each with the symmetrised loss
PAPER_TABLE4 = {"simsiam": 68.1, "simclr": 66.5, "mocov2": 67.4, "byol": 66.5}
# what must be the same for every method (from the recipes and --set); the rest (batch, heads, optimizer and
# augmentations: the default recipes share the demo's but for SimCLR's colour distortion) is each method's
SHARED = ("dataset", "backbone", "width", "image_size", "seed", "precision")
DEFAULTS = {"image_size": "0", "seed": "0", "precision": "auto"}
COLOURS = {method: f"C{i}" for i, method in enumerate(METHODS)}

FLAGS = flags.FLAGS


def parse_budget(text, evaluations):
    """The flags a budget sets: a wall time or a number of steps cut into `evaluations` epochs (ValueError naming
    --budget otherwise)."""
    text = str(text).strip()
    if text.isdigit():
        steps = int(text)
        if steps < evaluations:
            raise ValueError(f"--budget={text}: fewer steps than --evaluations={evaluations}")
        return [f"--epochs={evaluations}", f"--steps_per_epoch={steps // evaluations}", "--time_budget="]
    try:
        time_budget.parse(text, flag="budget")
    except ValueError as error:
        raise ValueError(f"{error} (or a number of training steps)") from None
    return [f"--time_budget={text}"]


def recipes(methods, overrides):
    """{method: recipe path}, refusing an unknown method or a missing recipe by name."""
    chosen = dict(RECIPES)
    for item in overrides:
        method, _, path = item.partition("=")
        if method not in METHODS or not path:
            raise ValueError(f"--recipe={item}: expected method=path.cfg with a method of {', '.join(METHODS)}")
        chosen[method] = path
    for method in methods:
        if method not in METHODS:
            raise ValueError(f"--methods: unknown method {method!r}; choose from {', '.join(METHODS)}")
        if not os.path.exists(chosen[method]):
            raise ValueError(f"the recipe of {method}, {chosen[method]}, does not exist (--recipe={method}=PATH)")
    return {method: chosen[method] for method in methods}


def settings_of(method, recipe, extra, budget_flags):
    """The flags of a method's run: its recipe, --set, the budget, a kNN after every epoch, the linear probe."""
    settings = {**read_flagfile(recipe, extra), "method": method}
    settings.pop("model_dir", None)
    if budget_flags[0].startswith("--time_budget"):
        settings.pop("epochs", None)
    flags_ = [f"--{k}={v}" for k, v in settings.items() if k not in ("time_budget", "knn_every")]
    return settings, [*flags_, *budget_flags, "--knn_every=1", "--linear_probe"]


def check_shared(settings):
    """Raises ValueError naming the setting the methods' recipes disagree on."""
    for key in SHARED:
        values = {method: s.get(key, DEFAULTS.get(key)) for method, s in settings.items()}
        if len(set(values.values())) > 1:
            raise ValueError(f"the recipes differ in --{key} ({', '.join(f'{m}: {v}' for m, v in values.items())}): "
                             f"a comparison needs one; set it for all with --set={key}=VALUE")


def read_method(run_dir):
    """A finished run's row and its kNN curve (steps, seconds, top-1)."""
    with open(os.path.join(run_dir, "result.json")) as f:
        result = json.load(f)
    curve = []
    with open(os.path.join(run_dir, "history.csv")) as f:
        for row in csv.DictReader(f):
            if row.get("knn_top1"):
                curve.append((int(row["epoch"]) * result["steps_per_epoch"], float(row.get("seconds") or "nan"),
                              float(row["knn_top1"])))
    return result, curve


def table_lines(rows, budget):
    def pct(value):
        return "" if value is None else f"{100 * value:.2f}%"
    lines = [f"Each method trained for {budget} ({'wall time' if not str(budget).isdigit() else 'steps'}) from its "
             f"recipe; kNN (k=200, t=0.1) and a linear probe on the frozen encoder's features, on the same data. "
             f"Paper: the SimSiam paper's Table 4, ImageNet linear top-1 after 100 epochs.", "",
             "| method | steps | kNN top-1 | linear | wall time | pairs/s | final z_std | 1/sqrt(d) | paper |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for r in rows:
        paper = PAPER_TABLE4.get(r["method"])
        lines.append(f"| {r['method']} | {r['steps']} | {pct(r['knn_top1'])} | {pct(r['linear_top1'])} | "
                     f"{r['train_seconds'] / 60:.1f} min | {r['pairs_per_sec'] or ''} | {r['final_z_std']:.4f} | "
                     f"{r['z_std_healthy']:.4f} | {'' if paper is None else f'{paper}%'} |")
    first = rows[0]
    lines += ["", f"Raw pixels under the same kNN: {pct(first['pixels_knn_top1'])}; linear: "
              f"{pct(first['pixels_linear_top1'])}."]
    return lines


def plot(curves, output_dir, pixels=None, subtitle=""):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    for index, (name, label) in enumerate((("knn_steps.png", "training steps"),
                                           ("knn_time.png", "wall time (minutes)"))):
        fig, ax = plt.subplots(figsize=(7, 4))
        for method, curve in curves.items():
            xs = [c[0] if index == 0 else c[1] / 60 for c in curve]
            ax.plot(xs, [100 * c[2] for c in curve], marker="o", ms=3, color=COLOURS[method], label=method)
        if pixels is not None:
            ax.axhline(100 * pixels, color="k", ls="--", lw=1, label="raw pixels")
        ax.set_xlabel(label)
        ax.set_ylabel("kNN top-1 (%)")
        ax.set_title(subtitle, fontsize=8)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, frameon=False)
        fig.tight_layout()
        fig.savefig(os.path.join(output_dir, name), dpi=150)
        plt.close(fig)


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
    try:
        methods = list(dict.fromkeys(FLAGS.methods))
        paths = recipes(methods, FLAGS.recipe)
        budget_flags = parse_budget(FLAGS.budget, FLAGS.evaluations)
        runs = {m: settings_of(m, paths[m], FLAGS.set, budget_flags) for m in methods}
        check_shared({m: settings for m, (settings, _) in runs.items()})
    except ValueError as error:
        sys.exit(f"error: {error}")
    os.makedirs(FLAGS.output_dir, exist_ok=True)
    rows, curves = [], {}
    for method in methods:
        run_dir = os.path.join(FLAGS.output_dir, method)
        status = run_dir_lib.train_once(run_dir, runs[method][1], what=f"{method} run")
        result, curve = read_method(run_dir)
        rows.append({"method": method, "recipe": paths[method], "run_dir": run_dir, "status": status,
                     "steps": result["epochs"] * result["steps_per_epoch"], "knn_curve": curve,
                     **{k: result.get(k) for k in ("knn_top1", "linear_top1", "train_seconds", "pairs_per_sec",
                                                   "final_z_std", "z_std_healthy", "pixels_knn_top1",
                                                   "pixels_linear_top1", "batch_size")},
                     "paper_table4": PAPER_TABLE4.get(method)})
        curves[method] = curve
    lines = table_lines(rows, FLAGS.budget)
    with open(os.path.join(FLAGS.output_dir, "compare.md"), "w") as f:
        f.write("\n".join(lines) + "\n")
    with open(os.path.join(FLAGS.output_dir, "compare.json"), "w") as f:
        json.dump({"budget": FLAGS.budget, "set": FLAGS.set, "methods": rows}, f, indent=1)
    shared = runs[methods[0]][0]
    plot(curves, FLAGS.output_dir, rows[0]["pixels_knn_top1"],
         f"{shared.get('dataset')}, {shared.get('backbone')} width {shared.get('width')}, budget {FLAGS.budget}, "
         f"seed {shared.get('seed', 0)}")
    print("\n".join(lines))
    print(f"table, plots and JSON in {FLAGS.output_dir}/")


def define_flags():
    """The command's flags, defined when it runs (not on import, so that its functions can be imported beside the
    other tools')."""
    flags.DEFINE_list("methods", list(METHODS), f"The methods to compare, of {', '.join(METHODS)}.")
    flags.DEFINE_string("budget", "10m", "Each method's training budget: wall time (e.g. 90s, 10m, 1.5h; the step "
                        "rate is measured and the schedule fitted, as --time_budget) or a number of training steps.")
    flags.DEFINE_integer("evaluations", 5, "With a budget in steps: the epochs it is cut into, a kNN evaluation "
                         "after each.", lower_bound=1)
    flags.DEFINE_list("set", [], "Extra flags for every method's run, e.g. "
                      "dataset=folder:/data/images,image_size=32.")
    flags.DEFINE_list("recipe", [], "Another recipe for a method, as method=path.cfg (default: "
                      + ", ".join(f"{m}={p}" for m, p in RECIPES.items()) + ").")
    flags.DEFINE_string("output_dir", "runs/compare", "Runs, table, plots and JSON go here.")

def run():
    define_flags()
    app.run(main)


if __name__ == "__main__":
    run()
