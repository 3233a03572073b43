"""The evaluation report: results.json, a markdown table and PNG plots (matplotlib, headless)."""

import json
import os

import numpy as np


def markdown_table(rows):
    lines = ["| method | protocol | labels | top-1 | seconds |", "| --- | --- | --- | --- | --- |"]
    for row in rows:
        protocol = row["protocol"]
        if protocol.startswith("knn"):
            protocol += f" (k={row['k']}" + (f", t={row['temperature']})" if row["temperature"] else ")")
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

    labels = [f"{r['method']}\n{r['protocol']}" + (f" {100 * r['label_fraction']:g}%" if r.get("label_fraction")
                                                   else "") for r in rows]
    fig, ax = plt.subplots(figsize=(max(6, 0.9 * len(rows)), 4))
    colours = ["tab:blue" if r["method"] == "simsiam" else "tab:gray" for r in rows]
    ax.bar(range(len(rows)), [100 * r["top1"] for r in rows], color=colours)
    ax.set_xticks(range(len(rows)), labels, fontsize=7)
    ax.set_ylabel("test top-1 (%)")
    ax.set_ylim(0, 100)
    ax.set_title("accuracy by protocol (blue: SimSiam encoder; grey: baselines)")
    fig.tight_layout()
    fig.savefig(os.path.join(output_dir, "accuracy.png"), dpi=120)
    plt.close(fig)

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
        fig.savefig(os.path.join(output_dir, "confusion.png"), dpi=120)
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
        fig.savefig(os.path.join(output_dir, "embedding.png"), dpi=120)
        plt.close(fig)
