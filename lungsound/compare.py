"""`lungsound compare`: one row per experiment and protocol, mean +- std over seeds, from the MLflow store.

Runs counted: finished runs with a `final_test_score` metric (per-seed runs; multi-seed parents are skipped). Rows are
grouped by (MLflow experiment, experiment file, protocol). Writes `comparison.md`, `comparison.csv` and
`comparison.png` (Score with std error bars, the published Score as a marker where one exists).
"""

from __future__ import annotations

import csv
from collections import defaultdict
from pathlib import Path

import numpy as np

from lungsound.data.labels import CLASSES
from lungsound.errors import LungsoundError
from lungsound.published import published_for

METRICS = ["sp", "se", "score"] + [f"acc_{c}" for c in CLASSES]


def collect_runs(experiments: list[str] | None = None) -> list[dict]:
    from lungsound.tracking import client

    mlf = client()
    exps = mlf.search_experiments()
    if experiments:
        known = {e.name for e in exps}
        missing = [e for e in experiments if e not in known]
        if missing:
            raise LungsoundError(f"no MLflow experiment named {', '.join(missing)}; known: {', '.join(sorted(known))}")
        exps = [e for e in exps if e.name in experiments]
    rows = []
    for exp in exps:
        for run in mlf.search_runs([exp.experiment_id], filter_string="attributes.status = 'FINISHED'",
                                   max_results=5000):
            m = run.data.metrics
            if "final_test_score" not in m or run.data.tags.get("role") == "parent":
                continue
            rows.append({"mlflow_experiment": exp.name, "experiment": run.data.tags.get("experiment_file", "?"),
                         "protocol": run.data.tags.get("protocol", "?"), "seed": run.data.tags.get("seed", "?"),
                         **{k: m.get(f"final_test_{k}", float("nan")) for k in METRICS}})
    return rows


def summarise(runs: list[dict]) -> list[dict]:
    groups: dict[tuple, list[dict]] = defaultdict(list)
    for r in runs:
        groups[(r["mlflow_experiment"], r["experiment"], r["protocol"])].append(r)
    table = []
    for (mlexp, name, protocol), rs in sorted(groups.items()):
        row = {"mlflow_experiment": mlexp, "experiment": name, "protocol": protocol, "seeds": len(rs)}
        for k in METRICS:
            values = np.array([r[k] for r in rs], dtype=float)
            row[f"{k}_mean"], row[f"{k}_std"] = float(np.nanmean(values)), float(np.nanstd(values))
        pub = published_for(name)
        row["published_score"] = pub["score"] if pub else float("nan")
        table.append(row)
    return table


def to_markdown(table: list[dict], published: bool = False) -> str:
    head = ["experiment", "protocol", "seeds", "Sp", "Se", "Score"] + [f"acc {c}" for c in CLASSES]
    if published:
        head.append("published Score")
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in table:
        cells = [r["experiment"], r["protocol"], str(r["seeds"])]
        cells += [f"{r[f'{k}_mean']:.2f} ± {r[f'{k}_std']:.2f}" for k in METRICS]
        if published:
            cells.append("" if np.isnan(r["published_score"]) else f"{r['published_score']:.2f}")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def plot(table: list[dict], path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = [f"{r['experiment']}\n({r['protocol']})" for r in table]
    x = np.arange(len(table))
    fig, ax = plt.subplots(figsize=(max(5, 1.5 * len(table) + 2), 4.2))
    for offset, key, color in ((-0.25, "sp", "#9ecae1"), (0.0, "se", "#fdae6b"), (0.25, "score", "#3182bd")):
        ax.bar(x + offset, [r[f"{key}_mean"] for r in table], 0.25, yerr=[r[f"{key}_std"] for r in table],
               capsize=3, label={"sp": "Sp", "se": "Se", "score": "Score"}[key], color=color)
    pub = [r["published_score"] for r in table]
    if not all(np.isnan(pub)):
        ax.scatter(x + 0.25, pub, marker="_", s=400, color="black", zorder=3, label="published Score")
    ax.set_xticks(x, labels, fontsize=8)
    ax.set_ylabel("% (mean ± std over seeds)")
    ax.set_ylim(0, 100)
    ax.axhline(50, color="grey", lw=0.5, ls="--")
    ax.legend(fontsize=8, ncols=4, loc="upper center")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def compare(experiments: list[str] | None = None, out: str | Path | None = None, published: bool = False) -> str:
    table = summarise(collect_runs(experiments))
    if not table:
        raise LungsoundError("no finished runs with final metrics in the MLflow store; train something first "
                             "(e.g. make quickstart)")
    md = to_markdown(table, published)
    if out is not None:
        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        (out / "comparison.md").write_text(md + "\n")
        with open(out / "comparison.csv", "w", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=list(table[0]))
            writer.writeheader()
            writer.writerows(table)
        plot(table, out / "comparison.png")
        md += f"\n\n(written to {out}/comparison.md, .csv and .png)"
    return md
