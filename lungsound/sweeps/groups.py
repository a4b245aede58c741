"""A cell's multi-seed group in the MLflow store: the one rule for "is this group finished?", and group resume.

A group (`lungsound.training.seeds`: one parent run, one child `fit` per seed) is the cell's when its parent is in the
cell's MLflow experiment, has the cell's run name and seeds (`seeds` tag, same order), and its config params equal the
cell's config apart from what does not change results (`IGNORED`: compare's list, but a different data folder does
make another group). Such a group is finished when its parent FINISHED. `lungsound sweep`, `lungsound grid` (a front
of the same engine) and `lungsound train --seeds` write the same parent (`training.seeds.start_parent`), so a group
finished by any of them is kept by every sweep and grid.

`open_group` keeps the newest finished group; otherwise it continues the newest unfinished one like
`lungsound train --resume <parent>` (finished seeds kept, interrupted ones resumed from their last.pt, missing or
failed ones trained); otherwise it opens a new parent. `close_group` ends it: the mean and std over the seeds, or the
seeds that failed (`failed_seeds`, `failure`) and the parent FAILED.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lungsound.config import ExperimentConfig, flatten
from lungsound.results.compare import NOT_COMPARED
from lungsound.sweeps.plan import Cell
from lungsound.tracking import (FAILED_SEEDS_TAG, FAILURE_TAG, SEEDS_TAG, RunLogger, children_of, client,
                                group_parents, seeds_value)
from lungsound.training.seeds import finish_parent, group_progress, start_parent

# Config keys that do not make another group (compare's list, but a different data folder does).
IGNORED = set(NOT_COMPARED) - {"data.root"}


@dataclass
class Group:
    """A cell's parent run and where its seeds stand."""

    cell: Cell
    run_id: str
    status: str  # new | resumed | kept (finished before)
    parent: Any = None  # the open RunLogger (None when kept)
    done: dict[int, dict] = field(default_factory=dict)  # seed -> final metrics
    interrupted: dict[int, Path] = field(default_factory=dict)
    failed: dict[int, str] = field(default_factory=dict)  # seed -> what went wrong
    summary: dict[str, float] = field(default_factory=dict)  # the parent's mean/std metrics


def same_config(params: dict[str, str], cfg: ExperimentConfig) -> bool:
    """Whether a parent's params are `cfg` (as `RunLogger.log_params` stored it) apart from the IGNORED keys."""
    return all(params.get(k) == str(v)[:6000] for k, v in flatten(cfg.to_dict()).items() if k not in IGNORED)


def groups_of(mlf, cfg: ExperimentConfig, seeds: list[int]) -> list:
    """The parent runs of the groups of `cfg` (its experiment and run name) over `seeds`, newest first."""
    return [r for r in group_parents(mlf, cfg.tracking.experiment, cfg.tracking.run_name or cfg.name)
            if r.data.tags.get(SEEDS_TAG) == seeds_value(seeds) and same_config(r.data.params, cfg)]


def is_finished(parent) -> bool:
    """A group is finished when its parent run FINISHED (`training.seeds.finish_parent`: every seed done)."""
    return parent.info.status == "FINISHED"


def open_group(cell: Cell, seeds: list[int]) -> Group:
    """The cell's parent: kept when an equal group finished, continued when one did not, else a new one."""
    mlf = client()
    same = groups_of(mlf, cell.cfg, seeds)
    finished = next((r for r in same if is_finished(r)), None)
    if finished is not None:
        return Group(cell, finished.info.run_id, "kept", summary=dict(finished.data.metrics))
    if same:
        run_id = same[0].info.run_id
        done, interrupted = group_progress(mlf, run_id)
        return Group(cell, run_id, "resumed", RunLogger.resume(run_id), done, interrupted)
    parent = start_parent(cell.cfg, seeds)
    return Group(cell, parent.run_id, "new", parent)


def close_group(group: Group, seeds: list[int]) -> None:
    """After every task: the mean and std on the parent, or (a seed failed) the failure recorded and the parent FAILED.
    A child still RUNNING now lost its worker: it ends FAILED."""
    parent = group.parent
    for child in children_of(parent.mlf, parent.run_id):
        if child.info.status == "RUNNING":
            RunLogger(parent.mlf, child.info.run_id).end("FAILED")
    if group.failed:
        parent.set_tags({FAILED_SEEDS_TAG: seeds_value(sorted(group.failed)),
                         FAILURE_TAG: "; ".join(f"seed {s}: {m}" for s, m in sorted(group.failed.items()))[:5000]})
        parent.end("FAILED")
        return
    parent.delete_tags([FAILED_SEEDS_TAG, FAILURE_TAG])  # a failure of an earlier sweep, now mended
    group.summary = finish_parent(parent, seeds, group.done)["summary"]
