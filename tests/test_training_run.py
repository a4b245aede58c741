"""The training engine end to end on CPU: MLflow records, checkpoints, resume, seeds, evaluate and compare."""

from __future__ import annotations

import json

import mlflow
import pytest

from lungsound.cli import main
from lungsound.config import load_config
from lungsound.results.reports import evaluate_checkpoint
from lungsound.models.folder import load_model
from lungsound.training.run import fit

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


def tiny_cfg(root, tmp_path, *extra):
    return load_config(None, [f"data.root={root}", "data.duration=2.0", "model.name=ast_tiny", "train.epochs=2",
                              "train.batch_size=4", "tracking.experiment=unit", f"tracking.output_dir={tmp_path}/out",
                              "method.class_weighted=true", *extra])


def test_fit_records_run_metrics_and_checkpoint(small_icbhi, tmp_path, mlflow_store):
    result = fit(tiny_cfg(small_icbhi, tmp_path), progress=False)
    runs = mlflow.search_runs(experiment_names=["unit"])
    assert len(runs) == 1 and runs.loc[0, "run_id"] == result.run_id and runs.loc[0, "status"] == "FINISHED"
    assert runs.loc[0, "metrics.final_test_score"] == pytest.approx(result.metrics["final_test_score"])
    assert runs.loc[0, "params.train.lr"] == "5e-05" and runs.loc[0, "tags.protocol"] == "paper"
    for tag in ("git_commit", "git_dirty", "torch_version", "hardware", "data_fingerprint"):
        assert runs.loc[0, f"tags.{tag}"]
    client = mlflow.MlflowClient()
    history = client.get_metric_history(result.run_id, "test_score")
    assert [m.step for m in history] == [1, 2]
    names = {a.path for a in client.list_artifacts(result.run_id)} | \
        {a.path for a in client.list_artifacts(result.run_id, "model")} | \
        {a.path for a in client.list_artifacts(result.run_id, "report")}
    assert {"config.yaml", "model/model.safetensors", "model/config.yaml", "report/confusion_matrix.png",
            "report/per_class.csv", "report/per_device.md"} <= names
    # The selected checkpoint re-evaluates to the logged final score, from the folder and from the run id.
    model, cfg, meta = load_model(result.checkpoint)
    assert meta["selected_epoch"] == result.selected_epoch and cfg.model.name == "ast_tiny"
    again = evaluate_checkpoint(checkpoint=result.checkpoint)
    assert again["metrics"]["test_score"] == pytest.approx(result.metrics["final_test_score"])
    by_run = evaluate_checkpoint(run_id=result.run_id)
    assert by_run["metrics"]["test_score"] == pytest.approx(result.metrics["final_test_score"])


def test_resume_matches_uninterrupted_run(small_icbhi, tmp_path, mlflow_store):
    full = fit(tiny_cfg(small_icbhi, tmp_path, "train.epochs=3", "tracking.run_name=full",
                         "tracking.experiment=unit-resume"), progress=False)
    part = fit(tiny_cfg(small_icbhi, tmp_path, "train.epochs=3", "tracking.run_name=part",
                         "tracking.experiment=unit-resume"), stop_after=1,
               progress=False)
    assert not part.finished and len(part.history) == 1
    resumed = fit(None, resume=part.checkpoint.parent / "last.pt", progress=False)
    assert resumed.run_id == part.run_id and resumed.finished
    assert [h["train_loss"] for h in resumed.history] == [h["train_loss"] for h in full.history]
    assert resumed.metrics == full.metrics
    run = mlflow.get_run(part.run_id)
    assert run.info.status == "FINISHED" and run.data.metrics["final_test_score"] == full.metrics["final_test_score"]


def test_clean_protocol_selects_on_validation(small_icbhi, tmp_path, mlflow_store):
    result = fit(tiny_cfg(small_icbhi, tmp_path, "train.protocol=clean", "data.val_fraction=0.25",
                         "tracking.experiment=unit-clean"), progress=False)
    assert "final_val_score" in result.metrics and "final_test_score" in result.metrics
    assert mlflow.get_run(result.run_id).data.tags["selection"] == "val"


def test_cli_seeds_parent_children_and_compare(small_icbhi, tmp_path, mlflow_store, capsys):
    args = ["train", "--quiet", "--seeds", "1-2", f"data.root={small_icbhi}", "data.duration=2.0",
            "model.name=ast_tiny", "train.epochs=1", "train.batch_size=4", "tracking.experiment=seeds",
            f"tracking.output_dir={tmp_path}/out"]
    assert main(args) == 0
    runs = mlflow.search_runs(experiment_names=["seeds"])
    parent = runs[runs["tags.role"] == "parent"]
    children = runs[runs["tags.mlflow.parentRunId"] == parent["run_id"].iloc[0]]
    assert len(parent) == 1 and len(children) == 2
    scores = children["metrics.final_test_score"].to_numpy()
    assert parent["metrics.final_test_score_mean"].iloc[0] == pytest.approx(scores.mean())
    assert parent["metrics.final_test_score_std"].iloc[0] == pytest.approx(scores.std())
    capsys.readouterr()
    assert main(["compare", "--experiment", "seeds", "--out", str(tmp_path / "cmp")]) == 0
    table = capsys.readouterr().out
    assert "| experiment | protocol | seeds |" in table and "| experiment | paper | 2 |" in table
    assert (tmp_path / "cmp" / "comparison.png").stat().st_size > 0
    assert (tmp_path / "cmp" / "comparison.csv").read_text().count("\n") == 2


def test_cli_errors_are_one_line(tmp_path, mlflow_store, capsys):
    assert main(["train", "train.epochz=1"]) == 2
    assert "unknown key(s) train.epochz" in capsys.readouterr().err
    assert main(["evaluate", "--checkpoint", str(tmp_path)]) == 2
    assert "not a lungsound checkpoint: model.safetensors is missing" in capsys.readouterr().err
    assert main(["compare", "--experiment", "nothing-here"]) == 2
    assert "no MLflow experiment named nothing-here" in capsys.readouterr().err


def test_clean_protocol_calibrates_on_validation(small_icbhi, tmp_path, mlflow_store):
    result = fit(tiny_cfg(small_icbhi, tmp_path, "train.protocol=clean", "data.val_fraction=0.25",
                          "train.epochs=1", "tracking.experiment=unit-calib"), progress=False)
    _, _, meta = load_model(result.checkpoint)
    calib = meta["calibration"]
    assert calib["temperature"] > 0 and calib["n"] > 0
    assert result.metrics["calibration_temperature"] == pytest.approx(calib["temperature"])
    report = {a.path for a in mlflow.MlflowClient().list_artifacts(result.run_id, "report")}
    assert "report/reliability_diagram.png" in report
