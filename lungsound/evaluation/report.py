"""One evaluation written for a reader: a confusion-matrix picture (counts and row percentages) and per-class /
per-device tables as Markdown and CSV. `lungsound train` writes it for the selected epoch of every run,
`lungsound evaluate` (`lungsound.results.reports`) for a saved model scored again."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from lungsound.data.labels import CLASSES
from lungsound.evaluation.evaluate import Evaluation
from lungsound.storage import atomic_write, atomic_write_text


def plot_confusion(confusion: np.ndarray, path: str | Path, title: str = "", labels=CLASSES) -> Path:
    """Counts and row-normalised percentages; rows are the true class."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    confusion = np.asarray(confusion)
    rows = confusion.sum(axis=1, keepdims=True)
    share = np.divide(confusion, rows, out=np.zeros_like(confusion, dtype=float), where=rows > 0)
    fig, ax = plt.subplots(figsize=(5.2, 4.6))
    ax.imshow(share, cmap="Blues", vmin=0, vmax=1)
    for i in range(len(labels)):
        for j in range(len(labels)):
            ax.text(j, i, f"{confusion[i, j]}\n{100 * share[i, j]:.0f}%", ha="center", va="center",
                    color="white" if share[i, j] > 0.5 else "black", fontsize=9)
    ax.set_xticks(range(len(labels)), labels)
    ax.set_yticks(range(len(labels)), labels)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    path = Path(path)
    with atomic_write(path) as tmp:
        fig.savefig(tmp, dpi=120, format="png")
    plt.close(fig)
    return path


def _write_table(rows: list[dict], stem: Path) -> list[Path]:
    cols = list(rows[0])
    with atomic_write(stem.with_suffix(".csv")) as tmp, open(tmp, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=cols)
        writer.writeheader()
        writer.writerows(rows)
    fmt = lambda v: f"{v:.2f}" if isinstance(v, float) else str(v)  # noqa: E731
    md = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    md += ["| " + " | ".join(fmt(r[c]) for c in cols) + " |" for r in rows]
    atomic_write_text(stem.with_suffix(".md"), "\n".join(md) + "\n")
    return [stem.with_suffix(".csv"), stem.with_suffix(".md")]


def write_run_report(ev: Evaluation, folder: str | Path, title: str = "") -> list[Path]:
    folder = Path(folder)
    s = ev.scores
    paths = [plot_confusion(s["confusion"], folder / "confusion_matrix.png",
                            title=f"{title}\nSp {s['sp']:.2f}  Se {s['se']:.2f}  Score {s['score']:.2f}")]
    counts = s["confusion"].sum(axis=1)
    paths += _write_table([{"class": name, "cycles": int(counts[i]), "accuracy": float(s["per_class_acc"][name])}
                           for i, name in enumerate(CLASSES)], folder / "per_class")
    paths += _write_table([{"device": dev, "cycles": int(d["n"]), "sp": float(d["sp"]), "se": float(d["se"]),
                            "score": float(d["score"])} for dev, d in ev.per_device.items()], folder / "per_device")
    return paths
