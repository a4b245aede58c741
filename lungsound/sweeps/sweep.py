"""Sweeps: experiment files x grid cells x seeds, every seed one independent `fit`, run here or on Ray.

`plan` expands `--grid section.key=v1,v2` axes (their cartesian product; optionally also the augmentation cells of
`lungsound.sweeps.grid`) over one or more experiment files into cells, and loads and validates every cell's config before
anything runs. `run_sweep` opens one MLflow parent run per cell (`training.seeds.start_parent`: the same multi-seed group
`lungsound train --seeds` makes), hands each (cell, seed) to a backend as one `fit` carrying the parent's run id, and
when all have returned logs the mean and std over the seeds on each parent (`training.seeds.finish_parent`).

Backends (`lungsound.sweeps.backends`): `local` runs the tasks one after another in this process. `ray` submits each
as a Ray task with `num_cpus=cpus_per_run` (also its torch threads, `train.threads`, unless the config sets them) and
`num_gpus=gpus_per_run`, on the cluster at `$RAY_ADDRESS` or on a Ray started here on all of the machine's cores. A
task gets the driver's MLflow tracking URI, cache folders and working directory explicitly, so every task logs to the
same store (docs/sweeps.md: on several machines that store must be an MLflow server, not a sqlite file).

Failures: a task that raises (or whose Ray worker dies) is submitted once more by `execute`, the same resubmission for
both backends (Ray's own retries are off, `max_retries=0`, so each task runs at most twice). A task that fails twice is
reported; its cell's parent ends FAILED with the tags `failed_seeds` and `failure`, and the sweep carries on.

Re-running a sweep: a cell whose parent (same MLflow experiment, run name, seeds, and config apart from what does not
change results) FINISHED is kept; one that did not finish is continued like `lungsound train --resume <parent>`:
finished seeds kept, interrupted ones resumed from their last.pt, missing or failed ones trained. Two sweeps of the
same cells must not run at the same time (the second would take the first's running groups for interrupted ones).
"""

from __future__ import annotations

import itertools
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lungsound.results.compare import NOT_COMPARED
from lungsound.config import ExperimentConfig, flatten, load_config
from lungsound.errors import LungsoundError
from lungsound.sweeps.grid import cell_name
from lungsound.sweeps.grid import plan as grid_plan
from lungsound.sweeps.backends import LocalBackend, RayBackend, execute

BACKENDS = ("local", "ray")
# Config keys that do not make another group (compare's list, but a different data folder does).
_NOT_IDENTITY = set(NOT_COMPARED) - {"data.root"}


@dataclass
class Cell:
    name: str  # the parent run's name: the experiment's (or grid cell's) name and the multi-valued grid settings
    cfg: ExperimentConfig  # the cell's config; each seed's child is `training.seeds.child_config(cfg, seed)`
    values: dict[str, str] = field(default_factory=dict)  # this cell's grid values


@dataclass
class Task:
    cell: int
    seed: int
    cfg: ExperimentConfig
    parent_run_id: str
    resume: str | None = None  # an interrupted child's last.pt
    progress: bool = False
    label: str = ""


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


# --- plan -------------------------------------------------------------------------------------------------------------

def split_values(text: str) -> list[str]:
    """'1e-3,5e-4' -> ['1e-3', '5e-4']; commas inside [] or {} belong to the value ('{a: 1, b: 2},{a: 3}')."""
    parts, depth, current = [], 0, ""
    for ch in text:
        depth += (ch in "[{(") - (ch in "]})")
        if ch == "," and depth == 0:
            parts.append(current.strip())
            current = ""
        else:
            current += ch
    return parts + [current.strip()]


def parse_grid(items: list[str] | tuple[str, ...]) -> list[tuple[str, list[str]]]:
    """`['train.lr=1e-3,5e-4', 'data.duration=2,4']` -> the grid's axes, in order, each key once."""
    axes: list[tuple[str, list[str]]] = []
    for text in items:
        key, sep, raw = text.partition("=")
        key = key.strip()
        if not sep or not key:
            raise LungsoundError(f"--grid {text!r} must look like section.key=value1,value2")
        if key == "train.seed":
            raise LungsoundError("--grid train.seed: give seeds with --seeds (e.g. --seeds 1-5)")
        if key == "tracking.run_name":
            raise LungsoundError("--grid tracking.run_name: a sweep names its cells after their grid values")
        if any(key == k for k, _ in axes):
            raise LungsoundError(f"--grid {key} is given twice; list all its values once: {key}=v1,v2")
        values = split_values(raw)
        if any(not v for v in values):
            raise LungsoundError(f"--grid {text!r} has an empty value")
        if len(set(values)) < len(values):
            raise LungsoundError(f"--grid {text!r} repeats a value")
        axes.append((key, values))
    return axes


