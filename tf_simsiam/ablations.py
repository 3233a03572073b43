"""Reproduce the SimSiam paper's ablations:  python -m tf_simsiam.ablations --suite=all

Each variant is one run of `python -m tf_simsiam.train` from one recipe (configs/ablations.cfg: the paper's
augmentations, a model small enough for thousands of steps on a CPU) with the same seed and budget, changed only
where the ablation says; the batch-size variants see as many images per epoch as the base recipe (the paper's
Table 2 compares equal epochs). Each suite has its own budget (BUDGETS: the stop-gradient suite trains four times
longer than the others) unless --budget sets one for all; the runs of one budget share a folder,
<output_dir>/epochs-<budget>.
A suite that was interrupted resumes: finished variants (their result.json exists) are not run again, and a variant
shared by several suites of one budget runs once.
With --seeds=0,1,2 each variant runs once per seed and its row gives the mean, the kNN's range and how many seeds
collapsed, failed or worked.
Writes into --output_dir: ablations.md (a table per suite, with the paper's figures and verdicts, and z PC1, the
share of z's variance along one direction, measured from each run's last checkpoint), ablations.json (the per-epoch
figures) and PNG plots of z_std (the paper's Fig. 2, left), loss, kNN accuracy and the backbone's
feature_std per epoch.
"""

import csv
import json
import math
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from absl import app, flags  # noqa: E402

from tf_simsiam import run_dir as run_dir_lib  # noqa: E402
from tf_simsiam.run_dir import read_flagfile  # noqa: E402

# The paper's figures are ImageNet linear top-1 (%, 100 epochs), from its Fig. 2 and Tables 1-5, with the
# outcome the paper reports for the variant: works, collapse, fails (no collapse, no learning) or unstable.
# Fig. 2's "w/ stop-grad" (67.7) and Table 1's baseline decay the predictor's lr; the recipe keeps it fixed, as the
# official code's --fix-pred-lr and the paper's later tables: Table 1(c), 68.1, is the paper's figure for that run.
BASELINE = ("baseline (predictor lr fixed)", {}, 68.1, "works")
SUITES = {
    "stopgrad": [BASELINE, ("no stop-gradient", {"stop_gradient": False}, 0.1, "collapse")],
    "predictor": [BASELINE,
                  ("no predictor", {"predictor": "none"}, 0.1, "collapse"),
                  # "does not work either ... this failure is not about collapsing. The training does not
                  # converge, and the loss remains high" (the paper, Sec. 4.2)
                  ("fixed random predictor", {"predictor": "fixed_random"}, 1.5, "fails"),
                  ("predictor lr decayed", {"fix_pred_lr": False}, 67.7, "works")],
    "batch": [(f"batch {b}", {"batch_size": b}, paper, "works")
              for b, paper in ((64, 66.1), (128, 67.3), (256, 68.1), (512, 68.1))],
    "bn": [("no BN", {"proj_bn": "none", "pred_bn": "none", "proj_bn_affine": False}, 34.6, "works"),
           ("BN on hidden layers", {"proj_bn": "hidden", "pred_bn": "hidden", "proj_bn_affine": False}, 67.4,
            "works"),
           ("BN on hidden + projector output (paper)", {}, 68.1, "works"),
           ("BN everywhere, incl. predictor output", {"pred_bn": "all"}, None, "unstable")],
    "similarity": [("cosine", {}, 68.1, "works"), ("cross-entropy", {"similarity": "cross_entropy"}, 63.2, "works")],
    "symmetry": [("symmetric", {}, 68.1, "works"), ("asymmetric", {"symmetric": False}, 64.8, "works")],
}
ORDER = ("stopgrad", "predictor", "batch", "bn", "similarity", "symmetry")
# Each suite's default budget, in epochs of the recipe (100 steps). Without stop-gradient, 2,000 steps collapse the
# heads at every seed but took the kNN to chance at one seed in five (bfloat16); 8,000 collapse the backbone at every
# seed tried and take the kNN to chance at most (two seeds of three in float32, four of four in bfloat16).
# Without a predictor, no budget we tried makes the collapse certain (docs/ablations.md: in float32, 2,000, 4,000
# and 8,000 steps each collapse four seeds of five; in bfloat16, 8,000 did four of five), so that suite keeps the
# 2,000 of the suites that compare working variants.
BUDGETS = {"stopgrad": 80, "predictor": 20, "batch": 20, "bn": 20, "similarity": 20, "symmetry": 20}
# collapsed: final z_std < 0.25 / sqrt(d) (the heads), or z PC1 > 0.9 (z on one line: without the projector BN's
# shift, a collapse of the heads may keep z_std near 1/sqrt(d)), or the backbone's feature_std < 0.25 of the untrained
# network's (the backbone: without that shift, z_std cannot fall below 2 sqrt(B-1)/B / sqrt(d), 0.25 at batch 64, and
# a collapse may show there instead), or kNN within 10 points of chance
COLLAPSE_FRACTION = 0.25
Z_PC1_COLLAPSE = 0.9  # set after the float32 runs of docs/ablations.md, then tested on seeds 5-7 before adopting it
FAIL_MARGIN = 0.10  # failed without collapse: kNN less than 10 points above the untrained network's,
CONVERGED_LOSS = -0.5  # or the cosine loss ends above -0.5 (the paper's "does not converge, the loss remains high")
Z_PC1_BATCHES = 8  # z PC1: the share of z's variance along its first principal direction, on 8 training batches

