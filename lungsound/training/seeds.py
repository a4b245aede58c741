"""A multi-seed group of runs: one MLflow parent run, one child `fit` per seed, and the parent's mean and std.

`fit_seeds` starts a group; the parent records the config (params and a `config.yaml` artifact) and the seeds, and
each child records its run folder. A group that died (an exception, Ctrl-C, or a killed process that left the parent
RUNNING) is finished by `resume_group(parent_run_id)` (`lungsound train --resume <parent run id>`): finished children
are kept, interrupted ones continue from their `last.pt`, missing ones are trained, then the parent gets its statistics
and its children's dataset input. `best_child` names the child that `lungsound train --register` registers: the one
with the best final Score on the split that selected its epoch (validation for the clean protocol, test for the paper
protocol, as within a run).

The steps are public for runners that train the children elsewhere (`lungsound.sweeps`: the sweep engine, on Ray or
here): `start_parent`, `fit_child` per seed, `finish_parent`; `group_progress` says which seeds of an existing group
are done or interrupted. The tags are `lungsound.tracking.tags`' (`role`, `seeds`, `seed`, `run_folder`, ...), the
group's children are found by `lungsound.tracking.children_of`.
"""

from __future__ import annotations

import copy
import os
import tempfile
from pathlib import Path

import numpy as np

from lungsound.config import ExperimentConfig, config_from_dict, dump_config, flatten
from lungsound.documents import load_yaml, read_text
from lungsound.errors import LungsoundError
from lungsound.limits import MAX_SEED, MAX_SEEDS, check_int
from lungsound.tracking import (PARENT_ROLE, ROLE_TAG, RUN_FOLDER_TAG, SEED_TAG, SEEDS_TAG, SELECTION_TAG, RunLogger,
                                children_of, client, config_tags, download_artifacts, ends_on_error, environment_tags,
                                is_parent, live_run, seeds_of, seeds_value)
from lungsound.training.run import fit


def parse_seeds(text: str | None, default: int) -> list[int]:
    """'1-5' -> [1..5]; '1,3,7' -> [1, 3, 7]; None -> [default]; repeats dropped. The one parser of train, grid and
    sweep --seeds: each seed from 0 to `MAX_SEED`, at most `MAX_SEEDS` of them (`lungsound.limits`), a range counted
    before it is expanded, so the work is linear in the text and the answer."""
    if text is None or not str(text).strip():
        return [check_int("the seed", default, 0, MAX_SEED)]
    text = str(text)
    if len(text) > 20 * MAX_SEEDS:
        raise LungsoundError(f"--seeds is {len(text):,} characters long; give at most {MAX_SEEDS:,} seeds")
    spans: list[tuple[int, int]] = []
    total = 0
    try:
        for part in text.split(","):
            lo, sep, hi = part.partition("-")
            span = (int(lo), int(hi) if sep else int(lo))
            spans.append(span)
            total += max(0, span[1] - span[0] + 1)
    except ValueError:
        raise LungsoundError(f"--seeds must look like 1-5 or 1,2,3 (seeds 0 or more), got {text!r}") from None
    for lo, hi in spans:
        if lo > hi:
            raise LungsoundError(f"--seeds {text!r}: the range {lo}-{hi} is empty (write low-high)")
        if lo < 0 or hi > MAX_SEED:
            raise LungsoundError(f"--seeds {text!r}: seeds must be from 0 to {MAX_SEED:,}")
    if total > MAX_SEEDS:
        raise LungsoundError(f"--seeds {text!r} selects {total:,} seeds; at most {MAX_SEEDS:,} are allowed")
    return list(dict.fromkeys(seed for lo, hi in spans for seed in range(lo, hi + 1)))


def aggregate(metrics: list[dict[str, float]]) -> dict[str, float]:
    """mean and (population) std over seeds of every metric the runs share: `<name>_mean`, `<name>_std`.

    A NaN in any seed makes that metric's mean and std NaN: it is shown, never silently dropped.
    """
    keys = sorted(set.intersection(*(set(m) for m in metrics))) if metrics else []
    out = {}
    for k in keys:
        values = np.array([m[k] for m in metrics], dtype=float)
        out[f"{k}_mean"], out[f"{k}_std"] = float(np.mean(values)), float(np.std(values))
    return out


def child_config(cfg: ExperimentConfig, seed: int) -> ExperimentConfig:
    """The config of one seed of the group: `cfg` with `train.seed` and the child's run name `<group>-seed<N>`."""
    child = copy.deepcopy(cfg)
    child.train.seed = seed
    child.tracking.run_name = f"{cfg.tracking.run_name or cfg.name}-seed{seed}"
    return child


def start_parent(cfg: ExperimentConfig, seeds: list[int]):
    """Open the group's parent run (a `RunLogger`): tags, the config as params and as a `config.yaml` artifact."""
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        raise LungsoundError("under torchrun, train one seed per launch: drop --seeds and set train.seed=N")
    parent = RunLogger.start(cfg.tracking.experiment, cfg.tracking.run_name or f"{cfg.name}",
                             {**environment_tags(), **config_tags(cfg), SEEDS_TAG: seeds_value(seeds),
                              ROLE_TAG: PARENT_ROLE})
    with ends_on_error(parent), tempfile.TemporaryDirectory() as tmp:  # a failed write ends the parent FAILED
        parent.log_params(flatten(cfg.to_dict()))
        path = Path(tmp) / "config.yaml"
        path.write_text(dump_config(cfg))
        parent.log_artifact(path)
    return parent