def _label(value: str) -> str:
    return re.sub(r"[^\w.+-]+", "_", value).strip("_") or "_"


def plan(experiments: list[str | Path], grid: list[str] | tuple[str, ...] = (),
         overrides: list[str] | tuple[str, ...] = (), augmentations: list[str] | None = None) -> list[Cell]:
    """The sweep's cells: every experiment file (times `lungsound.sweeps.grid`'s augmentation cells when `augmentations`
    names some) times the cartesian product of the grid's axes, each config loaded and validated now. A cell's run name
    is its base name and its multi-valued grid settings (`quickstart-train.lr=0.001-data.duration=2.0`)."""
    if not experiments:
        raise LungsoundError("lungsound sweep needs at least one -c EXPERIMENT file")
    axes = parse_grid(grid)
    if augmentations is not None:
        bases = [(c.experiment, c.augmentation, c.overrides) for c in grid_plan(experiments, augmentations, overrides)]
    else:
        bases = [(Path(path), None, list(overrides)) for path in experiments]
    # A grid cell's name carries its weighting (`lungsound.sweeps.grid.cell_name`), so a method.class_weighted axis names
    # its cells as `lungsound grid --weighting` does.
    named = [key for key, values in axes if len(values) > 1
             and not (augmentations is not None and key == "method.class_weighted")]
    cells: list[Cell] = []
    for path, augmentation, base_overrides in bases:
        for combo in itertools.product(*(values for _, values in axes)):
            values = dict(zip((key for key, _ in axes), combo))
            assign = [f"{k}={v}" for k, v in values.items()]
            try:
                cfg = load_config(path, [*base_overrides, *assign])
            except LungsoundError as exc:
                if not assign:
                    raise
                raise LungsoundError(f"grid cell {' '.join(assign)}: {exc.problem}", exc.path) from None
            if augmentation is not None:
                base = cell_name(path, augmentation, cfg.method.class_weighted)
            else:
                base = cfg.tracking.run_name or cfg.name
            suffix = "-".join(f"{k}={_label(values[k])}" for k in named)
            cfg.tracking.run_name = f"{base}-{suffix}" if suffix else base
            cells.append(Cell(cfg.tracking.run_name, cfg, values))
    seen: set[tuple[str, str]] = set()
    for cell in cells:
        key = (cell.cfg.tracking.experiment, cell.name)
        if key in seen:
            raise LungsoundError(f"two cells of the sweep are both named {cell.name!r} in MLflow experiment {key[0]!r}; "
                                 "give each experiment file once (file names must differ)")
        seen.add(key)
    return cells


# --- tasks and their retries ------------------------------------------------------------------------------------------

def train_seed(task: Task) -> dict:
    """One sweep task: the seed's `fit`, a child of its cell's parent run; returns its run id and final metrics."""
    from lungsound.training.seeds import fit_child

    result = fit_child(task.cfg, task.seed, task.parent_run_id, task.resume, progress=task.progress)
    return {"run_id": result.run_id, "metrics": result.metrics}


# --- groups: the parents ----------------------------------------------------------------------------------------------

def _same_config(params: dict[str, str], cfg: ExperimentConfig) -> bool:
    return all(params.get(k) == str(v)[:6000] for k, v in flatten(cfg.to_dict()).items() if k not in _NOT_IDENTITY)


def open_group(cell: Cell, seeds: list[int]) -> Group:
    """The cell's parent: kept when an equal group finished, continued when one did not, else a new one."""
    from lungsound.tracking import RunLogger, client, experiment_id
    from lungsound.training.seeds import group_progress, start_parent

    mlf = client()
    exp = experiment_id(mlf, cell.cfg.tracking.experiment, create=False)
    runs = [] if exp is None else mlf.search_runs(
        [exp], filter_string=f"tags.mlflow.runName = '{cell.name}' and tags.role = 'parent'",
        order_by=["attributes.start_time DESC"], max_results=1000)
    same = [r for r in runs if r.data.tags.get("seeds") == ",".join(map(str, seeds))
            and _same_config(r.data.params, cell.cfg)]
    finished = [r for r in same if r.info.status == "FINISHED"]
    if finished:
        return Group(cell, finished[0].info.run_id, "kept", summary=dict(finished[0].data.metrics))
    if same:
        run_id = same[0].info.run_id
        done, interrupted = group_progress(mlf, run_id)
        return Group(cell, run_id, "resumed", RunLogger.resume(run_id), done, interrupted)
    parent = start_parent(cell.cfg, seeds)
    return Group(cell, parent.run_id, "new", parent)


