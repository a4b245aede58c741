"""How runs are found again: every read of the MLflow store outside a `RunLogger` goes through these functions.

Runs: `find_run` (by id, a one-line error when the store has none), `live_run` (the same, and a deleted run refused
or warned about), `finished_runs` (the finished runs of experiments), `run_of_model_folder` (the run that wrote a
model folder). Multi-seed groups (one parent, one child per
seed; `lungsound.training.seeds`): `group_parents` (the parents of one run name, newest first) and `children_of`.
Experiments: `find_experiments`, `find_experiment`, `experiment_name`. Artifacts: `artifact_paths`,
`download_artifacts`. The Model
Registry: `registered_models`, `model_versions`, `model_version` (a number, `latest` or an alias). Each takes the
client (`lungsound.tracking.client`) first, so one client serves a whole lookup; the tag names are those of
`lungsound.tracking.tags`.

Deleted runs (MLflow's trash, `lifecycle_stage` "deleted", until `mlflow gc`): `live_run` refuses one in one line for
what would write to it (resume, push, logging an external validation) and warns, naming it, where it is only read
(predict, evaluate, export: `download_artifacts`).
"""

from __future__ import annotations

import warnings
from pathlib import Path

from lungsound.errors import LungsoundError, one_line
from lungsound.tracking.store import client, tracking_uri
from lungsound.tracking.tags import PARENT_ROLE, PARENT_TAG, ROLE_TAG, RUN_FOLDER_TAG, RUN_NAME_TAG, equals

FINISHED = "attributes.status = 'FINISHED'"
NEWEST_FIRST = ["attributes.start_time DESC"]
MAX_RUNS = 5000  # runs read per query (an experiment of a benchmark holds some hundreds)


# --- runs -------------------------------------------------------------------------------------------------------------

def find_run(mlf, run_id: str):
    """The run `run_id`; a one-line error naming the store when it has none (or cannot say)."""
    try:
        return mlf.get_run(run_id)
    except Exception as exc:  # mlflow raises its own exception types
        raise LungsoundError(f"no MLflow run {run_id} in {tracking_uri()}: {one_line(exc)}") from None


def live_run(mlf, run_id: str, use: str, refuse: bool = True):
    """The MLflow run `run_id` (a one-line error when there is none). A deleted run (in the store's trash) is refused
    in one line saying it cannot be used to `use` when `refuse`, else used with a warning naming it."""
    return check_live(find_run(mlf, run_id), use, refuse)


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


def finished_runs(mlf, experiment_ids: list[str], newest_first: bool = False, max_results: int = MAX_RUNS) -> list:
    """The FINISHED runs of the given MLflow experiments (newest first when asked)."""
    return mlf.search_runs(experiment_ids, filter_string=FINISHED, max_results=max_results,
                           **({"order_by": NEWEST_FIRST} if newest_first else {}))


def run_of_model_folder(mlf, folder: str | Path):
    """The newest run whose `run_folder` tag (set by `lungsound train`) is the folder holding this model folder
    (`<run folder>/best`) or the folder itself; None when no run records it."""
    from mlflow.entities import ViewType

    resolved = Path(folder).resolve()
    resolved = resolved.parent if resolved.is_file() else resolved
    candidates = [str(resolved.parent), str(resolved)] if resolved.name == "best" else [str(resolved)]
    experiment_ids = [e.experiment_id for e in mlf.search_experiments(view_type=ViewType.ACTIVE_ONLY)]
    for candidate in candidates if experiment_ids else []:
        runs = mlf.search_runs(experiment_ids, filter_string=equals(RUN_FOLDER_TAG, candidate), max_results=1,
                               order_by=NEWEST_FIRST)
        if runs:
            return runs[0]
    return None


# --- multi-seed groups ------------------------------------------------------------------------------------------------

def group_parents(mlf, experiment: str, run_name: str) -> list:
    """The parent runs named `run_name` in MLflow experiment `experiment` (any status), newest first; [] when the
    experiment does not exist (nothing is created)."""
    exp = find_experiment(mlf, experiment)
    if exp is None:
        return []
    return mlf.search_runs([exp.experiment_id], filter_string=f"{equals(RUN_NAME_TAG, run_name)} and "
                                                              f"{equals(ROLE_TAG, PARENT_ROLE)}",
                           order_by=NEWEST_FIRST, max_results=1000)


def children_of(mlf, parent_run_id: str, experiment_id: str | None = None) -> list:
    """The MLflow runs of a multi-seed group's children (every attempt, in no particular order). `experiment_id`: the
    group's experiment, when known (the parent need not exist any more); else the parent's."""
    if experiment_id is None:
        experiment_id = mlf.get_run(parent_run_id).info.experiment_id
    return mlf.search_runs([experiment_id], filter_string=equals(PARENT_TAG, parent_run_id), max_results=MAX_RUNS)


# --- experiments and artifacts ----------------------------------------------------------------------------------------

def find_experiments(mlf, names: list[str] | None = None) -> list:
    """The store's (active) MLflow experiments; with `names`, those, and a one-line error naming any it lacks."""
    found = mlf.search_experiments()
    if not names:
        return found
    known = {e.name for e in found}
    missing = [n for n in names if n not in known]
    if missing:
        raise LungsoundError(f"no MLflow experiment named {', '.join(missing)}; known: {', '.join(sorted(known))}")
    return [e for e in found if e.name in names]


def find_experiment(mlf, name: str):
    """The MLflow experiment `name`, or None (nothing is created or tagged: a read)."""
    return mlf.get_experiment_by_name(name)


def experiment_name(mlf, experiment_id: str) -> str | None:
    experiment = mlf.get_experiment(experiment_id)
    return experiment.name if experiment else None


def artifact_paths(mlf, run_id: str, path: str | None = None) -> list[str]:
    """The paths of a run's artifacts (those directly under `path`, when given)."""
    return [a.path for a in mlf.list_artifacts(run_id, path)]


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
    raise LungsoundError(f"run {run_id} has no artifact '{path}' in {tracking_uri()}: {one_line(missing)}")


# --- the Model Registry -----------------------------------------------------------------------------------------------

def registered_models(mlf, max_results: int = 100) -> list[str]:
    """The names of the registered models."""
    return [m.name for m in mlf.search_registered_models(max_results=max_results)]


def model_versions(mlf, name: str) -> list:
    """Every version of registered model `name`."""
    return mlf.search_model_versions(f"name = '{name}'")


def model_version(mlf, name: str, version: str | None = None, alias: str | None = None):
    """One version of registered model `name`: a number, `latest` (the highest, as MLflow itself reads
    `models:/<name>/latest`: the newest of the latest version of each stage; MLflow 3's `get_model_version` does not
    take 'latest', and `get_latest_versions` is deprecated with the stages; the registered model's own
    `latest_versions` holds the same list), or the one an `alias` points to. MLflow's own error when there is none."""
    if alias is not None:
        return mlf.get_model_version_by_alias(name, alias)
    if str(version).lower() != "latest":
        return mlf.get_model_version(name, version)
    versions = mlf.get_registered_model(name).latest_versions  # an unknown name fails here, MLflow's "not found"
    if not versions:
        raise LungsoundError(f"registered model 'models:/{name}/latest': {name!r} has no versions in the store")
    return max(versions, key=lambda v: int(v.version))