def fit_child(cfg: ExperimentConfig, seed: int, parent_run_id: str, resume: str | Path | None = None,
              progress: bool = True):
    """One seed of the group: a new child run of `parent_run_id`, or (`resume`: its last.pt) an interrupted one
    continued. Returns fit's `RunResult`."""
    if resume is not None:
        return fit(None, resume=resume, progress=progress)
    return fit(child_config(cfg, seed), parent_run_id=parent_run_id, progress=progress)


def finish_parent(parent, seeds: list[int], done: dict[int, dict]) -> dict:
    """Log the mean and std over `seeds` of the children's final metrics (`done`: seed -> metrics) on the parent,
    with its children's dataset input, and end it FINISHED."""
    summary = aggregate([done[s] for s in seeds])
    parent.log_metrics(summary)
    parent.log_inputs_of([child.info.run_id for child in children_of(parent.mlf, parent.run_id)])
    parent.end("FINISHED")
    return {"parent_run_id": parent.run_id, "summary": summary, "seeds": seeds}


def _run_children(parent, cfg: ExperimentConfig, seeds: list[int], progress: bool, done: dict[int, dict],
                  interrupted: dict[int, Path]) -> dict:
    """Train every seed not in `done` (resuming those in `interrupted`), then finish the parent with the statistics."""
    with ends_on_error(parent):
        for seed in seeds:
            if seed not in done:
                done[seed] = fit_child(cfg, seed, parent.run_id, interrupted.get(seed), progress).metrics
        return finish_parent(parent, seeds, done)


def fit_seeds(cfg: ExperimentConfig, seeds: list[int], progress: bool = True) -> dict:
    """One parent MLflow run, one child per seed; the parent gets mean and std of each final metric."""
    return _run_children(start_parent(cfg, seeds), cfg, seeds, progress, {}, {})


def resume_group(parent_run_id: str, progress: bool = True) -> dict:
    """Finish a multi-seed group: keep finished children, resume interrupted ones, train missing ones."""
    mlf = client()
    run = live_run(mlf, parent_run_id, "resume")
    if not is_parent(run.data.tags):
        raise LungsoundError(f"MLflow run {parent_run_id} is not a multi-seed parent run")
    with tempfile.TemporaryDirectory() as tmp:
        path = download_artifacts(parent_run_id, "config.yaml", tmp)
        source = f"run {parent_run_id} config.yaml"
        cfg = config_from_dict(load_yaml(read_text(path, "config.yaml"), source), source)
    seeds = seeds_of(run.data.tags)
    done, interrupted = group_progress(mlf, parent_run_id)
    parent = RunLogger.resume(parent_run_id)
    return _run_children(parent, cfg, seeds, progress, done, interrupted)


def group_progress(mlf, parent_run_id: str) -> tuple[dict[int, dict], dict[int, Path]]:
    """Where a group's seeds stand: the final metrics of finished children (seed -> metrics) and the last.pt of
    interrupted ones (seed -> path); a child left RUNNING without a checkpoint (its process died) is marked KILLED."""
    done: dict[int, dict] = {}
    interrupted: dict[int, Path] = {}
    for child in sorted(children_of(mlf, parent_run_id), key=lambda r: r.info.start_time):  # the newest attempt wins
        seed = int(child.data.tags.get(SEED_TAG, -1))
        last = Path(child.data.tags.get(RUN_FOLDER_TAG, "/nonexistent")) / "last.pt"
        if child.info.status == "FINISHED" and "final_test_score" in child.data.metrics:
            done[seed] = {k: v for k, v in child.data.metrics.items() if k.startswith(("final_", "selected_epoch",
                                                                                        "calibration_"))}
            interrupted.pop(seed, None)
        elif seed not in done and last.is_file():
            interrupted[seed] = last
        elif child.info.status == "RUNNING":  # killed before its first checkpoint: nothing to continue
            RunLogger(mlf, child.info.run_id).end("KILLED")
    return done, interrupted


def best_child(parent_run_id: str) -> str:
    """The run id of the group's finished child with the best final Score on its selection split (`selection` tag:
    val for the clean protocol, test for the paper protocol); the earliest child wins a tie."""
    finished = [c for c in children_of(client(), parent_run_id) if c.info.status == "FINISHED"]
    scored = [(c.data.metrics.get(f"final_{c.data.tags.get(SELECTION_TAG, 'test')}_score"), c) for c in finished]
    scored = [(key, c) for key, c in scored if key is not None and key == key]  # NaN never wins
    if not scored:
        raise LungsoundError(f"multi-seed run {parent_run_id} has no finished child with a final Score to register")
    scored.sort(key=lambda kc: kc[1].info.start_time)  # max() keeps the first of equals: the earliest child
    return max(scored, key=lambda kc: kc[0])[1].info.run_id
