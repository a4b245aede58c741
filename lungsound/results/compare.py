"""`lungsound compare`: one row per comparable group of runs, mean +- std over distinct seeds, from the MLflow store.

Runs counted: finished runs with a `final_test_score` metric (per-seed runs; multi-seed parents are skipped).
Runs are comparable, and share a row, when they agree on the MLflow experiment, the experiment file, the protocol, the
whole config except what does not change results (seed, run name, output folder, loader workers, threads, device, data
path) and the data fingerprint (the cycles and labels the run trained and was tested on). Within a row each seed counts
once: when a seed was run several times the newest run is used, and a note says so. When one experiment file and protocol
has several rows (other overrides, other data), the row label names what differs. A NaN metric makes the row's mean NaN
and is shown as such. The std is the population std over the row's seeds (ddof=0, dividing by n, as the `_std` metrics
of multi-seed parent runs); every row says how many seeds it uses and the Markdown says which std. Writes
`comparison.md`, `comparison.csv` and `comparison.png` (Score with std error bars, the published Score as a marker where
one exists). With `published`, a second table sets the runs' two-class Se and Score (`final_test_se_2class`,
`final_test_score_2class`) beside the published two-class figures (`lungsound.results.published.PUBLISHED_TWO_CLASS`)
for the rows that have one; a paper that gives only a two-class figure (AST + SAM, docs/methods.md section 14) appears
there and never in the 4-class "published Score" column. `paired=(A, B)` adds a seed-by-seed comparison of two rows
(`lungsound.results.paired`).
"""

from __future__ import annotations

import csv
import hashlib
import json
from collections import defaultdict
from pathlib import Path

import numpy as np

from lungsound.config import DataConfig
from lungsound.data.labels import CLASSES
from lungsound.errors import LungsoundError
from lungsound.results.paired import paired_report
from lungsound.results.published import published_for, two_class_published_for
from lungsound.results.rows import METRICS, TWO_CLASS_METRICS, row_name, seed_order
from lungsound.storage import atomic_write, atomic_write_text
from lungsound.tracking import (DATA_FINGERPRINT_TAG, EXPERIMENT_FILE_TAG, PROTOCOL_TAG, SEED_TAG, client,
                                find_experiments, finished_runs, is_parent)

# Test Score on one stethoscope's cycles, `score_<device>` (NaN where it has none): the devices are those of the data
# the runs used, read from their `final_test_score_<device>` metrics (`device_metrics`).
NOT_DEVICE_SCORES = ("score_2class",)
# Config keys that do not change what a run computes: runs differing only here are the same experiment.
NOT_COMPARED = ("train.seed", "tracking.run_name", "tracking.output_dir", "tracking.experiment", "data.loader_workers",
                "train.threads", "train.device", "data.root", "data.cache", "description")
STD_DDOF = 0  # population std over seeds, as training.seeds.aggregate (the parent runs' `_std` metrics)
STD_KIND = "population (ddof=0)"
STD_NOTE = ("Cells are mean ± std over each row's distinct seeds (n = the seeds column); the std is the population std "
            "(ddof=0, dividing by n), not the sample std (ddof=1).")


def collect_runs(experiments: list[str] | None = None) -> list[dict]:
    mlf = client()
    rows = []
    for exp in find_experiments(mlf, experiments):
        for run in finished_runs(mlf, [exp.experiment_id]):
            m, tags = run.data.metrics, run.data.tags
            if "final_test_score" not in m or is_parent(tags):
                continue
            # runs logged before data.format existed read ICBHI data: the same config as data.format=icbhi
            config = {"data.format": DataConfig.format,
                      **{k: v for k, v in run.data.params.items() if k not in NOT_COMPARED}}
            devices = [k[len("final_test_"):] for k in m if k.startswith("final_test_score_")
                       and k[len("final_test_"):] not in NOT_DEVICE_SCORES]
            rows.append({"mlflow_experiment": exp.name, "experiment": tags.get(EXPERIMENT_FILE_TAG, "?"),
                         "protocol": tags.get(PROTOCOL_TAG, "?"), "seed": tags.get(SEED_TAG, "?"),
                         "data": tags.get(DATA_FINGERPRINT_TAG, "?"), "config": config, "run_id": run.info.run_id,
                         "start_time": run.info.start_time or 0,
                         **{k: m.get(f"final_test_{k}", float("nan"))
                            for k in METRICS + TWO_CLASS_METRICS + sorted(devices)}})
    return rows


def device_metrics(runs: list[dict]) -> list[str]:
    """The `score_<device>` keys of `runs`, sorted: every device any of them has a test Score for."""
    return sorted({k for r in runs for k in r if k.startswith("score_") and k not in NOT_DEVICE_SCORES})


