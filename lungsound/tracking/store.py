"""The MLflow store: where runs go (`tracking_uri`, `store_exists`), the client (`client`), experiments
(`experiment_id`) and new versions in the Model Registry (`register_model`).

Backend: `$MLFLOW_TRACKING_URI`, else a sqlite store `sqlite:///<cwd>/mlruns/mlflow.db` with artifacts under
`<cwd>/mlruns/artifacts/` (MLflow 3 refuses a plain file store). A new sqlite store, a new experiment and a new model
version are made under a file lock, so processes starting at once do not race. One MLflow experiment per benchmark,
tagged `mlflow.experimentKind = custom_model_development`, MLflow's own mark of a model-training experiment (an
existing experiment without a kind gets it when lungsound first uses it). MLflow 3.17's UI reads its per-browser
"GenAI / Model training" switch instead, so there one click on "Model training" shows the runs tables.

The explicit `MlflowClient` API is used throughout, so nothing depends on a global active run, and every call of it is
tried again when it loses a race with another process (`lungsound.tracking.retry`: sqlite's "database is locked", a
UNIQUE key another process took first).
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Any

from lungsound.errors import LungsoundError, one_line
from lungsound.storage import file_lock
from lungsound.tracking.retry import RetryingClient
from lungsound.tracking.tags import EXPERIMENT_KIND, EXPERIMENT_KIND_TAG


def tracking_uri() -> str:
    uri = os.environ.get("MLFLOW_TRACKING_URI")
    if uri:
        return uri
    store = Path.cwd() / "mlruns"
    store.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{store / 'mlflow.db'}"


def store_exists() -> bool:
    """True when a tracking store is configured ($MLFLOW_TRACKING_URI) or ./mlruns/mlflow.db exists: code that only
    reads (the app, push, validate-external) asks this first, so reading never creates a store."""
    return bool(os.environ.get("MLFLOW_TRACKING_URI")) or (Path.cwd() / "mlruns" / "mlflow.db").is_file()


def _sqlite_lock() -> Path | None:
    uri = tracking_uri()
    return Path(uri[len("sqlite:///"):] + ".lock") if uri.startswith("sqlite:///") else None


def client():
    """An `MlflowClient` on `tracking_uri()` whose calls are retried after a lost race (`RetryingClient`). A new
    sqlite store is created under a lock: two processes starting on a fresh store at once would otherwise both run its
    schema migrations."""
    import mlflow
    from mlflow.tracking import MlflowClient

    uri = tracking_uri()
    mlflow.set_tracking_uri(uri)
    lock = _sqlite_lock()
    with file_lock(lock) if lock else contextlib.nullcontext():
        mlf = RetryingClient(MlflowClient(tracking_uri=uri))
        mlf.search_experiments(max_results=1)  # opens (and if needed creates) the store while the lock is held
    return mlf


def experiment_id(mlf, name: str, create: bool = True) -> str | None:
    """The id of MLflow experiment `name`, created if missing (safe when several processes create it at once), and
    tagged as a custom-model experiment (`EXPERIMENT_KIND_TAG`) when it is not tagged with a kind yet."""
    exp = mlf.get_experiment_by_name(name)
    if exp is not None:
        _tag_kind(mlf, exp)
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
            _tag_kind(mlf, exp)
            return exp.experiment_id
        try:
            return mlf.create_experiment(name, artifact_location=location, tags={EXPERIMENT_KIND_TAG: EXPERIMENT_KIND})
        except Exception:  # another process (on another machine, without our lock) created it first
            exp = mlf.get_experiment_by_name(name)
            if exp is None:
                raise
            _tag_kind(mlf, exp)
            return exp.experiment_id


def _tag_kind(mlf, exp) -> None:
    """Tag an experiment made before lungsound set its kind (or by someone else); a kind already set is kept."""
    if EXPERIMENT_KIND_TAG not in exp.tags:
        mlf.set_experiment_tag(exp.experiment_id, EXPERIMENT_KIND_TAG, EXPERIMENT_KIND)


def register_model(run_id: str, name: str, artifact: str = "model", description: str | None = None,
                   tags: dict[str, Any] | None = None) -> str:
    """Register `runs:/<run_id>/<artifact>` as a new version of registered model `name` (created when missing);
    returns the version number. `models:/<name>/latest` then resolves to it (`lungsound.inference.sources`)."""
    mlf = client()
    lock = _sqlite_lock()
    try:
        with file_lock(lock) if lock else contextlib.nullcontext():  # version numbers are read, then written
            if not _registered_model_exists(mlf, name):
                mlf.create_registered_model(name, description=f"lungsound models of experiment file {name}")
            version = mlf.create_model_version(name, f"runs:/{run_id}/{artifact}", run_id=run_id,
                                               description=description,
                                               tags={k: str(v) for k, v in (tags or {}).items()})
    except Exception as exc:  # mlflow raises its own exception types
        raise LungsoundError(f"cannot register run {run_id} as model {name!r} in {tracking_uri()}: "
                             f"{one_line(exc)}") from None
    return str(version.version)


def _registered_model_exists(mlf, name: str) -> bool:
    from mlflow.exceptions import MlflowException

    try:
        mlf.get_registered_model(name)
    except MlflowException as exc:
        if exc.error_code == "RESOURCE_DOES_NOT_EXIST":
            return False
        raise
    return True
