"""Reports as files: the evaluation's results.json, markdown table and PNG plots, and the training report
(training.png) of a pretraining run (matplotlib, headless)."""

import json
import os

import numpy as np


def markdown_table(rows):
    lines = ["| method | protocol | labels | top-1 | seconds |", "| --- | --- | --- | --- | --- |"]
    for row in rows:
        protocol = row["protocol"] + _knn_settings(row)
        labels = f"{100 * row['label_fraction']:g}%" if row.get("label_fraction") else "100%"
        lines.append(f"| {row['method']} | {protocol} | {labels} | {100 * row['top1']:.2f}% | {row['seconds']} |")
    return "\n".join(lines) + "\n"


def pca_2d(features):
    """The first two principal components of the rows of features."""
    centred = features - features.mean(0)
    _, _, vt = np.linalg.svd(centred, full_matrices=False)
    return centred @ vt[:2].T


def confusion_matrix(labels, predicted, num_classes):
    matrix = np.zeros((num_classes, num_classes), np.int64)
    np.add.at(matrix, (labels, predicted), 1)
    return matrix


PROTOCOL_NAMES = {"knn": "kNN", "knn_plain": "plain kNN", "linear": "linear probe", "finetune": "fine-tune",
                  "supervised": "supervised"}


def _knn_settings(row):
    """The " (k=200, t=0.1)" of a weighted kNN row, " (k=20)" for a plain one, "" for the other protocols."""
    if not row["protocol"].startswith("knn"):
        return ""
    return f" (k={row['k']}" + (f", t={row['temperature']})" if row.get("temperature") else ")")


def _row_label(row):
    protocol = PROTOCOL_NAMES.get(row["protocol"], row["protocol"]) + _knn_settings(row)
    labels = f", {100 * row['label_fraction']:g}% of labels" if row.get("label_fraction") else ""
    return f"{row['method']}: {protocol}{labels}"