def _config_key(config: dict) -> str:
    return hashlib.sha1(json.dumps(config, sort_keys=True).encode()).hexdigest()[:10]


def _variant_labels(keys: list[tuple], configs: dict[tuple, dict]) -> dict[tuple, str]:
    """For groups sharing (mlflow experiment, file, protocol): a short label of what sets each apart."""
    by_name: dict[tuple, list[tuple]] = defaultdict(list)
    for key in keys:
        by_name[key[:3]].append(key)
    labels = {}
    for siblings in by_name.values():
        if len(siblings) == 1:
            labels[siblings[0]] = ""
            continue
        params = set().union(*(configs[k] for k in siblings))
        differing = sorted(p for p in params if len({configs[k].get(p) for k in siblings}) > 1)
        datas = {k[4] for k in siblings}
        for k in siblings:
            parts = [f"{p}={configs[k].get(p, '-')}" for p in differing[:3]] + (["..."] if len(differing) > 3 else [])
            if len(datas) > 1:
                parts.append(f"data {k[4]}")
            labels[k] = ", ".join(parts)
    return labels


def summarise(runs: list[dict], notes: list[str] | None = None) -> list[dict]:
    """Rows of comparable runs with mean and std over distinct seeds; `notes` collects what the reader should know."""
    notes = notes if notes is not None else []
    groups: dict[tuple, list[dict]] = defaultdict(list)
    configs: dict[tuple, dict] = {}
    for r in runs:
        key = (r["mlflow_experiment"], r["experiment"], r["protocol"], _config_key(r["config"]), r["data"])
        groups[key].append(r)
        configs[key] = r["config"]
    labels = _variant_labels(sorted(groups), configs)
    table = []
    for key, rs in sorted(groups.items()):
        mlexp, name, protocol = key[:3]
        newest: dict[str, dict] = {}
        for r in sorted(rs, key=lambda r: r["start_time"]):
            newest[r["seed"]] = r
        title = f"{name} ({protocol}{', ' + labels[key] if labels[key] else ''})"
        repeated = {s: n for s, n in ((s, sum(r["seed"] == s for r in rs)) for s in newest) if n > 1}
        if repeated:
            notes.append(f"{title}: seed(s) run more than once ("
                         + ", ".join(f"seed {s}: {n} runs" for s, n in sorted(repeated.items()))
                         + "); the newest run of each seed is used")
        chosen = list(newest.values())
        row = {"mlflow_experiment": mlexp, "experiment": name, "protocol": protocol, "variant": labels[key],
               "data": key[4], "seeds": len(chosen), "seed_list": ",".join(sorted(newest, key=seed_order)),
               "std_kind": STD_KIND, "runs": len(rs), "_config": configs[key],
               "_per_seed": {s: {k: r[k] for k in METRICS} for s, r in newest.items()}}
        for k in METRICS:
            values = np.array([r[k] for r in chosen], dtype=float)
            row[f"{k}_mean"], row[f"{k}_std"] = float(np.mean(values)), float(np.std(values, ddof=STD_DDOF))
            if np.isnan(values).any():
                notes.append(f"{title}: {k} is NaN in {int(np.isnan(values).sum())} of {len(values)} seeds")
        for k in TWO_CLASS_METRICS:  # NaN for runs logged without them
            values = np.array([r.get(k, float("nan")) for r in chosen], dtype=float)
            row[f"{k}_mean"], row[f"{k}_std"] = float(np.mean(values)), float(np.std(values, ddof=STD_DDOF))
        for k in device_metrics(chosen):  # kept for lungsound.results.device_ood; a device without test cycles is NaN
            values = np.array([r.get(k, float("nan")) for r in chosen], dtype=float)
            row[f"{k}_mean"], row[f"{k}_std"] = float(np.mean(values)), float(np.std(values, ddof=STD_DDOF))
        pub = published_for(name)
        row["published_score"] = pub["score"] if pub else float("nan")
        row["published_note"] = pub.get("note", "") if pub else ""  # when the published recipe differs from the file's
        two = two_class_published_for(name)  # shown only in the two-class table
        row["published_se_2class"] = two["se"] if two else float("nan")
        row["published_score_2class"] = two["score"] if two else float("nan")
        row["published_2class_only"] = bool(two) and pub is None  # its paper gives no 4-class figure
        table.append(row)
    mixed = defaultdict(set)
    for row in table:
        mixed[(row["mlflow_experiment"], row["experiment"], row["protocol"])].add(row["data"])
    for (mlexp, name, protocol), datas in sorted(mixed.items()):
        if len(datas) > 1:
            notes.append(f"{name} ({protocol}): runs on {len(datas)} different data sets (fingerprints "
                         f"{', '.join(sorted(datas))}) are shown as separate rows, never pooled")
    return table


