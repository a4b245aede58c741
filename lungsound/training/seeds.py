"""A multi-seed group of runs: one MLflow parent run, one child `fit` per seed, and the parent's mean and std.

`fit_seeds` starts a group; the parent records the config (params and a `config.yaml` artifact) and the seeds, and
each child records its run folder. A group that died (an exception, Ctrl-C, or a killed process that left the parent
RUNNING) is finished by `resume_group(parent_run_id)` (`lungsound train --resume <parent run id>`): finished children
are kept, interrupted ones continue from their `last.pt`, missing ones are trained, then the parent gets its statistics.
"""

from __future__ import annotations

import copy
import os
import tempfile
from pathlib import Path

import numpy as np

from lungsound.config import ExperimentConfig, config_from_dict, dump_config, flatten
from lungsound.errors import LungsoundError
from lungsound.training.run import fit


def parse_seeds(text: str | None, default: int) -> list[int]:
    """'1-5' -> [1..5]; '1,3,7' -> [1, 3, 7]; None -> [default]."""
    if not text:
        return [default]
    seeds: list[int] = []
    try:
        for part in str(text).split(","):
            if "-" in part:
                lo, hi = part.split("-")
                seeds.extend(range(int(lo), int(hi) + 1))
            else:
                seeds.append(int(part))
    except ValueError:
        raise LungsoundError(f"--seeds must look like 1-5 or 1,2,3, got {text!r}") from None
    if not seeds:
        raise LungsoundError(f"--seeds {text!r} selects no seed")
    if any(s < 0 for s in seeds):
        raise LungsoundError(f"--seeds {text!r}: seeds must be 0 or more")
    return sorted(set(seeds), key=seeds.index)


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


def _child_cfg(cfg: ExperimentConfig, seed: int) -> ExperimentConfig:
    child = copy.deepcopy(cfg)
    child.train.seed = seed
    child.tracking.run_name = f"{cfg.tracking.run_name or cfg.name}-seed{seed}"
    return child


def _run_children(parent, cfg: ExperimentConfig, seeds: list[int], progress: bool, done: dict[int, dict],
                  interrupted: dict[int, Path]) -> dict:
    """Train every seed not in `done` (resuming those in `interrupted`), then finish the parent with the statistics."""
    from lungsound.tracking import ends_on_error

    with ends_on_error(parent):
        for seed in seeds:
            if seed in done:
                continue
            if seed in interrupted:
                result = fit(None, resume=interrupted[seed], progress=progress)
            else:
                result = fit(_child_cfg(cfg, seed), parent_run_id=parent.run_id, progress=progress)
            done[seed] = result.metrics
    summary = aggregate([done[s] for s in seeds])
    parent.log_metrics(summary)
    parent.end("FINISHED")
    return {"parent_run_id": parent.run_id, "summary": summary, "seeds": seeds}


def fit_seeds(cfg: ExperimentConfig, seeds: list[int], progress: bool = True) -> dict:
    """One parent MLflow run, one child per seed; the parent gets mean and std of each final metric."""
    from lungsound.tracking import RunLogger, environment_tags

    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        raise LungsoundError("under torchrun, train one seed per launch: drop --seeds and set train.seed=N")
    parent = RunLogger.start(cfg.tracking.experiment, cfg.tracking.run_name or f"{cfg.name}",
                             {**environment_tags(), "protocol": cfg.train.protocol, "method": cfg.method.name,
                              "model": cfg.model.name, "experiment_file": cfg.name, "seeds": ",".join(map(str, seeds)),
                              "role": "parent"})
    parent.log_params(flatten(cfg.to_dict()))
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "config.yaml"
        path.write_text(dump_config(cfg))
        parent.log_artifact(path)
    return _run_children(parent, cfg, seeds, progress, {}, {})


def resume_group(parent_run_id: str, progress: bool = True) -> dict:
    """Finish a multi-seed group: keep finished children, resume interrupted ones, train missing ones."""
    import yaml

    from lungsound.tracking import RunLogger, client, download_artifacts

    mlf = client()
    try:
        run = mlf.get_run(parent_run_id)
    except Exception as exc:  # mlflow raises its own exception types
        raise LungsoundError(f"no MLflow run {parent_run_id}: {str(exc).splitlines()[0]}") from None
    if run.data.tags.get("role") != "parent":
        raise LungsoundError(f"MLflow run {parent_run_id} is not a multi-seed parent run")
    with tempfile.TemporaryDirectory() as tmp:
        path = download_artifacts(parent_run_id, "config.yaml", tmp)
        cfg = config_from_dict(yaml.safe_load(Path(path).read_text()), f"run {parent_run_id} config.yaml")
    seeds = [int(s) for s in run.data.tags["seeds"].split(",")]
    children = mlf.search_runs([run.info.experiment_id],
                               filter_string=f"tags.mlflow.parentRunId = '{parent_run_id}'", max_results=5000)
    done: dict[int, dict] = {}
    interrupted: dict[int, Path] = {}
    for child in sorted(children, key=lambda r: r.info.start_time):  # the newest attempt of a seed wins
        seed = int(child.data.tags.get("seed", -1))
        last = Path(child.data.tags.get("run_folder", "/nonexistent")) / "last.pt"
        if child.info.status == "FINISHED" and "final_test_score" in child.data.metrics:
            done[seed] = {k: v for k, v in child.data.metrics.items() if k.startswith(("final_", "selected_epoch",
                                                                                        "calibration_"))}
            interrupted.pop(seed, None)
        elif seed not in done and last.is_file():
            interrupted[seed] = last
        elif child.info.status == "RUNNING":  # killed before its first checkpoint: nothing to continue
            mlf.set_terminated(child.info.run_id, status="KILLED")
    parent = RunLogger.resume(parent_run_id)
    return _run_children(parent, cfg, seeds, progress, done, interrupted)