def open_all(cells: list[Cell], seeds: list[int]) -> list[Group]:
    """`open_group` of every cell; when one fails, the parents opened before it end too (FAILED, or KILLED on Ctrl-C,
    by `ends_on_error`), so none is left RUNNING."""
    from lungsound.tracking import ends_on_error

    groups: list[Group] = []
    try:
        for cell in cells:
            groups.append(open_group(cell, seeds))
    except BaseException:
        with ends_on_error(*(g.parent for g in groups)):
            raise  # the guard ends the opened parents, then the exception goes on
    return groups


def close_group(group: Group, seeds: list[int]) -> None:
    """After every task: the mean and std on the parent, or (a seed failed) the failure recorded and the parent FAILED.
    A child still RUNNING now lost its worker: it ends FAILED."""
    from lungsound.training.seeds import children_of, finish_parent

    parent = group.parent
    for child in children_of(parent.mlf, parent.run_id):
        if child.info.status == "RUNNING":
            parent.mlf.set_terminated(child.info.run_id, status="FAILED")
    if group.failed:
        parent.set_tags({"failed_seeds": ",".join(map(str, sorted(group.failed))),
                         "failure": "; ".join(f"seed {s}: {m}" for s, m in sorted(group.failed.items()))[:5000]})
        parent.end("FAILED")
        return
    if "failed_seeds" in parent.mlf.get_run(parent.run_id).data.tags:  # a failure of an earlier sweep, now mended
        parent.mlf.delete_tag(parent.run_id, "failed_seeds")
        parent.mlf.delete_tag(parent.run_id, "failure")
    group.summary = finish_parent(parent, seeds, group.done)["summary"]


def prepare_data(cells: list[Cell], progress: bool = True) -> None:
    """Fill the feature cache once per distinct data setting here, so parallel tasks on this machine read it instead
    of each computing the same arrays."""
    from lungsound.training.data import build_run_data

    seen = set()
    for cell in cells:
        d = cell.cfg.data
        key = (d.root, d.split, d.duration, d.pad, d.input, d.generated)  # what the cache entries depend on
        if d.cache and key not in seen:
            seen.add(key)
            build_run_data(cell.cfg, progress=progress)


def run_sweep(cells: list[Cell], seeds: list[int], backend: str = "local", cpus_per_run: float = 1,
              gpus_per_run: float = 0, progress: bool = True) -> list[Group]:
    """Train every (cell, seed) not finished yet on `backend`; returns each cell's group (see `Group.status`)."""
    from lungsound.tracking import ends_on_error

    if backend not in BACKENDS:
        raise LungsoundError(f"unknown backend {backend!r}; known: {', '.join(BACKENDS)}")
    if backend == "ray":
        for cell in cells:  # a task's torch threads = its CPUs, unless the config says otherwise
            cell.cfg.train.threads = cell.cfg.train.threads or max(1, int(cpus_per_run))
            if not gpus_per_run and cell.cfg.train.device == "auto":  # Ray leaves every GPU visible to a task
                cell.cfg.train.device = "cpu"  # given none: it must not take one it was not given
    runner = RayBackend(cpus_per_run, gpus_per_run) if backend == "ray" else LocalBackend()
    try:
        groups = open_all(cells, seeds)
        tasks = [Task(i, seed, g.cell.cfg, g.run_id, str(g.interrupted[seed]) if seed in g.interrupted else None,
                      progress and backend == "local", f"{g.cell.name} seed {seed}")
                 for i, g in enumerate(groups) if g.parent is not None for seed in seeds if seed not in g.done]
        open_groups = [g for g in groups if g.parent is not None]
        with ends_on_error(*(g.parent for g in open_groups)):
            if tasks and backend == "ray" and not os.environ.get("RAY_ADDRESS"):
                prepare_data([groups[t.cell].cell for t in tasks], progress)
            results, errors = execute(train_seed, tasks, runner, [t.label for t in tasks], progress)
            for i, result in results.items():
                groups[tasks[i].cell].done[tasks[i].seed] = result["metrics"]
            for i, message in errors.items():
                groups[tasks[i].cell].failed[tasks[i].seed] = message
            for group in open_groups:
                close_group(group, seeds)
    finally:
        runner.close()
    return groups


def report(groups: list[Group]) -> str:
    """One line per cell: what happened to it and its mean +- std test Score over the seeds."""
    lines = []
    for g in groups:
        mean, std = g.summary.get("final_test_score_mean"), g.summary.get("final_test_score_std")
        what = {"kept": "finished before, kept", "resumed": "continued", "new": "trained"}[g.status]
        if g.failed:
            what += f"; FAILED seed(s) {', '.join(map(str, sorted(g.failed)))}"
        score = f"test Score {mean:.2f} ± {std:.2f}" if mean is not None else "no Score"
        lines.append(f"  {g.cell.name}: {what} (parent run {g.run_id}); {score}")
    return "\n".join(lines)