def _cell(mean: float, std: float) -> str:
    return "NaN" if np.isnan(mean) else f"{mean:.2f} ± {std:.2f}"


def to_markdown(table: list[dict], published: bool = False, notes: list[str] | None = None) -> str:
    head = ["experiment", "protocol", "seeds", "Sp", "Se", "Score"] + [f"acc {c}" for c in CLASSES]
    if published:
        head.append("published Score")
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in table:
        cells = [row_name(r), r["protocol"], str(r["seeds"])]
        cells += [_cell(r[f"{k}_mean"], r[f"{k}_std"]) for k in METRICS]
        if published:
            mark = "*" if r.get("published_note") else ""  # * = not like for like, see the notes
            cells.append("" if np.isnan(r["published_score"]) else f"{r['published_score']:.2f}{mark}")
        lines.append("| " + " | ".join(cells) + " |")
    if published:
        lines += two_class_table(table)
    lines += ["", STD_NOTE]
    notes = list(notes or []) + (published_notes(table) if published else [])
    if notes:
        lines += ["", "Notes:"] + [f"- {n}" for n in notes]
    return "\n".join(lines)


TWO_CLASS_TITLE = ("Two-class evaluation (normal vs abnormal: an abnormal cycle predicted as any abnormal class is a hit; "
                   "Sp as above), for the rows whose paper reports it:")


def two_class_table(table: list[dict]) -> list[str]:
    """The runs' two-class Se and Score beside the published two-class figures, for the rows that have one (no lines
    when none does). A paper that gives only a two-class figure (AST + SAM) is shown here and nowhere else."""
    shown = [r for r in table if not np.isnan(r.get("published_score_2class", float("nan")))]
    if not shown:
        return []
    head = ["experiment", "protocol", "seeds", "Sp", "Se (2-class)", "Score (2-class)", "published 2-class Se",
            "published 2-class Score"]
    lines = ["", TWO_CLASS_TITLE, "", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in shown:
        cells = [row_name(r), r["protocol"], str(r["seeds"]), _cell(r["sp_mean"], r["sp_std"]),
                 _cell(r["se_2class_mean"], r["se_2class_std"]), _cell(r["score_2class_mean"], r["score_2class_std"]),
                 f"{r['published_se_2class']:.2f}", f"{r['published_score_2class']:.2f}"]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def published_notes(table: list[dict]) -> list[str]:
    """One note per shown row whose published number comes from another recipe (`lungsound.results.published`'s `note`),
    and one per row whose paper gives only a two-class figure (what that figure is)."""
    notes = [f"{row_name(r)} ({r['protocol']}): published Score {r['published_score']:.2f}* is {r['published_note']}"
             for r in table if r.get("published_note")]
    for r in table:
        if r.get("published_2class_only"):
            two = two_class_published_for(r["experiment"])
            notes.append(f"{row_name(r)} ({r['protocol']}): no published 4-class Score; the figure of "
                         f"{two['source']} is a two-class one, shown in the two-class table only: {two['note']}")
    return notes


def plot(table: list[dict], path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = [f"{r['experiment']}\n({r['protocol']})" + (f"\n{r['variant']}" if r.get("variant") else "")
              for r in table]
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
    fig.savefig(path, dpi=120, format="png")
    plt.close(fig)
    return path


def compare(experiments: list[str] | None = None, out: str | Path | None = None, published: bool = False, *,
            paired: tuple[str, str] | None = None) -> str:
    """The table as Markdown (written to `out` when given); `paired=(A, B)` appends the paired comparison of two rows."""
    notes: list[str] = []
    table = summarise(collect_runs(experiments), notes)
    if not table:
        raise LungsoundError("no finished runs with final metrics in the MLflow store; train something first "
                             "(e.g. make quickstart)")
    md = to_markdown(table, published, notes)
    pair = None
    if paired is not None:  # before anything is written: an unknown row name leaves the folder as it was
        pair = paired_report(table, *paired)
    if out is not None:
        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        atomic_write_text(out / "comparison.md", md + "\n")
        with atomic_write(out / "comparison.csv") as tmp, open(tmp, "w", newline="") as fh:
            # every row's columns: rows of other data have other devices' scores
            columns = list(dict.fromkeys(k for row in table for k in row if not k.startswith("_")))
            writer = csv.DictWriter(fh, fieldnames=columns, extrasaction="ignore")
            writer.writeheader()
            writer.writerows(table)
        with atomic_write(out / "comparison.png") as tmp:
            plot(table, tmp)
        md += f"\n\n(written to {out}/comparison.md, .csv and .png)"
    if pair is not None:
        md += "\n\n" + pair.markdown
        if out is not None:
            md += f"\n\n(written to {', '.join(str(p) for p in pair.write(out))})"
    return md
