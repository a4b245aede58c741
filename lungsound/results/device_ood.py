"""Leave-one-stethoscope-out table: how an experiment does on a device it never heard, beside how it does in-distribution.

One row per held-out device D, from the MLflow runs of one experiment file trained with `data.split=device_out=D`
(lungsound.data.splits): Sp, Se, Score and per-class accuracy on D's test cycles (mean ± population std over seeds, as
`lungsound compare`). Beside it, the in-distribution Score: the same experiment trained on the official split (all four
devices), scored on D's cycles of the official test side (the `final_test_score_<D>` metric of those runs), which are
exactly the cycles the fold tests on, and the difference OOD - ID. LittC2SE has no official test cycle, so it has no
in-distribution figure (its fold tests on recordings the official model trained on). The last row is the official
split over all devices. `make icbhi-device-ood DATA=... EXP=...` trains the five runs and prints this table.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from lungsound.config import DataConfig
from lungsound.data.formats import FORMATS
from lungsound.results.compare import METRICS, collect_runs, summarise
from lungsound.data.labels import CLASSES
from lungsound.data.splits import DEVICE_OUT
from lungsound.errors import LungsoundError
from lungsound.storage import atomic_write, atomic_write_json, atomic_write_text


def _pick(rows: list[dict], split: str, notes: list[str]) -> dict | None:
    """The row of `split` (the one with most seeds, then the newest config, when overrides made several)."""
    found = [r for r in rows if r["_config"].get("data.split", "official") == split]
    if len(found) > 1:
        notes.append(f"{split}: {len(found)} groups of runs with other overrides; the one with most seeds is used")
    return max(found, key=lambda r: r["seeds"]) if found else None


def device_ood_rows(experiment_file: str, protocol: str | None = None,
                    mlflow_experiments: list[str] | None = None, notes: list[str] | None = None) -> list[dict]:
    """Rows (held-out device, its fold's scores, the in-distribution Score on the same cycles) from the store."""
    notes = notes if notes is not None else []
    runs = [r for r in collect_runs(mlflow_experiments) if r["experiment"] == experiment_file
            and (protocol is None or r["protocol"] == protocol)]
    if not runs:
        raise LungsoundError(f"no finished runs of experiment file {experiment_file!r}"
                             + (f" with protocol {protocol}" if protocol else "") + " in the MLflow store")
    protocols = sorted({r["protocol"] for r in runs})
    if len(protocols) > 1:
        raise LungsoundError(f"runs of {experiment_file!r} use protocols {', '.join(protocols)}; pick one with "
                             "--protocol")
    devices = run_devices(runs, experiment_file)
    found: list[str] = []
    table = summarise(runs, found)
    notes += [n for n in found if "different data sets" not in n]  # every split is its own data set here, by design
    official = _pick(table, "official", notes)
    rows = []
    for device in devices:
        fold = _pick(table, f"{DEVICE_OUT}{device}", notes)
        row = {"held_out": device, "seeds": fold["seeds"] if fold else 0}
        for k in METRICS:
            row[k] = (fold[f"{k}_mean"], fold[f"{k}_std"]) if fold else (float("nan"), float("nan"))
        key = f"score_{device}"
        row["id_score"] = ((official.get(f"{key}_mean", np.nan), official.get(f"{key}_std", np.nan)) if official
                           else (np.nan, np.nan))
        row["id_seeds"] = official["seeds"] if official else 0
        row["delta"] = row["score"][0] - row["id_score"][0]
        rows.append(row)
        if fold is None:
            notes.append(f"no finished runs with data.split={DEVICE_OUT}{device}")
    if official is None:
        notes.append("no finished runs on the official split: no in-distribution figures")
    else:
        rows.append({"held_out": "none (official split)", "seeds": official["seeds"],
                     **{k: (official[f"{k}_mean"], official[f"{k}_std"]) for k in METRICS},
                     "id_score": (np.nan, np.nan), "id_seeds": 0, "delta": np.nan})
    for row in rows[:len(devices)]:
        if official is not None and np.isnan(row["id_score"][0]):
            notes.append(f"{row['held_out']}: no official test cycle, so no in-distribution figure (its fold tests on "
                         "recordings the official model trained on)")
    return rows


def run_devices(runs: list[dict], experiment_file: str) -> tuple[str, ...]:
    """The device vocabulary of the runs' data format (`data.format`, ICBHI for runs logged before it existed): one row
    per device it declares, whether or not its fold has runs."""
    names = sorted({r["config"].get("data.format", DataConfig.format) for r in runs})
    if len(names) > 1:
        raise LungsoundError(f"runs of {experiment_file!r} read data of formats {', '.join(names)}; a leave-one-"
                             "stethoscope-out table compares one corpus's devices")
    return tuple(FORMATS.get(names[0]).devices)


def _plain(value):
    """JSON-ready: (mean, std) pairs as {"mean", "std"}, NaN as None."""
    if isinstance(value, tuple):
        return {"mean": _plain(value[0]), "std": _plain(value[1])}
    if isinstance(value, float):
        return None if np.isnan(value) else value
    return value


def _cell(pair: tuple[float, float]) -> str:
    mean, std = pair
    return "n/a" if np.isnan(mean) else f"{mean:.2f} ± {std:.2f}"


def to_markdown(rows: list[dict], experiment_file: str, notes: list[str]) -> str:
    head = ["held-out device", "seeds", "Sp", "Se", "Score", *[f"acc {c}" for c in CLASSES],
            "in-distribution Score", "OOD - ID"]
    lines = [f"Leave-one-stethoscope-out: {experiment_file}", "", "| " + " | ".join(head) + " |",
             "|" + "---|" * len(head)]
    for r in rows:
        cells = [r["held_out"], str(r["seeds"]), *[_cell(r[k]) for k in METRICS], _cell(r["id_score"]),
                 "n/a" if np.isnan(r["delta"]) else f"{r['delta']:+.2f}"]
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", "Scores in %, mean ± population std over seeds. In-distribution: the official-split model of the same "
              "experiment on the held-out device's official test cycles (the same cycles the fold tests on)."]
    if notes:
        lines += ["", "Notes:"] + [f"- {n}" for n in notes]
    return "\n".join(lines)


