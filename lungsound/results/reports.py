"""Human-readable results of an evaluation: a confusion-matrix picture and per-class / per-device tables; and
`lungsound evaluate` (`evaluate_checkpoint`): a saved model scored again on a test split, with that report."""

from __future__ import annotations

import csv
import tempfile
from pathlib import Path

import numpy as np
import torch

from lungsound.data.database import open_database
from lungsound.data.dataset import CycleDataset
from lungsound.data.default import resolve_root
from lungsound.data.labels import CLASSES
from lungsound.evaluation.evaluate import Evaluation, evaluate
from lungsound.evaluation.metrics import format_scores
from lungsound.models.build import input_configs
from lungsound.models.folder import load_model
from lungsound.storage import atomic_write, atomic_write_text
from lungsound.tracking import download_artifacts


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


def evaluate_checkpoint(checkpoint=None, run_id: str | None = None, root=None, split: str | None = None,
                        out=None) -> dict:
    """`lungsound evaluate`: load a model folder or an MLflow run's model and score it on a test split."""
    with tempfile.TemporaryDirectory() as tmp:
        if run_id is not None:
            checkpoint = download_artifacts(run_id, "model", tmp)
        device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        model, cfg, meta = load_model(checkpoint, device=device)
    db = open_database(resolve_root(root if root is not None else cfg.data.root), split=split or cfg.data.split)
    cycle_cfg, fbank_cfg = input_configs(cfg)  # cycles at the model's own sample rate
    dataset = CycleDataset.from_split(db, "test", cycle_cfg=cycle_cfg, fbank_cfg=fbank_cfg)
    ev = evaluate(model, dataset, device, cfg.train.eval_batch_size, progress=True)
    if out is not None:
        write_run_report(ev, Path(out), title=f"{cfg.name} on {db.root} (test split)")
    lines = [f"{cfg.name} ({meta.get('protocol', cfg.train.protocol)} protocol, epoch {meta.get('selected_epoch')}) "
             f"on {db.root}, {db.split_name} test split, {len(dataset)} cycles",
             "4-class:   " + format_scores(ev.scores), "two-class: " + format_scores(ev.scores_2class)]
    lines += [f"  {dev:<9} " + format_scores(s) for dev, s in ev.per_device.items()]
    return {"text": "\n".join(lines), "metrics": ev.metrics("test"), "n": len(dataset), "root": str(db.root)}
