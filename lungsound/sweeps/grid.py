"""Augmentation grids: experiment files x augmentation cells x seeds, a front of the sweep engine, and the grid table.

The RepAugment ablation of [REPAUG] (Kim et al., EMBC 2024; docs/methods.md section 9) is the grid
backbone x {none, SpecAugment (spectrogram models only), Rep-Mask, Rep-Gen, RepAugment}: each cell is the backbone's
experiment file with the cell's `augment.*` overrides (`lungsound.sweeps.plan.AUGMENTATIONS`), trained over the seeds
as one multi-seed MLflow group named `<experiment file>-<cell>` (`-weighted` added when its CE is class-weighted).
`plan` and `run_grid` are `lungsound.sweeps.sweep`'s with those cells on the local backend, so `lungsound grid` makes
the runs, names and tags `lungsound sweep --cells ...` makes, and a cell whose group already finished with the same
seeds and config is kept by either (`lungsound.sweeps.groups`): a grid that was interrupted continues where it
stopped.

Class weighting is a second axis (`weightings`: unweighted, weighted): the paper does not state it and the authors'
trainer leaves it off (`--weighted_loss` is off by default and none of their scripts passes it), so the experiment files
are unweighted and a user can run both. `lungsound sweep --cells ... --grid method.class_weighted=false,true` gives the
same cells under the same names.

The table pivots the finished runs of the grid's MLflow experiment: one row per backbone, protocol and weighting, one
column per cell, mean +- std of the Score over distinct seeds; a second table gives the per-class accuracies, since the
paper's claim is about the minority classes (crackle, wheeze, both); the picture shows both. The published number sits
beside its row; a backbone the paper has no row for is marked an extension (`lungsound.results.published.EXTENSIONS`).
The table stays with the grid, not in `lungsound.results`: its columns are the grid's own cells (the sweeps import
`lungsound.results`, so a results module reading the cells would close a circle).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from lungsound.data.labels import CLASSES
from lungsound.errors import LungsoundError
from lungsound.results.compare import collect_runs, summarise
from lungsound.results.published import extension_for, published_for
from lungsound.storage import atomic_write, atomic_write_text
from lungsound.sweeps import plan as planning
from lungsound.sweeps.groups import Group
from lungsound.sweeps.plan import AUGMENTATIONS, WEIGHTINGS, Cell, cell_name
from lungsound.sweeps.sweep import run_sweep

__all__ = ["AUGMENTATIONS", "LABELS", "WEIGHTINGS", "Cell", "cell_name", "grid_table", "plan", "plot", "run_grid",
           "to_markdown", "write_grid"]

LABELS = {"none": "none", "specaugment": "SpecAugment", "rep_mask": "Rep-Mask", "rep_gen": "Rep-Gen",
          "repaugment": "RepAugment"}
MINORITY = [c for c in CLASSES if c != "normal"]


def plan(experiments: list[str | Path], augmentations: list[str] | None = None,
         overrides: list[str] | tuple[str, ...] = (), weightings: list[str] | None = None) -> list[Cell]:
    """The cells of the grid: each file x weighting (`weightings` from WEIGHTINGS; None = the file's own
    method.class_weighted) x augmentation (None = all of AUGMENTATIONS); SpecAugment is left out for waveform models
    (it masks spectrograms). The sweep's plan with those cells and no grid axis."""
    return planning.plan(experiments, (), overrides, list(augmentations or AUGMENTATIONS), weightings)


def run_grid(cells: list[Cell], seeds: list[int], progress: bool = True) -> list[Group]:
    """Train every cell not finished yet as a multi-seed group, one run after another here (the sweep engine, local
    backend); returns every cell's group (`Group.status`: kept, resumed or new)."""
    return run_sweep(cells, seeds, "local", progress=progress)


def _cell_of(config: dict) -> str:
    if str(config.get("augment.specaug")).lower() == "true":
        return "specaugment" if config.get("augment.representation", "none") == "none" else "specaugment+rep"
    return config.get("augment.representation", "none")


def _weighted(config: dict) -> bool:
    return str(config.get("method.class_weighted", "false")).lower() == "true"


def grid_table(tracking_experiment: str) -> tuple[list[dict], list[str]]:
    """One row per (experiment file, protocol, model, weighting) with each cell's numbers, and `compare`'s notes."""
    notes: list[str] = []
    rows: dict[tuple, dict] = {}
    for r in summarise(collect_runs([tracking_experiment]), notes):
        base = r["experiment"]
        key = (base, r["protocol"], r["_config"].get("model.name", "?"), _weighted(r["_config"]))
        row = rows.setdefault(key, {"experiment": base, "protocol": r["protocol"], "model": key[2],
                                    "weighted": key[3], "cells": {}})
        row["cells"][_cell_of(r["_config"])] = r
    return sorted(rows.values(), key=lambda row: (row["experiment"], row["protocol"], row["weighted"])), notes


