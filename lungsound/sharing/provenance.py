"""Where a model folder came from in MLflow: its run, the run's data fingerprint, and its multi-seed group's scores.

A model card states what meta.json cannot: the data fingerprint the run recorded (tag `data_fingerprint`, a hash of
the split's labels, rows and recordings) and, when the run is one seed of a `--seeds` group (a child of a parent run
with tag `role: parent`), the test scores of every finished seed of that group, so that the card can give
mean +- std over n seeds beside this model's own scores. The group's statistics are computed here exactly as the parent
computes its own (`lungsound.training.seeds.aggregate`: mean and population std, the newest finished run of each seed).

The run is found from an MLflow run id (`lungsound push --run-id`), from the `runs:/<id>/...` source an exported
folder's export.json names, or from a checkpoint folder `<run folder>/best` through the run's `run_folder` tag. A
folder is looked up only where a store already exists (`$MLFLOW_TRACKING_URI`, or `./mlruns/mlflow.db`): pushing never
creates one, and a store that cannot be read leaves the card without these facts (a note says why).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from lungsound.errors import LungsoundError, one_line
from lungsound.tracking import (DATA_FINGERPRINT_TAG, PARENT_TAG, SEED_TAG, children_of, client, experiment_name,
                                find_run, is_parent, live_run, run_of_model_folder, seeds_of, store_exists)
from lungsound.training.seeds import aggregate

SCORE_KEYS = ("sp", "se", "score")


@dataclass
class SeedGroup:
    """The finished seeds of a multi-seed group: each seed's final test scores, and their mean and std."""

    parent_run_id: str
    scores: dict[int, dict[str, float]]  # seed -> {"sp", "se", "score"} (%, test split, selected epoch)
    seeds_planned: list[int] = field(default_factory=list)

    @property
    def n(self) -> int:
        return len(self.scores)

    def summary(self) -> dict[str, tuple[float, float]]:
        """{"sp": (mean, std), ...} over the finished seeds (population std, as the parent run logs it)."""
        stats = aggregate(list(self.scores.values()))
        return {k: (stats[f"{k}_mean"], stats[f"{k}_std"]) for k in SCORE_KEYS if f"{k}_mean" in stats}


@dataclass
class Provenance:
    """What MLflow knows about a model folder (all None when it was not found)."""

    run_id: str | None = None
    experiment: str | None = None
    data_fingerprint: str | None = None
    group: SeedGroup | None = None
    note: str | None = None  # why nothing was found, when a lookup failed


def provenance_for_run(run_id: str) -> Provenance:
    """The run's facts from the tracking store of `lungsound.tracking` (a one-line error when there is no such run, or
    when it is deleted)."""
    mlf = client()
    return _facts(mlf, live_run(mlf, run_id, "push"))  # a deleted run is not published


def provenance_for_folder(folder: str | Path) -> Provenance:
    """The facts of the run a model folder (or an exported folder) came from, when an existing store knows it."""
    folder = Path(folder)
    run_id = _exported_from(folder)
    if not store_exists():
        return Provenance(run_id=run_id, note="no MLflow store here: the card gives this folder's own scores only")
    try:
        mlf = client()
        if run_id is not None:
            return _facts(mlf, find_run(mlf, run_id))
        run = run_of_model_folder(mlf, folder)
    except Exception as exc:  # an unreadable store is only a note: the card still has meta.json's facts
        return Provenance(run_id=run_id, note=f"could not read the MLflow store: {one_line(exc)}")
    if run is None:
        return Provenance(note="no MLflow run records this folder: the card gives its own scores only")
    return _facts(mlf, run)


def _facts(mlf, run) -> Provenance:
    tags = run.data.tags
    out = Provenance(run_id=run.info.run_id, experiment=experiment_name(mlf, run.info.experiment_id),
                     data_fingerprint=tags.get(DATA_FINGERPRINT_TAG))
    if is_parent(tags):
        raise LungsoundError(f"MLflow run {run.info.run_id} is a multi-seed parent and holds no model: push one of "
                             "its seeds' runs")
    parent_id = tags.get(PARENT_TAG)
    if parent_id:
        out.group = _seed_group(mlf, parent_id, run.info.experiment_id)
    return out


def _seed_group(mlf, parent_id: str, experiment_id: str) -> SeedGroup | None:
    """Every seed's final test scores under `parent_id`: the newest FINISHED child of each seed."""
    children = children_of(mlf, parent_id, experiment_id)
    scores: dict[int, dict[str, float]] = {}
    for child in sorted(children, key=lambda r: r.info.start_time):  # the newest attempt of a seed wins
        metrics = child.data.metrics
        if child.info.status != "FINISHED" or not all(f"final_test_{k}" in metrics for k in SCORE_KEYS):
            continue
        seed = int(child.data.tags.get(SEED_TAG, -1))
        scores[seed] = {k: float(metrics[f"final_test_{k}"]) for k in SCORE_KEYS}
    if not scores:
        return None
    try:
        planned = seeds_of(find_run(mlf, parent_id).data.tags)
    except Exception:  # the parent may have been deleted: the finished children still tell the scores
        planned = []
    return SeedGroup(parent_id, dict(sorted(scores.items())), planned)


def _exported_from(folder: Path) -> str | None:
    """The run id of an exported folder whose export.json names its source as runs:/<id>/..."""
    try:
        source = str(json.loads((folder / "export.json").read_text(encoding="utf-8")).get("source", ""))
    except (OSError, ValueError, AttributeError):
        return None
    if source.startswith("runs:/"):
        return source[len("runs:/"):].split("/")[0] or None
    return None
