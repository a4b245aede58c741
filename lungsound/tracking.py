"""MLflow tracking: where runs go, what each run records, and how runs are found again.

Backend: `$MLFLOW_TRACKING_URI`, else a sqlite store `sqlite:///<cwd>/mlruns/mlflow.db` with artifacts under
`<cwd>/mlruns/artifacts/` (MLflow 3 refuses a plain file store). One MLflow experiment per benchmark, tagged
`mlflow.experimentKind = custom_model_development`, MLflow's own mark of a model-training experiment (an existing
experiment without a kind gets it when lungsound first uses it). MLflow 3.17's UI reads its per-browser
"GenAI / Model training" switch instead, so there one click on "Model training" shows the runs tables.
Every run gets the flattened config as params, metrics per epoch, its data as an MLflow dataset input
(`RunLogger.log_dataset`: name, source, digest = the data fingerprint, split and counts), and tags: MLflow's own
`mlflow.source.git.commit` (only when the package runs from a git checkout) and `mlflow.source.name`, lungsound's git
commit and dirty flag, package versions, hardware, protocol, method, data fingerprint.
`register_model` adds a run's model to the Model Registry as a new version. The explicit `MlflowClient` API is used
throughout, so nothing depends on a global active run, and every call of it is tried again when it loses a race with
another process (`lungsound.store_retry`: sqlite's "database is locked", a UNIQUE key another process took first).

Deleted runs (MLflow's trash, `lifecycle_stage` "deleted", until `mlflow gc`): `live_run` refuses one in one line for
what would write to it (resume, push, logging an external validation) and warns, naming it, where it is only read
(predict, evaluate, export: `download_artifacts`).
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import subprocess
import sys
import warnings
from pathlib import Path
from typing import Any, Iterator

from lungsound.errors import LungsoundError
from lungsound.store_retry import RetryingClient

PARENT_TAG = "mlflow.parentRunId"
EXPERIMENT_KIND_TAG = "mlflow.experimentKind"  # MLflow 3's experiment kind (GenAI or model training)
EXPERIMENT_KIND = "custom_model_development"
GIT_COMMIT_TAG = "mlflow.source.git.commit"
SOURCE_NAME_TAG, SOURCE_TYPE_TAG = "mlflow.source.name", "mlflow.source.type"
DATA_CONTEXT_TAG = "mlflow.data.context"


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


def run_of_model_folder(mlf, folder: str | Path):
    """The newest run whose `run_folder` tag (set by `lungsound train`) is the folder holding this model folder
    (`<run folder>/best`) or the folder itself; None when no run records it."""
    from mlflow.entities import ViewType

    resolved = Path(folder).resolve()
    resolved = resolved.parent if resolved.is_file() else resolved
    candidates = [str(resolved.parent), str(resolved)] if resolved.name == "best" else [str(resolved)]
    experiments = [e.experiment_id for e in mlf.search_experiments(view_type=ViewType.ACTIVE_ONLY)]
    for candidate in candidates if experiments else []:
        quoted = candidate.replace("'", "\\'")
        runs = mlf.search_runs(experiments, filter_string=f"tags.run_folder = '{quoted}'", max_results=1,
                               order_by=["attributes.start_time DESC"])
        if runs:
            return runs[0]
    return None


def _sqlite_lock() -> Path | None:
    uri = tracking_uri()
    return Path(uri[len("sqlite:///"):] + ".lock") if uri.startswith("sqlite:///") else None


def client():
    """An `MlflowClient` on `tracking_uri()` whose calls are retried after a lost race (`RetryingClient`). A new
    sqlite store is created under a lock: two processes starting on a fresh store at once would otherwise both run its
    schema migrations."""
    import mlflow
    from mlflow.tracking import MlflowClient

    from lungsound.storage import file_lock

    uri = tracking_uri()
    mlflow.set_tracking_uri(uri)
    lock = _sqlite_lock()
    with file_lock(lock) if lock else contextlib.nullcontext():
        mlf = RetryingClient(MlflowClient(tracking_uri=uri))
        mlf.search_experiments(max_results=1)  # opens (and if needed creates) the store while the lock is held
    return mlf


def live_run(mlf, run_id: str, use: str, refuse: bool = True):
    """The MLflow run `run_id` (a one-line error when there is none). A deleted run (in the store's trash) is refused
    in one line saying it cannot be used to `use` when `refuse`, else used with a warning naming it."""
    try:
        run = mlf.get_run(run_id)
    except Exception as exc:  # mlflow raises its own exception types
        raise LungsoundError(f"no MLflow run {run_id} in {tracking_uri()}: {_first_line(exc)}") from None
    return check_live(run, use, refuse)


def check_live(run, use: str, refuse: bool = True):
    """`run` itself unless it is deleted: then refused or warned about as `live_run` says."""
    run_id = run.info.run_id
    if run.info.lifecycle_stage == "deleted":
        restore = f"`mlflow runs restore --run-id {run_id}`"
        if refuse:
            raise LungsoundError(f"MLflow run {run_id} is deleted (in the trash of {tracking_uri()}): cannot {use} it; "
                                 f"restore it first with {restore}")
        warnings.warn(f"MLflow run {run_id} is deleted (in the trash of {tracking_uri()}); used anyway to {use} "
                      f"(restore it with {restore}, or `mlflow gc` removes it for good)", stacklevel=3)
    return run


def experiment_id(mlf, name: str, create: bool = True) -> str | None:
    """The id of MLflow experiment `name`, created if missing (safe when several processes create it at once), and
    tagged as a custom-model experiment (`EXPERIMENT_KIND_TAG`) when it is not tagged with a kind yet."""
    from lungsound.storage import file_lock

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
    repo = Path(__file__).resolve().parents[1]
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

    import lungsound

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

    def end(self, status: str = "FINISHED") -> None:
        self.mlf.set_terminated(self.run_id, status=status)


def download_artifacts(run_id: str, path: str, dest: str | Path) -> Path:
    """Fetch an artifact folder of a run (e.g. 'model') to `dest`; a deleted run gives a warning (`live_run`)."""
    mlf = client()
    try:
        run = mlf.get_run(run_id)
    except Exception as exc:
        run, missing = None, exc
    if run is not None:
        check_live(run, f"read its artifact '{path}'", refuse=False)
        try:
            return Path(mlf.download_artifacts(run_id, path, str(dest)))
        except Exception as exc:
            missing = exc
    raise LungsoundError(f"run {run_id} has no artifact '{path}' in {tracking_uri()}: {_first_line(missing)}")


def register_model(run_id: str, name: str, artifact: str = "model", description: str | None = None,
                   tags: dict[str, Any] | None = None) -> str:
    """Register `runs:/<run_id>/<artifact>` as a new version of registered model `name` (created when missing);
    returns the version number. `models:/<name>/latest` then resolves to it (`lungsound.inference.sources`)."""
    from lungsound.storage import file_lock

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
                             f"{_first_line(exc)}") from None
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


def _first_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return lines[0][:300] if lines else type(exc).__name__
