"""Issue 13, items 5, 6 and 10: comparable runs in `compare`, NaN kept, `predict` per-file errors, broken model folders."""

from __future__ import annotations

import json
import math
from pathlib import Path

import mlflow
import numpy as np
import pytest
import soundfile as sf
import torch

from lungsound.cli import main
from lungsound.results.compare import collect_runs, summarise, to_markdown
from lungsound.errors import LungsoundError
from lungsound.inference import Predictor
from lungsound.tracking import RunLogger
from lungsound.models.folder import load_model
from tests.conftest import random_model


def _log_run(experiment: str, seed: int, score: float, data: str = "d1", lr: str = "5e-05", se: float = 40.0):
    logger = RunLogger.start(experiment, f"r{seed}", {"experiment_file": "exp", "protocol": "paper", "seed": seed,
                                                      "data_fingerprint": data})
    logger.log_params({"train.lr": lr, "train.seed": seed, "tracking.run_name": f"r{seed}", "data.root": f"/x/{seed}"})
    logger.log_metrics({"final_test_score": score, "final_test_sp": 2 * score - se, "final_test_se": se})
    logger.end("FINISHED")
    return logger.run_id


# --- 5. compare -------------------------------------------------------------------------------------------------------

def test_compare_counts_distinct_seeds_and_reports_duplicates(mlflow_store):
    for score in (50.0, 52.0, 54.0, 56.0, 58.0):  # five runs of seed 1: one seed, the newest counts
        _log_run("cmp-dup", 1, score)
    _log_run("cmp-dup", 2, 60.0)
    notes: list[str] = []
    table = summarise(collect_runs(["cmp-dup"]), notes)
    assert len(table) == 1 and table[0]["seeds"] == 2 and table[0]["runs"] == 6
    assert table[0]["score_mean"] == pytest.approx((58.0 + 60.0) / 2) and table[0]["score_std"] == pytest.approx(1.0)
    assert any("seed 1: 5 runs" in n for n in notes)


def test_compare_never_pools_other_data_or_other_overrides(mlflow_store):
    _log_run("cmp-mixed", 1, 50.0, data="aaaa")
    _log_run("cmp-mixed", 1, 70.0, data="bbbb")
    _log_run("cmp-mixed", 2, 30.0, data="aaaa", lr="0.001")
    notes: list[str] = []
    table = summarise(collect_runs(["cmp-mixed"]), notes)
    assert sorted(r["score_mean"] for r in table) == [30.0, 50.0, 70.0] and all(r["seeds"] == 1 for r in table)
    assert any("2 different data sets" in n for n in notes)
    md = to_markdown(table, notes=notes)
    assert "train.lr=0.001" in md and "data bbbb" in md


def test_nan_metrics_are_logged_and_shown(mlflow_store):
    run_id = _log_run("cmp-nan", 1, float("nan"))
    _log_run("cmp-nan", 2, 60.0)
    assert math.isnan(mlflow.get_run(run_id).data.metrics["final_test_score"])  # kept in the store
    notes: list[str] = []
    table = summarise(collect_runs(["cmp-nan"]), notes)
    assert math.isnan(table[0]["score_mean"]) and table[0]["seeds"] == 2
    assert "| NaN |" in to_markdown(table, notes=notes) and any("score is NaN in 1 of 2" in n for n in notes)


# --- 6. predict: every file gets its result or its one-line error ---------------------------------------------------

@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    return random_model(tmp_path_factory.mktemp("m") / "model")


def _wav(path: Path, seconds: float = 4.0) -> Path:
    rng = np.random.default_rng(1)
    sf.write(path, (0.1 * rng.standard_normal(int(seconds * 8000))).astype(np.float32), 8000)
    return path


def test_predict_keeps_other_results_when_one_file_fails_unexpectedly(model_dir, tmp_path, monkeypatch, capsys):
    good, bad = _wav(tmp_path / "good.wav"), _wav(tmp_path / "bad.wav")
    real = Predictor.predict

    def flaky(self, path, **kwargs):
        if Path(path).name == "bad.wav":
            raise RuntimeError("something nobody foresaw\nsecond line")
        return real(self, path, **kwargs)

    monkeypatch.setattr(Predictor, "predict", flaky)
    assert main(["predict", "--checkpoint", str(model_dir), "--json", str(bad), str(good)]) == 2
    out, err = capsys.readouterr()
    assert [r["file"] for r in json.loads(out)] == [str(good)]
    errors = [line for line in err.splitlines() if line.startswith("lungsound: error:")]  # (warnings may precede)
    assert errors == [f"lungsound: error: {bad}: unexpected RuntimeError: something nobody foresaw"]


# --- 10. broken model folders -----------------------------------------------------------------------------------------

def _copy(model_dir: Path, dest: Path) -> Path:
    import shutil

    return Path(shutil.copytree(model_dir, dest))


@pytest.mark.parametrize("name, content, message", [
    ("meta.json", '{"selected_epoch": 1, "calib', "corrupt meta.json"),
    ("meta.json", "[1, 2, 3]", "meta.json must hold a JSON object"),
    ("meta.json", '{"calibration": {"temperature": "hot"}}', "temperature must be a positive number"),
    ("meta.json", '{"calibration": {"temperature": -1}}', "temperature must be a positive number"),
    ("meta.json", '{"calibration": [1]}', "'calibration' must be an object"),
    ("config.yaml", "", "config.yaml is empty"),
    ("config.yaml", "model: [", "unreadable config.yaml"),
    ("config.yaml", "model:\n  name: ast_tiny\n  params:\n    embed_dim: 48\ndata:\n  duration: 2.0\n",
     "does not fit the model"),
    ("config.yaml", "model:\n  name: ast_tiny\n  params:\n    hidden_size: 32\n",
     "unknown config key\\(s\\) hidden_size"),
    ("model.safetensors", "not tensors", "corrupt model.safetensors"),
])
def test_broken_model_folders_give_one_line(model_dir, tmp_path, capsys, name, content, message):
    folder = _copy(model_dir, tmp_path / "broken")
    (folder / name).write_text(content)
    with pytest.raises(LungsoundError, match=message) as info:
        load_model(folder)
    assert "\n" not in str(info.value) and str(folder) in str(info.value)
    audio = _wav(tmp_path / "a.wav")
    for argv in (["predict", "--checkpoint", str(folder), str(audio)], ["evaluate", "--checkpoint", str(folder)]):
        assert main(argv) == 2
        err = capsys.readouterr().err.strip()
        assert err.count("\n") == 0 and message.split()[0] in err


def test_a_checkpoint_config_never_makes_load_model_fetch_weights(model_dir, tmp_path):
    import yaml

    folder = _copy(model_dir, tmp_path / "with-weights")
    cfg = yaml.safe_load((folder / "config.yaml").read_text())
    cfg["model"]["pretrained"] = "MIT/ast-finetuned-audioset-10-10-0.4593"
    cfg["model"]["params"]["weights"] = str(tmp_path / "nowhere" / "weights.pth")
    (folder / "config.yaml").write_text(yaml.safe_dump(cfg))
    model, _, _ = load_model(folder)  # neither the hub id nor the missing file is touched
    assert isinstance(model, torch.nn.Module)
