"""What each MLflow run records, written through the explicit `MlflowClient` API (nothing depends on a global
active run): `RunLogger` (params, metrics, tags, the data as an MLflow dataset input, artifacts, the end status),
`environment_tags` (where and with what the run ran) and `ends_on_error` (no run left RUNNING when a block fails).

Every run gets the flattened config as params, metrics per epoch, its data as an MLflow dataset input
(`RunLogger.log_dataset`: name, source, digest = the data fingerprint, split and counts), and tags: MLflow's own
`mlflow.source.git.commit` (only when the package runs from a git checkout) and `mlflow.source.name`, lungsound's git
commit and dirty flag, package versions, hardware, and the run's own (`lungsound.tracking.tags`: protocol, method,
data fingerprint, ...).
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import subprocess
import sys
from pathlib import Path
from typing import Any, Iterator

import lungsound
from lungsound.tracking.queries import live_run
from lungsound.tracking.store import client, experiment_id
from lungsound.tracking.tags import (DATA_CONTEXT_TAG, GIT_COMMIT_TAG, PARENT_TAG, SOURCE_NAME_TAG,
                                     SOURCE_TYPE_TAG)


def _git(repo: Path, *args: str) -> str | None:
    """The output of `git <args>` in `repo`, or None when git is missing, fails or hangs."""
    try:
        out = subprocess.run(["git", *args], cwd=repo, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def git_state() -> dict[str, str]:
    """Commit and dirty flag of the checkout this package runs from ('unknown' outside git). The package's folder must
    be the top of that checkout: an installed copy inside some other repository (a venv in a project) is not one."""
    repo = Path(__file__).resolve().parents[2]  # lungsound/tracking/runs.py -> the checkout
    top = _git(repo, "rev-parse", "--show-toplevel")
    commit = _git(repo, "rev-parse", "HEAD") if top and Path(top).resolve() == repo else None
    if not commit:
        return {"git_commit": "unknown", "git_dirty": "unknown"}
    dirty = _git(repo, "status", "--porcelain", "--untracked-files=no")
    return {"git_commit": commit, "git_dirty": "unknown" if dirty is None else str(bool(dirty)).lower()}


def _source_name() -> str:
    """What started this process, as MLflow's Source column shows it: `lungsound train`, or the script's name (the
    package's for `python -m package`)."""
    script = Path(sys.argv[0]) if sys.argv and sys.argv[0] not in ("", "-c", "-m") else Path("python")
    prog = script.parent.name if script.name == "__main__.py" else script.name
    return f"lungsound {sys.argv[1]}" if prog == "lungsound" and len(sys.argv) > 1 else prog


def environment_tags() -> dict[str, str]:
    import mlflow
    import numpy
    import torch
    import transformers

    if torch.cuda.is_available():
        hardware = f"{torch.cuda.device_count()} x {torch.cuda.get_device_name(0)}"
    else:
        hardware = f"cpu ({os.cpu_count()} cores, {platform.machine()})"
    git = git_state()
    return {
        SOURCE_TYPE_TAG: "LOCAL", SOURCE_NAME_TAG: _source_name(),  # the runs table's Source column
        **({GIT_COMMIT_TAG: git["git_commit"]} if git["git_commit"] != "unknown" else {}),
        **git,
        "lungsound_version": lungsound.__version__,
        "torch_version": torch.__version__,
        "transformers_version": transformers.__version__,
        "numpy_version": numpy.__version__,
        "mlflow_version": mlflow.__version__,
        "python_version": platform.python_version(),
        "hardware": hardware,
    }


@contextlib.contextmanager
def ends_on_error(*loggers: "RunLogger | None") -> Iterator[None]:
    """End the given runs if the block raises: KILLED for Ctrl-C / SIGTERM (KeyboardInterrupt), FAILED otherwise, so no
    run is left RUNNING in the store; the exception goes on."""
    try:
        yield
    except KeyboardInterrupt:
        for logger in loggers:
            if logger is not None:
                logger.end("KILLED")
        raise
    except BaseException:
        for logger in loggers:
            if logger is not None:
                logger.end("FAILED")
        raise


class RunLogger:
    """One MLflow run, written through the client API."""

    def __init__(self, mlf, run_id: str):
        self.mlf = mlf
        self.run_id = run_id

    @classmethod
    def start(cls, experiment: str, run_name: str | None, tags: dict[str, Any],
              parent_run_id: str | None = None) -> "RunLogger":
        mlf = client()
        all_tags = {k: str(v) for k, v in tags.items()}
        if parent_run_id:
            all_tags[PARENT_TAG] = parent_run_id
        run = mlf.create_run(experiment_id(mlf, experiment), run_name=run_name, tags=all_tags)
        return cls(mlf, run.info.run_id)

    @classmethod
    def resume(cls, run_id: str) -> "RunLogger":
        """Reopen run `run_id` (status RUNNING again); a missing or deleted run is a one-line error."""
        mlf = client()
        live_run(mlf, run_id, "resume")
        mlf.update_run(run_id, status="RUNNING")
        return cls(mlf, run_id)

    def log_params(self, params: dict[str, Any]) -> None:
        from mlflow.entities import Param

        existing = self.mlf.get_run(self.run_id).data.params
        fresh = [Param(k, str(v)[:6000]) for k, v in params.items() if k not in existing]
        for i in range(0, len(fresh), 100):
            self.mlf.log_batch(self.run_id, params=fresh[i:i + 100])

    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        import time

        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        batch = [Metric(k, float(v), now, step or 0) for k, v in metrics.items()]  # NaN is kept: MLflow stores it
        for i in range(0, len(batch), 500):
            self.mlf.log_batch(self.run_id, metrics=batch[i:i + 500])

    def set_tags(self, tags: dict[str, Any]) -> None:
        for k, v in tags.items():
            self.mlf.set_tag(self.run_id, k, str(v))

    def log_dataset(self, name: str, root: str | Path, digest: str, profile: dict[str, Any],
                    context: str = "training") -> None:
        """Record the run's data as an MLflow dataset input: `name`, a local source at `root`, `digest` (lungsound's
        data fingerprint, so equal digests mean the same cycles) and `profile` (split, counts) as JSON."""
        from mlflow.entities import Dataset, DatasetInput, InputTag

        dataset = Dataset(name=name, digest=digest, source_type="local",
                          source=json.dumps({"uri": str(Path(root).resolve())}),
                          profile=json.dumps(profile, sort_keys=True))
        self.mlf.log_inputs(self.run_id, [DatasetInput(dataset, [InputTag(DATA_CONTEXT_TAG, context)])])

    def log_inputs_of(self, run_ids: list[str]) -> None:
        """Record the dataset inputs of other runs (a multi-seed group's children) on this run, each once."""
        seen, inputs = set(), []
        for run_id in run_ids:
            for inp in self.mlf.get_run(run_id).inputs.dataset_inputs:
                key = (inp.dataset.name, inp.dataset.digest, tuple((t.key, t.value) for t in inp.tags))
                if key not in seen:
                    seen.add(key)
                    inputs.append(inp)
        if inputs:
            self.mlf.log_inputs(self.run_id, inputs)

    def log_artifact(self, path: str | Path, artifact_path: str | None = None) -> None:
        if Path(path).is_dir():
            self.mlf.log_artifacts(self.run_id, str(path), artifact_path)
        else:
            self.mlf.log_artifact(self.run_id, str(path), artifact_path)

    def delete_tags(self, keys: list[str]) -> None:
        """Remove those of `keys` the run has (a tag it does not have is no error)."""
        present = self.mlf.get_run(self.run_id).data.tags
        for key in keys:
            if key in present:
                self.mlf.delete_tag(self.run_id, key)

    def end(self, status: str = "FINISHED") -> None:
        self.mlf.set_terminated(self.run_id, status=status)