def plot(rows: list[dict], path: Path, title: str) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    folds = [r for r in rows if not r["held_out"].startswith("none ")]
    x = np.arange(len(folds))
    fig, ax = plt.subplots(figsize=(7, 4))
    ax.bar(x - 0.2, [r["score"][0] for r in folds], 0.4, yerr=[r["score"][1] for r in folds], capsize=3,
           color="#e6550d", label="held out (OOD)")
    ax.bar(x + 0.2, [r["id_score"][0] for r in folds], 0.4, yerr=[r["id_score"][1] for r in folds], capsize=3,
           color="#3182bd", label="in distribution (official split)")
    ax.set_xticks(x, [r["held_out"] for r in folds])
    ax.set(ylabel="ICBHI Score on the device's test cycles (%)", ylim=(0, 100), title=title)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120, format="png")
    plt.close(fig)
    return path


def device_ood(experiment_file: str, out: str | Path | None = None, protocol: str | None = None,
               mlflow_experiments: list[str] | None = None) -> str:
    """The table as Markdown; with `out`, also `device_ood.md`, `device_ood.json` and `device_ood.png` there."""
    notes: list[str] = []
    rows = device_ood_rows(experiment_file, protocol, mlflow_experiments, notes)
    md = to_markdown(rows, experiment_file, notes)
    if out is not None:
        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        atomic_write_text(out / "device_ood.md", md + "\n")
        atomic_write_json(out / "device_ood.json", [{k: _plain(v) for k, v in r.items()} for r in rows])
        with atomic_write(out / "device_ood.png") as tmp:
            plot(rows, tmp, f"Leave-one-stethoscope-out: {experiment_file}")
        md += f"\n\n(written to {out}/device_ood.md, .json and .png)"
    return md
