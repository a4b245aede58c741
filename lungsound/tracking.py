"""MLflow tracking: where runs go, what each run records, and how runs are found again.

Backend: `$MLFLOW_TRACKING_URI`, else a sqlite store `sqlite:///<cwd>/mlruns/mlflow.db` with artifacts under
`<cwd>/mlruns/artifacts/` (MLflow 3 refuses a plain file store). One MLflow experiment per benchmark. Every run gets the
flattened config as params, metrics per epoch, and tags: git commit and dirty flag, package versions, hardware, protocol,
method, data fingerprint. The explicit `MlflowClient` API is used throughout, so nothing depends on a global active run.
"""

from __future__ import annotations

import contextlib
import os
import platform
import subprocess
from pathlib import Path
from typing import Any, Iterator

from lungsound.errors import LungsoundError

PARENT_TAG = "mlflow.parentRunId"


def tracking_uri() -> str:
    uri = os.environ.get("MLFLOW_TRACKING_URI")
    if uri:
        return uri
    store = Path.cwd() / "mlruns"
    store.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{store / 'mlflow.db'}"


def _sqlite_lock() -> Path | None:
    uri = tracking_uri()
    return Path(uri[len("sqlite:///"):] + ".lock") if uri.startswith("sqlite:///") else None


def client():
    """An `MlflowClient` on `tracking_uri()`. A new sqlite store is created under a lock: two processes starting on a
    fresh store at once would otherwise both run its schema migrations."""
    import contextlib

    import mlflow
    from mlflow.tracking import MlflowClient

    from lungsound.storage import file_lock

    uri = tracking_uri()
    mlflow.set_tracking_uri(uri)
    lock = _sqlite_lock()
    with file_lock(lock) if lock else contextlib.nullcontext():
        mlf = MlflowClient(tracking_uri=uri)
        mlf.search_experiments(max_results=1)  # opens (and if needed creates) the store while the lock is held
    return mlf


def experiment_id(mlf, name: str, create: bool = True) -> str | None:
    """The id of MLflow experiment `name`, created if missing; safe when several processes create it at once."""
    import contextlib

    from lungsound.storage import file_lock

    exp = mlf.get_experiment_by_name(name)
    if exp is not None:
        return exp.experiment_id
    if not create:
        return None
    location = None
    uri = tracking_uri()
    if uri.startswith("sqlite:///"):
        location = (Path(uri[len("sqlite:///"):]).parent / "artifacts" / name).as_uri()
    lock = _sqlite_lock()
    with file_lock(lock) if lock else contextlib.nullcontext():
        exp = mlf.get_experiment_by_name(name)
        if exp is not None:
            return exp.experiment_id
        try:
            return mlf.create_experiment(name, artifact_location=location)
        except Exception:  # another process (on another machine, without our lock) created it first
            exp = mlf.get_experiment_by_name(name)
            if exp is None:
                raise
            return exp.experiment_id


def git_state() -> dict[str, str]:
    """Commit and dirty flag of the checkout this package runs from ('unknown' outside git)."""
    repo = Path(__file__).resolve().parents[1]
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=repo, capture_output=True, text=True,
                                timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=repo,
                               capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return {"git_commit": "unknown", "git_dirty": "unknown"}
    return {"git_commit": commit or "unknown", "git_dirty": str(bool(dirty)).lower() if commit else "unknown"}


def environment_tags() -> dict[str, str]:
    import mlflow
    import numpy
    import torch
    import transformers

    import lungsound

    if torch.cuda.is_available():
        hardware = f"{torch.cuda.device_count()} x {torch.cuda.get_device_name(0)}"
    else:
        hardware = f"cpu ({os.cpu_count()} cores, {platform.machine()})"
    return {
        **git_state(),
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
        mlf = client()
        try:
            mlf.get_run(run_id)
        except Exception as exc:  # mlflow raises its own exception types
            raise LungsoundError(f"cannot resume MLflow run {run_id} in {tracking_uri()}: {exc}") from None
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

    def log_artifact(self, path: str | Path, artifact_path: str | None = None) -> None:
        if Path(path).is_dir():
            self.mlf.log_artifacts(self.run_id, str(path), artifact_path)
        else:
            self.mlf.log_artifact(self.run_id, str(path), artifact_path)

    def end(self, status: str = "FINISHED") -> None:
        self.mlf.set_terminated(self.run_id, status=status)


def download_artifacts(run_id: str, path: str, dest: str | Path) -> Path:
    """Fetch an artifact folder of a run (e.g. 'model') to `dest`."""
    mlf = client()
    try:
        return Path(mlf.download_artifacts(run_id, path, str(dest)))
    except Exception as exc:
        raise LungsoundError(f"run {run_id} has no artifact '{path}' in {tracking_uri()}: {exc}") from None