def accuracy_plot(rows, path, config=None):
    """Test top-1 by protocol as a dot plot with value labels: the encoder (blue) beside its baselines (grey),
    grouped by protocol, on an axis that spans the figures (a dot plot needs no zero baseline)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    order = sorted(range(len(rows)), key=lambda i: (rows[i]["protocol"], rows[i].get("label_fraction") or 1,
                                                    rows[i]["top1"]))
    values = [100 * rows[i]["top1"] for i in order]
    fig, ax = plt.subplots(figsize=(8, 0.45 * len(rows) + 1.4))
    for y, (i, value) in enumerate(zip(order, values)):
        baseline = rows[i]["method"] in ("pixels", "random", "scratch")
        colour = "0.55" if baseline else "tab:blue"
        ax.plot([min(values) - 100, value], [y, y], color=colour, lw=0.8, alpha=0.4)
        ax.plot(value, y, "o", color=colour, ms=7)
        ax.annotate(f"{value:.2f}%", (value, y), xytext=(6, 0), textcoords="offset points", va="center",
                    fontsize=8)
    ax.set_yticks(range(len(order)), [_row_label(rows[i]) for i in order], fontsize=8)
    span = max(values) - min(values)
    ax.set_xlim(min(values) - max(2.0, 0.15 * span), min(100.0, max(values) + max(3.0, 0.25 * span)))
    ax.set_xlabel("test top-1 (%)")
    ax.grid(axis="x", alpha=0.3)
    title = "test top-1 by protocol (blue: the pretrained encoder; grey: baselines)"
    if config and config.get("export_dir"):
        title += f"\n{config['export_dir']} on {config.get('dataset', '')}"
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=200)
    plt.close(fig)


def write(output_dir, rows, predictions, embeddings, test_labels, class_names=None, meta=None):
    """Writes results.json, results.md, accuracy.png, confusion.png (best run) and embedding.png."""
    with open(os.path.join(output_dir, "results.json"), "w") as f:
        json.dump({**(meta or {}), "results": rows}, f, indent=1, default=str)
    with open(os.path.join(output_dir, "results.md"), "w") as f:
        f.write(markdown_table(rows))

    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    num_classes = int(test_labels.max()) + 1
    names = list(class_names) if class_names is not None else [str(c) for c in range(num_classes)]

    accuracy_plot(rows, os.path.join(output_dir, "accuracy.png"), (meta or {}).get("config", {}))

    simsiam = {name: p for name, p in predictions.items() if name.startswith("simsiam")}
    if simsiam:
        best = max(simsiam, key=lambda name: np.mean(simsiam[name] == test_labels))
        matrix = confusion_matrix(test_labels, simsiam[best], num_classes)
        fig, ax = plt.subplots(figsize=(6, 5))
        image = ax.imshow(matrix, cmap="Blues")
        ax.set_xticks(range(num_classes), names, rotation=60, fontsize=7)
        ax.set_yticks(range(num_classes), names, fontsize=7)
        ax.set_xlabel("predicted")
        ax.set_ylabel("true")
        ax.set_title(f"confusion matrix: {best}")
        fig.colorbar(image)
        fig.tight_layout()
        fig.savefig(os.path.join(output_dir, "confusion.png"), dpi=200)
        plt.close(fig)

    for method, features in embeddings.items():
        points = pca_2d(features[:5000])
        fig, ax = plt.subplots(figsize=(6, 5))
        for c in range(num_classes):
            mask = test_labels[:5000] == c
            ax.scatter(points[mask, 0], points[mask, 1], s=2, label=names[c])
        ax.legend(markerscale=4, fontsize=6)
        ax.set_title(f"test embeddings of the {method} encoder (PCA)")
        fig.tight_layout()
        fig.savefig(os.path.join(output_dir, "embedding.png"), dpi=200)
        plt.close(fig)


def _read_csv(path):
    """{column: float array} of a CSV file of numbers (blank -> NaN); {} if the file does not exist."""
    if not os.path.exists(path):
        return {}
    with open(path) as f:
        header, *rows = [line.rstrip("\n").split(",") for line in f if line.strip()]
    return {name: np.array([float(row[i]) if row[i] else np.nan for row in rows]) for i, name in enumerate(header)}


TRAINING_PANELS = ("kNN top-1", "z_std", "loss", "learning rate")


def training_figure(history, steps, pixels_top1=None, untrained_top1=None, dim=2048, threshold=None):
    """The training report: kNN top-1 per epoch beside the raw-pixel and untrained-network lines, z_std beside
    1/sqrt(d) (healthy) and the collapse threshold, the loss and the learning rate against the step. history and
    steps are the columns of history.csv and steps.csv (callbacks.EpochHistory, callbacks.StepHistory)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 2, figsize=(10, 7))
    knn_ax, z_ax, loss_ax, lr_ax = axes.ravel()
    epochs, knn = history.get("epoch", np.array([])), history.get("knn_top1", np.array([]))
    seen = ~np.isnan(knn) if len(knn) else np.array([], bool)
    epochs, knn = epochs[seen], knn[seen]
    if untrained_top1 is not None:  # the run starts from the untrained network: its point at epoch 0
        epochs, knn = np.concatenate([[0.0], epochs]), np.concatenate([[untrained_top1], knn])
    knn_ax.plot(epochs, 100 * knn, "o-", color="tab:blue", label="this run")
    knn_ax.set_xlim(left=0)
    for value, name, style in ((pixels_top1, "raw pixels", "--"), (untrained_top1, "untrained network", ":")):
        if value is not None:
            knn_ax.axhline(100 * value, color="0.4", ls=style, label=f"{name} ({100 * value:.2f}%)")
    knn_ax.set_xlabel("epoch")
    knn_ax.set_ylabel("kNN top-1 (%)")
    step = steps.get("step", np.array([]))
    z_ax.plot(step, steps.get("z_std", np.full(len(step), np.nan)), color="tab:blue", label="z_std")
    z_ax.axhline(1 / np.sqrt(dim), color="tab:green", ls="--", label=f"1/sqrt(d) = {1 / np.sqrt(dim):.4f} (healthy)")
    if threshold is not None:
        z_ax.axhline(threshold, color="tab:red", ls=":", label=f"collapse threshold ({threshold:.4f})")
    z_ax.set_ylim(bottom=0)
    loss_ax.plot(step, steps.get("loss", np.full(len(step), np.nan)), color="tab:blue", label="loss")
    lr_ax.plot(step, steps.get("lr", np.full(len(step), np.nan)), color="tab:blue", label="learning rate")
    for ax, title in zip((knn_ax, z_ax, loss_ax, lr_ax), TRAINING_PANELS):
        ax.set_title(title, fontsize=10)
        ax.grid(alpha=0.3)
        if ax is not knn_ax:
            ax.set_xlabel("step")
        ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


def training_report(history_csv, steps_csv, path, **lines):
    """Writes the training report (training_figure) of a run's history.csv and steps.csv to path (PNG)."""
    import matplotlib.pyplot as plt
    fig = training_figure(_read_csv(history_csv), _read_csv(steps_csv), **lines)
    fig.savefig(path, dpi=120)
    plt.close(fig)
