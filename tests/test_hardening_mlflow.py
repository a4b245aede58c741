"""Issue 19, items 4 and 16: MLflow writes that lose a race are tried again and no write happens outside the guard that
ends a run; deleted runs are refused for what writes to them and warned about where they are only read."""

from __future__ import annotations

import sqlite3

import mlflow
import numpy as np
import pytest
import sqlalchemy.exc

from lungsound.tracking import retry
from lungsound.cli import main
from lungsound.config import load_config
from lungsound.errors import LungsoundError
from lungsound.external.record import log_to_run
from lungsound.inference import Predictor
from lungsound.tracking.retry import ATTEMPTS, is_transient, retry_store
from lungsound.tracking import RunLogger, client
from lungsound.training.run import fit
from lungsound.training.seeds import start_parent
from tests.conftest import random_model


def one_error(capsys, argv: list[str]) -> str:
    assert main(argv) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("lungsound: error: "), lines
    return lines[0]


# --- 4. races and the guard ------------------------------------------------------------------------------------------

def test_a_dataset_another_process_inserted_meanwhile_is_logged_on_the_next_try(mlflow_store, monkeypatch):
    """The interleaving of the failed start: run B looks the dataset up, finds it missing, and A's insert lands before
    B's, so B's insert hits the datasets UNIQUE key (experiment, name, digest) - a real IntegrityError of the store."""
    from mlflow.store.tracking.dbmodels.models import SqlDataset
    from sqlalchemy.orm import Query

    a, b = RunLogger.start("raced-data", "a", {}), RunLogger.start("raced-data", "b", {})
    a.log_dataset("data", "/data", "f00d", {"train_cycles": 1})
    missed, real_all = [], Query.all

    def lookup(query):
        if not missed and query.column_descriptions[0]["entity"] is SqlDataset:
            missed.append(query)
            return []  # B looked before A's insert was visible
        return real_all(query)

    monkeypatch.setattr(Query, "all", lookup)
    b.log_dataset("data", "/data", "f00d", {"train_cycles": 1})
    assert len(missed) == 1
    for logger in (a, b):
        inputs = client().get_run(logger.run_id).inputs.dataset_inputs
        assert [(i.dataset.name, i.dataset.digest) for i in inputs] == [("data", "f00d")]


def _locked() -> Exception:
    """What MLflow raises when sqlite's write lock was held too long: its exception raised while handling the
    driver's (sqlalchemy's OperationalError around sqlite3's)."""
    from mlflow.exceptions import MlflowException

    driver = sqlalchemy.exc.OperationalError("INSERT INTO runs", {}, sqlite3.OperationalError("database is locked"))
    try:
        raise driver
    except sqlalchemy.exc.OperationalError as exc:
        try:
            raise MlflowException(exc)
        except MlflowException as wrapped:
            return wrapped


def test_retries_are_bounded_and_only_for_lost_races(monkeypatch):
    waits = []
    monkeypatch.setattr(retry.time, "sleep", waits.append)
    calls = []

    def always_locked():
        calls.append(1)
        raise _locked()

    assert is_transient(_locked()) and not is_transient(ValueError("Run 'x' not found"))
    with pytest.raises(Exception, match="database is locked"):
        retry_store(always_locked)
    assert len(calls) == ATTEMPTS and len(waits) == ATTEMPTS - 1
    assert all(0.05 * 2 ** k <= w <= 0.1 * 2 ** k for k, w in enumerate(waits))  # doubling, with jitter

    def once_locked():
        calls.append(2)
        if calls.count(2) == 1:
            raise _locked()
        return "written"

    assert retry_store(once_locked) == "written" and calls.count(2) == 2
    with pytest.raises(KeyError):
        retry_store(lambda: calls.append(3) or {}["x"])
    assert calls.count(3) == 1


def test_a_failed_write_after_a_run_starts_ends_it(small_icbhi, tmp_path, mlflow_store, monkeypatch):
    def broken(self, *args, **kwargs):
        raise RuntimeError("the store went away")

    monkeypatch.setattr(RunLogger, "log_dataset", broken)
    cfg = load_config(None, [f"data.root={small_icbhi}", "data.duration=2.0", "model.name=ast_tiny",
                             "train.epochs=1", "tracking.experiment=guarded", f"tracking.output_dir={tmp_path}/out"])
    with pytest.raises(RuntimeError, match="the store went away"):
        fit(cfg, progress=False)
    assert list(mlflow.search_runs(experiment_names=["guarded"])["status"]) == ["FAILED"]
    monkeypatch.setattr(RunLogger, "log_artifact", broken)
    with pytest.raises(RuntimeError, match="the store went away"):
        start_parent(load_config(None, ["tracking.experiment=guarded-parent"]), [1, 2])
    assert list(mlflow.search_runs(experiment_names=["guarded-parent"])["status"]) == ["FAILED"]


def test_a_sweep_whose_second_cell_cannot_open_ends_the_first_cells_parent(mlflow_store, monkeypatch):
    from lungsound.sweeps import sweep

    real = sweep.open_group

    def second_fails(cell, seeds):
        if cell.name == "b":
            raise RuntimeError("the store went away")
        return real(cell, seeds)

    monkeypatch.setattr(sweep, "open_group", second_fails)
    cfg = load_config(None, ["tracking.experiment=guarded-sweep"])
    with pytest.raises(RuntimeError, match="the store went away"):
        sweep.run_sweep([sweep.Cell("a", cfg), sweep.Cell("b", cfg)], [1])
    assert list(mlflow.search_runs(experiment_names=["guarded-sweep"])["status"]) == ["FAILED"]


# --- 16. deleted runs ------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def deleted_run(mlflow_store, tmp_path_factory) -> str:
    logger = RunLogger.start("trash", "gone", {})
    logger.log_artifact(random_model(tmp_path_factory.mktemp("trash") / "best"), "model")
    logger.end("FINISHED")
    client().delete_run(logger.run_id)
    return logger.run_id


def test_a_deleted_run_predicts_with_a_warning(deleted_run):
    with pytest.warns(UserWarning, match=f"MLflow run {deleted_run} is deleted .*; used anyway to read its artifact"):
        predictor = Predictor.from_mlflow(deleted_run)
    x = 0.1 * np.random.default_rng(0).standard_normal(3 * 16000).astype(np.float32)
    assert predictor.predict(x, 16000).segments


def test_resuming_a_deleted_run_is_refused_in_one_line(deleted_run, capsys):
    with pytest.raises(LungsoundError, match=f"^MLflow run {deleted_run} is deleted .*: cannot resume it; restore"):
        RunLogger.resume(deleted_run)
    line = one_error(capsys, ["train", "--resume", deleted_run])
    assert f"MLflow run {deleted_run} is deleted" in line and "cannot resume it" in line
    assert client().get_run(deleted_run).info.status == "FINISHED"  # nothing was changed


def test_pushing_or_logging_to_a_deleted_run_is_refused(deleted_run, tmp_path, capsys):
    line = one_error(capsys, ["push", "--run-id", deleted_run, "--repo-id", "alice/m", "--out", str(tmp_path / "s")])
    assert f"MLflow run {deleted_run} is deleted" in line and "cannot push it" in line
    assert not (tmp_path / "s").exists()
    with pytest.raises(LungsoundError, match="cannot log an external validation to it"):
        log_to_run(deleted_run, {"dataset": "kauh"})