def _backbone(row: dict) -> str:
    """`model (experiment file[, weighted CE][, extension])`: the row's label in the tables."""
    marks = [row["experiment"]] + (["weighted CE"] if row.get("weighted") else []) + \
        (["extension"] if extension_for(row["experiment"]) else [])
    return f"{row['model']} ({', '.join(marks)})"


def _published_cell(experiment: str) -> str:
    pub, extension = published_for(experiment), extension_for(experiment)
    return f"{pub['score']:.2f}" if pub else ("extension: not in the paper" if extension else "")


def _ms(r: dict, metric: str) -> str:
    mean, std = r[f"{metric}_mean"], r[f"{metric}_std"]
    return "NaN" if np.isnan(mean) else f"{mean:.2f} ± {std:.2f}"


def to_markdown(rows: list[dict], notes: list[str]) -> str:
    cells = [c for c in AUGMENTATIONS if any(c in row["cells"] for row in rows)]
    head = ["backbone (experiment)", "protocol"] + [LABELS[c] for c in cells] + ["published Score"]
    lines = ["Score (mean ± population std, ddof=0, over seeds; n = seeds)", "",
             "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row in rows:
        out = [_backbone(row), row["protocol"]]
        out += [f"{_ms(row['cells'][c], 'score')} (n={row['cells'][c]['seeds']})" if c in row["cells"] else "–"
                for c in cells]
        out.append(_published_cell(row["experiment"]))
        lines.append("| " + " | ".join(out) + " |")
    lines += ["", "Per-class accuracy (mean ± population std over seeds)", "",
              "| backbone | protocol | cell | " + " | ".join(CLASSES) + " | minority mean |", "|" + "---|" * 8]
    for row in rows:
        label = row["model"] + (" (weighted CE)" if row.get("weighted") else "") + \
            (" (extension)" if extension_for(row["experiment"]) else "")
        for c in cells:
            if c in row["cells"]:
                r = row["cells"][c]
                minority = np.mean([r[f"acc_{k}_mean"] for k in MINORITY])
                lines.append(f"| {label} | {row['protocol']} | {LABELS[c]} | "
                             + " | ".join(_ms(r, f"acc_{k}") for k in CLASSES) + f" | {minority:.2f} |")
    if notes:
        lines += ["", "Notes:"] + [f"- {n}" for n in notes]
    return "\n".join(lines)


def plot(rows: list[dict], path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cells = [c for c in AUGMENTATIONS if any(c in row["cells"] for row in rows)]
    x = np.arange(len(rows))
    width = 0.8 / max(1, len(cells))
    fig, axes = plt.subplots(1, 2, figsize=(max(8, 2.6 * len(rows) + 4), 4.4))
    for i, c in enumerate(cells):
        offset = (i - (len(cells) - 1) / 2) * width
        score = [row["cells"][c]["score_mean"] if c in row["cells"] else np.nan for row in rows]
        err = [row["cells"][c]["score_std"] if c in row["cells"] else 0 for row in rows]
        minority = [np.mean([row["cells"][c][f"acc_{k}_mean"] for k in MINORITY]) if c in row["cells"] else np.nan
                    for row in rows]
        axes[0].bar(x + offset, score, width, yerr=err, capsize=2, label=LABELS[c])
        axes[1].bar(x + offset, minority, width, label=LABELS[c])
    pub = [published_for(row["experiment"]) for row in rows]
    if any(pub):  # the published number is the experiment file's own cell: RepAugment
        at = cells.index("repaugment") if "repaugment" in cells else (len(cells) - 1) / 2
        axes[0].scatter(x + (at - (len(cells) - 1) / 2) * width, [p["score"] if p else np.nan for p in pub],
                        marker="_", s=300, color="black", zorder=3, label="published Score (RepAugment)")
    labels = [f"{row['model']}\n({row['protocol']}{', weighted' if row.get('weighted') else ''}"
              f"{', extension' if extension_for(row['experiment']) else ''})" for row in rows]
    for ax, title in zip(axes, ("ICBHI Score (mean ± std over seeds)", "minority classes: mean accuracy")):
        ax.set_xticks(x, labels, fontsize=8)
        ax.set_ylim(0, 100)
        ax.set_title(title, fontsize=10)
        ax.axhline(50, color="grey", lw=0.5, ls="--")
    axes[0].legend(fontsize=7, ncols=2, loc="upper left")
    fig.tight_layout()
    fig.savefig(path, dpi=120, format="png")
    plt.close(fig)
    return path


def write_grid(tracking_experiment: str, out: str | Path | None) -> str:
    """The grid table as Markdown; with `out`, also `grid.md` and `grid.png` there."""
    rows, notes = grid_table(tracking_experiment)
    if not rows:
        raise LungsoundError(f"no finished runs in MLflow experiment {tracking_experiment!r}; run the grid first")
    md = to_markdown(rows, notes)
    if out is not None:
        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        atomic_write_text(out / "grid.md", md + "\n")
        with atomic_write(out / "grid.png") as tmp:
            plot(rows, tmp)
        md += f"\n\n(written to {out}/grid.md and grid.png)"
    return md