flags.DEFINE_enum("suite", "stopgrad", list(ORDER) + ["all"], "Which ablations to run.")
flags.DEFINE_integer("budget", None, "Training epochs of each variant, in epochs of the base recipe "
                     "(configs/ablations.cfg: 100 steps of 128 images); default: each suite's own, "
                     + ", ".join(f"{s} {b}" for s, b in BUDGETS.items()) + ".", lower_bound=1)
flags.DEFINE_string("flagfile_base", "configs/ablations.cfg", "The recipe every variant starts from.")
flags.DEFINE_list("set", [], "Extra flags for every variant, e.g. width=8,steps_per_epoch=50 (a smaller budget).")
flags.DEFINE_list("seeds", [], "Run every variant with each of these seeds (default: the recipe's own); with several, "
                  "the table gives each variant's mean kNN with its range and how many seeds collapsed, failed or "
                  "worked.")
flags.DEFINE_string("output_dir", "runs/ablations", "Runs, table, plots and JSON go here.")
FLAGS = flags.FLAGS


def _text(value):
    return str(value).lower() if isinstance(value, bool) else str(value)


def resolve(overrides, base):
    """The flags a variant changes against the base settings: a batch size other than the base's keeps the
    images per epoch (steps_per_epoch scaled), and a flag equal to the base's is no change (so that, e.g., the
    base's own batch size is the baseline run)."""
    overrides = dict(overrides)
    batch, steps = int(base.get("batch_size", 512)), int(base.get("steps_per_epoch", 0))
    if "batch_size" in overrides and steps:
        overrides["steps_per_epoch"] = max(1, steps * batch // overrides["batch_size"])
    return {k: v for k, v in overrides.items() if _text(v) != base.get(k)}


def variant_key(overrides):
    """One run per distinct setting: the baseline of several suites runs once."""
    return "default" if not overrides else "_".join(f"{k}-{v}" for k, v in sorted(overrides.items()))


def run_variant(run_dir, overrides, budget, base, extra):
    """Trains a variant into run_dir, unless it finished there before with the same settings (the base recipe's
    own settings included: a finished run of another recipe or budget is an error, not a result)."""
    settings = [f"--{k}={v}" for k, v in read_flagfile(base, extra).items()]
    settings += [f"--epochs={budget}", "--knn_every=1", *[f"--{k}={_text(v)}" for k, v in overrides.items()]]
    return run_dir_lib.train_once(run_dir, settings, what="variant")


def read_run(run_dir):
    with open(os.path.join(run_dir, "result.json")) as f:
        result = json.load(f)
    epochs = {"loss": [], "z_std": [], "knn_top1": [], "feature_std": []}
    with open(os.path.join(run_dir, "history.csv")) as f:
        for row in csv.DictReader(f):
            for key in epochs:
                epochs[key].append(float(row[key]) if row.get(key) else None)
    with open(os.path.join(run_dir, "config.json")) as f:
        config = json.load(f)
    return result, epochs, config


def z_pc1_of(run_dir, epoch):
    """losses.first_component_share of the run's z after its last epoch (pretrain.z_first_component_share),
    measured once and kept in run_dir/z_pc1.json; None when the run's checkpoints are gone."""
    path = os.path.join(run_dir, "z_pc1.json")
    if os.path.exists(path):
        with open(path) as f:
            kept = json.load(f)
        if kept["epoch"] == epoch and kept["batches"] == Z_PC1_BATCHES:
            return kept["z_pc1"]
    import keras  # TensorFlow: imported only when a run is measured
    from tf_simsiam import pretrain
    try:
        share, measured = pretrain.z_first_component_share(run_dir, batches=Z_PC1_BATCHES)
    except FileNotFoundError as error:
        print(f"warning: no z PC1 for {run_dir}: {error}", file=sys.stderr)
        return None
    finally:
        keras.backend.clear_session()  # one model per run: free it before the next
    with open(path, "w") as f:
        json.dump({"z_pc1": share, "epoch": measured, "batches": Z_PC1_BATCHES}, f)
    return share


def _last(values):
    values = [v for v in values if v is not None]
    return values[-1] if values else None


def verdict(z_std, knn, proj_dim, classes=10, untrained_knn=None, feature_std=None, untrained_feature_std=None,
            final_loss=None, z_pc1=None):
    """("collapse", why) when z_std, z PC1, the backbone's feature_std or the kNN says so; ("fails", why) when
    the run did not collapse but its cosine loss stayed high (final_loss, None for another similarity) or its kNN did
    not rise clearly above the untrained network's (nothing learned, or worse); else ("works", "")."""
    signals = []
    if z_std is not None and z_std < COLLAPSE_FRACTION / math.sqrt(proj_dim):
        signals.append("z_std")
    if z_pc1 is not None and z_pc1 > Z_PC1_COLLAPSE:
        signals.append("z PC1")
    if feature_std is not None and untrained_feature_std and feature_std < COLLAPSE_FRACTION * untrained_feature_std:
        signals.append("feature_std")
    if knn is not None and knn < 1 / classes + 0.1:
        signals.append("kNN")
    if signals:
        return "collapse", " and ".join(signals)
    if final_loss is not None and final_loss > CONVERGED_LOSS:
        signals.append("loss stays high")
    if knn is not None and untrained_knn is not None and knn < untrained_knn + FAIL_MARGIN:
        signals.append("kNN " + ("under" if knn <= untrained_knn - FAIL_MARGIN else "near")
                       + " the untrained network's")
    return ("fails", " and ".join(signals)) if signals else ("works", "")


def held(suite, rows):
    """Whether the paper's claim for a suite held at our budget: each variant collapsed or not as in the paper,
    and, where the paper ranks variants, its best variant is our best."""
    claims = [r["outcome"] == r["paper_outcome"] for r in rows
              if r["paper_outcome"] in ("works", "collapse", "fails")]
    if suite in ("bn", "similarity", "symmetry"):
        ranked = [r for r in rows if r["paper"] is not None and r["knn"] is not None]
        best = max(ranked, key=lambda r: r["paper"])["variant"]
        claims.append(best == max(ranked, key=lambda r: r["knn"])["variant"])
    return "yes" if all(claims) else "no"


def seed_runs(overrides, seeds, base_seed, extra):
    """(seed, folder name, extra flags) of a variant's run per seed. The recipe's own seed keeps the variant's
    folder, so a single-seed suite and the first of several seeds share their runs; another seed is one more
    `--set` item and part of the folder's name."""
    for seed in seeds:
        if seed == base_seed:
            yield seed, variant_key(overrides), list(extra)
        else:
            yield seed, variant_key({**overrides, "seed": seed}), [*extra, f"seed={seed}"]


def parse_seeds(values, extra, base):
    """The seeds of --seeds as integers (default: the recipe's own), refusing a second way to set the seed."""
    if values and any(item.partition("=")[0] == "seed" for item in extra):
        sys.exit("error: --seeds and --set=seed=... both set the seed; use --seeds")
    try:
        seeds = [int(v) for v in values]
    except ValueError:
        sys.exit(f"error: --seeds={','.join(values)}: each seed must be an integer")
    return list(dict.fromkeys(seeds)) or [int(base.get("seed", 0))]


def summarize(runs):
    """A variant's row from its runs (one per seed): the mean of each figure, the kNN's range, and an outcome that
    is the runs' common outcome, or "mixed" when the seeds disagree (which never counts as the paper's)."""
    def mean(key):
        values = [r[key] for r in runs]
        return None if any(v is None for v in values) else sum(values) / len(values)

    row = {key: mean(key) for key in ("knn", "z_std", "z_pc1", "feature_std", "final_loss", "pixels_knn",
                                      "untrained_knn", "untrained_feature_std")}
    knns = [r["knn"] for r in runs if r["knn"] is not None]
    outcomes = [r["outcome"] for r in runs]
    row.update(steps=runs[0]["steps"], train_seconds=sum(r["train_seconds"] for r in runs),
               status=", ".join(dict.fromkeys(r["status"] for r in runs)),
               knn_range=[min(knns), max(knns)] if knns else None,
               outcome=outcomes[0] if len(set(outcomes)) == 1 else "mixed", seeds=runs)
    if len(runs) == 1:
        row["why"] = runs[0]["why"]
        row["ours"] = row["outcome"] + (f" ({row['why']})" if row["why"] else "")
        return row
    counts = {o: outcomes.count(o) for o in dict.fromkeys(outcomes)}
    row["why"] = ", ".join(f"{o} {n}/{len(runs)}" for o, n in counts.items())
    signals = [signal for r in runs for signal in r["why"].split(" and ") if r["outcome"] == "collapse"]
    detail = ", ".join(f"{s} {signals.count(s)}" for s in ("z_std", "z PC1", "feature_std", "kNN") if s in signals)
    row["ours"] = row["why"] if row["outcome"] == "mixed" else f"{row['outcome']} {len(runs)}/{len(runs)}"
    if detail:
        row["ours"] += f" (by {detail})"
    return row


def _references(table):
    """The kNN of raw pixels and of the untrained network (the same for every variant of one seed and data)."""
    by_seed = {}
    for _, suite_rows, _ in table:
        for run in (run for r in suite_rows for run in r["seeds"]):
            by_seed.setdefault(run["seed"], set()).add(
                (run["pixels_knn"], run["untrained_knn"], run["untrained_feature_std"]))
    if not by_seed or any(len(v) != 1 or None in next(iter(v)) for v in by_seed.values()):
        return ""
    pixels, untrained, untrained_std = zip(*(next(iter(by_seed[seed])) for seed in by_seed))
    text = f" Same kNN on raw pixels: {', '.join(f'{100 * v:.2f}%' for v in pixels)}; on the untrained network: " \
           f"{', '.join(f'{100 * v:.2f}%' for v in untrained)} (its feature_std: " \
           f"{', '.join(f'{v:.4f}' for v in untrained_std)})"
    return text + (f" for seeds {', '.join(map(str, by_seed))}." if len(by_seed) > 1 else ".")


# one colour per variant, the same in every plot and every suite (the baseline is in several)
VARIANTS = list(dict.fromkeys(title for suite in ORDER for title, _, _, _ in SUITES[suite]))
PLOTS = (("z_std", "std of l2-normalised z (z_std)", "zstd.png"), ("loss", "training loss", "loss.png"),
         ("knn_top1", "kNN top-1 (%)", "knn.png"),
         ("feature_std", "std of l2-normalised backbone features", "feature_std.png"))


def variant_colour(title):
    base = title.split(", ")[0]  # "title, N epochs" when the plot holds several budgets
    return f"C{VARIANTS.index(base) % 10}" if base in VARIANTS else "0.4"


def plot(curves, output_dir, proj_dim, steps_per_epoch=100, refs=None, subtitle=""):
    """One PNG per figure, x in training steps; a variant keeps its colour in every plot and its seeds share it.
    refs: the same kNN on raw pixels and on the untrained network, and the untrained network's feature_std,
    drawn as reference lines."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    refs = refs or {}
    for key, label, name in PLOTS:
        fig, ax = plt.subplots(figsize=(7.5, 4))
        for title, runs in curves.items():
            for j, epochs in enumerate(runs):
                values = [None if v is None else (100 * v if key == "knn_top1" else v) for v in epochs[key]]
                steps = [steps_per_epoch * (i + 1) for i in range(len(values))]
                if any(v is not None for v in values):
                    ax.plot(steps, values, marker="o" if len(runs) == 1 and len(values) <= 30 else None, ms=3,
                            color=variant_colour(title), lw=1.5 if len(runs) == 1 else 1,
                            alpha=1 if len(runs) == 1 else 0.7, label=None if j else title)
        if key == "z_std":
            ax.axhline(1 / math.sqrt(proj_dim), color="k", ls="--", lw=1, label=f"1/sqrt(d), d={proj_dim}")
            ax.axhline(COLLAPSE_FRACTION / math.sqrt(proj_dim), color="k", ls=":", lw=1,
                       label="collapse threshold")
            ax.set_ylim(bottom=0)  # collapse is a fall towards 0, as on the paper's axis
        elif key == "knn_top1":
            ax.axhline(10, color="0.5", ls=":", lw=1, label="chance (10 classes)")
            if refs.get("pixels_knn") is not None:
                ax.axhline(100 * refs["pixels_knn"], color="k", ls="--", lw=1, label="raw pixels")
            if refs.get("untrained_knn") is not None:
                ax.axhline(100 * refs["untrained_knn"], color="k", ls="-.", lw=1, label="untrained network")
            ax.set_ylim(0, 100)
        elif key == "feature_std":
            if refs.get("untrained_feature_std") is not None:
                ax.axhline(refs["untrained_feature_std"], color="k", ls="-.", lw=1, label="untrained network")
            ax.set_ylim(bottom=0)
        ax.set_xlabel("training steps")
        ax.set_ylabel(label)
        ax.set_title(subtitle, fontsize=8)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
        fig.tight_layout()
        fig.savefig(os.path.join(output_dir, name), dpi=200)
        plt.close(fig)


def budget_of(suite):
    return FLAGS.budget or BUDGETS[suite]


def run_dir_of(budget, key):
    return os.path.join(FLAGS.output_dir, f"epochs-{budget}", key)


def train_and_read(overrides, seeds, base_seed, budget):
    """Runs (or finds) a variant's run of each seed; returns its per-seed records and per-epoch curves."""
    runs, curves = [], []
    for seed, key, extra in seed_runs(overrides, seeds, base_seed, FLAGS.set):
        run_dir = run_dir_of(budget, key)
        status = run_variant(run_dir, overrides, budget, FLAGS.flagfile_base, extra)
        result, epochs, config = read_run(run_dir)
        proj_dim, feature_std = config["proj_dim"], _last(epochs["feature_std"])
        cosine = config.get("method", "simsiam") == "simsiam" and config.get("similarity", "cosine") == "cosine"
        z_pc1 = z_pc1_of(run_dir, result["epochs"])
        outcome, why = verdict(result["final_z_std"], result["knn_top1"], proj_dim,
                               untrained_knn=result.get("untrained_knn_top1"), feature_std=feature_std,
                               untrained_feature_std=result.get("untrained_feature_std"),
                               final_loss=result["final_loss"] if cosine else None, z_pc1=z_pc1)
        runs.append({"seed": seed, "run_dir": run_dir, "status": status, "knn": result["knn_top1"],
                     "z_std": result["final_z_std"], "z_pc1": z_pc1, "feature_std": feature_std, "outcome": outcome,
                     "why": why,
                     "steps": result["epochs"] * result["steps_per_epoch"], "final_loss": result["final_loss"],
                     "train_seconds": result["train_seconds"], "pixels_knn": result.get("pixels_knn_top1"),
                     "untrained_knn": result.get("untrained_knn_top1"),
                     "untrained_feature_std": result.get("untrained_feature_std"), "proj_dim": proj_dim})
        curves.append(epochs)
    return runs, curves


def table_lines(table, seeds, proj_dim):
    several = len(seeds) > 1
    lines = [f"Each variant trains from `{FLAGS.flagfile_base}`"
             + (f" with `--{' --'.join(FLAGS.set)}`" if FLAGS.set else "")
             + (f"; seeds {', '.join(map(str, seeds))}: each figure is the mean over the seeds, the kNN's range in "
                f"brackets, and the verdict counts the seeds (mixed: they disagree)" if several else "")
             + f"; collapsed: final z_std < {COLLAPSE_FRACTION}/sqrt(d) = {COLLAPSE_FRACTION / math.sqrt(proj_dim):.4f}"
             f", or z PC1 > {Z_PC1_COLLAPSE}, or final feature_std < {COLLAPSE_FRACTION} of the untrained network's, "
             f"or kNN within 10 points of chance; failed: not collapsed, cosine loss above {CONVERGED_LOSS} or kNN "
             f"less than 10 points above the untrained network's. Paper: ImageNet linear top-1 (%). z PC1: the share "
             f"of the l2-normalised z's variance along its first principal direction at the end (1: z lies on one "
             f"line, a dimensional collapse). feature_std: z_std's statistic on the backbone's features of the kNN "
             f"test images (0: every image maps to one direction)."
             + _references(table), ""]
    for suite, rows, claim in table:
        lines += [f"### {suite} ({budget_of(suite)} epochs; the paper's claim held: {claim})", "",
                  "| variant | steps | final loss | kNN top-1 | final z_std | z PC1 | feature_std | ours | paper "
                  "| paper's outcome |",
                  "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
        for r in rows:
            knn = f"{100 * r['knn']:.2f}%" if r["knn"] is not None else ""
            if several and r["knn_range"]:
                knn += f" ({100 * r['knn_range'][0]:.2f}-{100 * r['knn_range'][1]:.2f})"
            paper = f"{r['paper']}" if r["paper"] is not None else "n/a"
            feature_std = f"{r['feature_std']:.4f}" if r["feature_std"] is not None else ""
            z_pc1 = f"{r['z_pc1']:.2f}" if r["z_pc1"] is not None else ""
            lines.append(f"| {r['variant']} | {r['steps']} | {r['final_loss']:.3f} | {knn} | {r['z_std']:.4f} "
                         f"| {z_pc1} | {feature_std} | {r['ours']} | {paper} | {r['paper_outcome']} |")
        lines.append("")
    return lines


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
    if not os.path.exists(FLAGS.flagfile_base):
        sys.exit(f"error: --flagfile_base={FLAGS.flagfile_base} does not exist")
    requested = ORDER if FLAGS.suite == "all" else (FLAGS.suite,)
    base = read_flagfile(FLAGS.flagfile_base, FLAGS.set)
    seeds, base_seed = parse_seeds(FLAGS.seeds, FLAGS.set, base), int(base.get("seed", 0))
    os.makedirs(FLAGS.output_dir, exist_ok=True)

    def finished(suite):
        return all(os.path.exists(os.path.join(run_dir_of(budget_of(suite), key), "result.json"))
                   for _, o, _, _ in SUITES[suite] for _, key, _ in seed_runs(resolve(o, base), seeds, base_seed, []))

    # the report covers the suites asked for and those finished earlier in the same output folder
    suites = [suite for suite in ORDER if suite in requested or finished(suite)]
    table, raw, curves, plotted = [], {}, {}, set()
    # the collapse curves (Fig. 2), each run once (the baseline is in several suites); a title names its budget when
    # the plotted suites have several
    figure = [suite for suite in suites if suite in ("stopgrad", "predictor") or len(suites) == 1]
    several_budgets = len({budget_of(suite) for suite in figure}) > 1
    for suite in suites:
        rows = []
        for title, overrides, paper, outcome in SUITES[suite]:
            overrides = resolve(overrides, base)
            runs, epochs = train_and_read(overrides, seeds, base_seed, budget_of(suite))
            rows.append({"suite": suite, "variant": title, "overrides": overrides, "paper": paper,
                         "paper_outcome": outcome, **summarize(runs)})
            for run, run_epochs in zip(runs, epochs):
                name = f"{suite}: {title}" + (f" (seed {run['seed']})" if len(seeds) > 1 else "")
                raw[name] = {"run_dir": run["run_dir"], **run_epochs}
            if suite in figure and runs[0]["run_dir"] not in plotted:
                curves[title + (f", {budget_of(suite)} epochs" if several_budgets else "")] = epochs
                plotted.update(run["run_dir"] for run in runs)
        table.append((suite, rows, held(suite, rows)))
    proj_dim = table[0][1][0]["seeds"][0]["proj_dim"]
    with open(os.path.join(FLAGS.output_dir, "ablations.json"), "w") as f:
        json.dump({"budget_epochs": {suite: budget_of(suite) for suite in suites}, "base": FLAGS.flagfile_base,
                   "set": FLAGS.set, "seeds": seeds,
                   "collapse_rule": f"z_std < {COLLAPSE_FRACTION}/sqrt(d) or z PC1 > {Z_PC1_COLLAPSE} or feature_std < "
                                    f"{COLLAPSE_FRACTION} x the untrained network's or kNN < chance + 10 points",
                   "fail_rule": f"not collapsed, cosine loss > {CONVERGED_LOSS} or kNN < the untrained network's + "
                                f"10 points",
                   "rows": [r for _, rows, _ in table for r in rows], "per_epoch": raw}, f, indent=1)
    lines = table_lines(table, seeds, proj_dim)
    with open(os.path.join(FLAGS.output_dir, "ablations.md"), "w") as f:
        f.write("\n".join(lines))
    first = table[0][1][0]["seeds"][0]
    refs = {k: first.get(k) for k in ("pixels_knn", "untrained_knn", "untrained_feature_std")}
    steps_per_epoch = int(base.get("steps_per_epoch", 100))
    budgets = " and ".join(str(b * steps_per_epoch) for b in sorted({budget_of(suite) for suite in figure}))
    subtitle = (f"{FLAGS.flagfile_base}, {budgets} steps of batch {base.get('batch_size', '?')}, "
                f"{base.get('precision', 'auto')}, seed{'s' if len(seeds) > 1 else ''} {','.join(map(str, seeds))}")
    plot(curves, FLAGS.output_dir, proj_dim, steps_per_epoch, refs, subtitle)
    print("\n".join(lines))
    print(f"table, plots and JSON in {FLAGS.output_dir}/")


def run():
    app.run(main)


if __name__ == "__main__":
    run()
