"""Sweeps: cells x seeds, every seed one independent `fit`, run here or on Ray; the one engine of `lungsound sweep`
and `lungsound grid`.

`lungsound.sweeps.plan` makes the cells (experiment files x augmentation cells x weightings x `--grid` axes) and
validates every cell's config before anything runs. `run_sweep` opens each cell's multi-seed group
(`lungsound.sweeps.groups.open_group`: kept when it finished before, continued when it did not, else a new parent run,
`training.seeds.start_parent`: the same group `lungsound train --seeds` makes), hands each (cell, seed) still to train
to a backend as one `fit` carrying the parent's run id, and when all have returned logs the mean and std over the
seeds on each parent (`groups.close_group`, `training.seeds.finish_parent`).

Backends (`lungsound.sweeps.backends.BACKENDS`): `local` runs the tasks one after another in this process. `ray`
submits each as a Ray task with `num_cpus=cpus_per_run` (also its torch threads, `train.threads`, unless the config
sets them) and `num_gpus=gpus_per_run`, on the cluster at `$RAY_ADDRESS` or on a Ray started here on all of the
machine's cores. A task gets the driver's MLflow tracking URI, cache folders and working directory explicitly, so
every task logs to the same store (docs/sweeps.md: on several machines that store must be an MLflow server, not a
sqlite file).

Failures: a task that raises (or whose Ray worker dies) is submitted once more by `execute`, the same resubmission for
every backend (Ray's own retries are off, `max_retries=0`, so each task runs at most twice). A task that fails twice is
reported; its cell's parent ends FAILED with the tags `failed_seeds` and `failure`, and the sweep carries on.

Re-running a sweep: a cell whose group (same MLflow experiment, run name, seeds, and config apart from what does not
change results) FINISHED is kept; one that did not finish is continued like `lungsound train --resume <parent>`:
finished seeds kept, interrupted ones resumed from their last.pt, missing or failed ones trained. Two sweeps of the
same cells must not run at the same time (the second would take the first's running groups for interrupted ones).
"""

from __future__ import annotations

from dataclasses import dataclass

from lungsound.config import ExperimentConfig
from lungsound.sweeps.backends import BACKENDS, execute
from lungsound.sweeps.groups import Group, close_group, open_group
from lungsound.sweeps.plan import Cell, parse_grid, plan, split_values
from lungsound.tracking import ends_on_error
from lungsound.training.data import build_run_data
from lungsound.training.seeds import fit_child

__all__ = ["Cell", "Group", "Task", "open_all", "open_group", "parse_grid", "plan", "prepare_data", "report",
           "run_sweep", "split_values", "train_seed"]


@dataclass
class Task:
    cell: int
    seed: int
    cfg: ExperimentConfig
    parent_run_id: str
    resume: str | None = None  # an interrupted child's last.pt
    progress: bool = False
    label: str = ""


# --- tasks and their retries ------------------------------------------------------------------------------------------

def train_seed(task: Task) -> dict:
    """One sweep task: the seed's `fit`, a child of its cell's parent run; returns its run id and final metrics."""
    result = fit_child(task.cfg, task.seed, task.parent_run_id, task.resume, progress=task.progress)
    return {"run_id": result.run_id, "metrics": result.metrics}


def prepare_data(cells: list[Cell], progress: bool = True) -> None:
    """Fill the feature cache once per distinct data setting here, so parallel tasks on this machine read it instead
    of each computing the same arrays."""
    seen = set()
    for cell in cells:
        d = cell.cfg.data
        key = (d.root, d.split, d.duration, d.pad, d.input, d.generated)  # what the cache entries depend on
        if d.cache and key not in seen:
            seen.add(key)
            build_run_data(cell.cfg, progress=progress)


def open_all(cells: list[Cell], seeds: list[int]) -> list[Group]:
    """`open_group` of every cell; when one fails, the parents opened before it end too (FAILED, or KILLED on Ctrl-C,
    by `ends_on_error`), so none is left RUNNING."""
    groups: list[Group] = []
    try:
        for cell in cells:
            groups.append(open_group(cell, seeds))
    except BaseException:
        with ends_on_error(*(g.parent for g in groups)):
            raise  # the guard ends the opened parents, then the exception goes on
    return groups


def run_sweep(cells: list[Cell], seeds: list[int], backend: str = "local", cpus_per_run: float = 1,
              gpus_per_run: float = 0, progress: bool = True) -> list[Group]:
    """Train every (cell, seed) not finished yet on `backend` (a name of BACKENDS); returns each cell's group (see
    `Group.status`)."""
    runner = BACKENDS.get(backend)(cpus_per_run, gpus_per_run)
    try:
        for cell in cells:
            runner.adapt(cell.cfg)
        groups = open_all(cells, seeds)
        tasks = [Task(i, seed, g.cell.cfg, g.run_id, str(g.interrupted[seed]) if seed in g.interrupted else None,
                      progress and runner.in_process, f"{g.cell.name} seed {seed}")
                 for i, g in enumerate(groups) if g.parent is not None for seed in seeds if seed not in g.done]
        open_groups = [g for g in groups if g.parent is not None]
        with ends_on_error(*(g.parent for g in open_groups)):
            if tasks and runner.fills_cache_first:
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
