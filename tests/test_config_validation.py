"""Config range checks: every bad value is a one-line LungsoundError naming the file and the key, before any work."""

from __future__ import annotations

from pathlib import Path

import pytest

from lungsound.cli import main
from lungsound.config import config_from_dict, load_config
from lungsound.errors import LungsoundError

# (override, the key the message must name). Each of these used to load without complaint or crash with a traceback.
BAD_OVERRIDES = [
    ("train.epochs=0", "train.epochs"),
    ("train.epochs=-3", "train.epochs"),
    ("train.batch_size=0", "train.batch_size"),
    ("train.eval_batch_size=0", "train.eval_batch_size"),
    ("train.lr=-1", "train.lr"),
    ("train.lr=0", "train.lr"),
    ("train.lr=nan", "train.lr"),  # YAML reads the bare word as a string; float('nan') used to slip through
    ("train.lr=.nan", "train.lr"),
    ("train.lr=.inf", "train.lr"),
    ("train.weight_decay=-1e-6", "train.weight_decay"),
    ("train.eta_min_ratio=1.5", "train.eta_min_ratio"),
    ("train.ma_beta=5", "train.ma_beta"),
    ("train.ma_beta=1.0", "train.ma_beta"),  # beta = 1 would never move the weights
    ("train.ma_beta=-0.1", "train.ma_beta"),
    ("train.min_se=nan", "train.min_se"),
    ("train.seed=-1", "train.seed"),
    ("train.device=quantum", "train.device"),
    ("train.device=cuda:x", "train.device"),
    ("train.max_steps_per_epoch=0", "train.max_steps_per_epoch"),
    ("train.threads=0", "train.threads"),
    ("data.loader_workers=-1", "data.loader_workers"),
    ("data.duration=0", "data.duration"),
    ("data.duration=nan", "data.duration"),
    ("data.val_fraction=0", "data.val_fraction"),
    ("data.val_fraction=1", "data.val_fraction"),
    ("data.val_seed=-2", "data.val_seed"),
    ("data.split=fold5", "data.split"),
    ("name=", "name"),
    ("name=   ", "name"),
    ("tracking.experiment=", "tracking.experiment"),
    ("tracking.output_dir=", "tracking.output_dir"),
    ("method.params.alpha=.nan", "method.params.alpha"),
    ("model.params.depth=[1, .nan]", "model.params.depth[1]"),
]


@pytest.fixture
def experiment(tmp_path: Path) -> Path:
    path = tmp_path / "exp.yaml"
    path.write_text("train:\n  epochs: 2\n")
    return path


def one_line_error(exc: pytest.ExceptionInfo, source: Path | str) -> str:
    err = exc.value
    assert isinstance(err, LungsoundError)
    assert err.path == str(source) and "\n" not in str(err)
    return err.problem


@pytest.mark.parametrize(("override", "key"), BAD_OVERRIDES, ids=[o for o, _ in BAD_OVERRIDES])
def test_bad_override_names_file_and_key(experiment, override, key):
    with pytest.raises(LungsoundError) as exc:
        load_config(experiment, [override])
    assert one_line_error(exc, experiment).startswith(key + " ")


@pytest.mark.parametrize(("override", "key"), BAD_OVERRIDES[:6], ids=[o for o, _ in BAD_OVERRIDES[:6]])
def test_bad_value_in_the_file_itself(tmp_path, override, key):
    keys, value = override.split("=", 1)
    section, name = keys.split(".")
    path = tmp_path / "exp.yaml"
    path.write_text(f"{section}:\n  {name}: {value}\n")
    with pytest.raises(LungsoundError) as exc:
        load_config(path)
    assert one_line_error(exc, path).startswith(key + " ")


def test_saved_config_dicts_are_checked_too():
    with pytest.raises(LungsoundError) as exc:
        config_from_dict({"train": {"batch_size": 0}}, "runs/config.yaml")
    assert one_line_error(exc, "runs/config.yaml") == "train.batch_size must be an integer >= 1, got 0"
    with pytest.raises(LungsoundError) as exc:
        config_from_dict(["train"], "runs/config.yaml")  # type: ignore[arg-type]
    assert "mapping" in one_line_error(exc, "runs/config.yaml")


def test_params_need_string_keys(tmp_path):
    path = tmp_path / "exp.yaml"
    path.write_text("method:\n  name: dat\n  params:\n    1: 2.0\n")
    with pytest.raises(LungsoundError) as exc:
        load_config(path)
    assert one_line_error(exc, path) == "method.params must have string keys (got key 1), got {1: 2.0}"


@pytest.mark.parametrize(
    ("base", "expected"),
    [
        ("5", "base must be the path of another experiment file (a string), got 5"),
        ("[a]", "base must be the path of another experiment file (a string), got ['a']"),
        ("null", "base must be the path of another experiment file (a string), got None"),
        ("''", "base must be the path of another experiment file (a string), got ''"),
        ("absent.yaml", "base: 'absent.yaml' is not an existing file"),
        ("folder", "base: 'folder' is a folder"),
    ],
    ids=["int", "list", "null", "empty", "missing", "folder"],
)
def test_bad_base(tmp_path, base, expected):
    (tmp_path / "folder").mkdir()
    path = tmp_path / "exp.yaml"
    path.write_text(f"base: {base}\ntrain:\n  epochs: 2\n")
    with pytest.raises(LungsoundError) as exc:
        load_config(path)
    assert one_line_error(exc, path.resolve()).startswith(expected)


def test_folder_as_experiment_file(tmp_path):
    with pytest.raises(LungsoundError) as exc:
        load_config(tmp_path)
    assert one_line_error(exc, tmp_path.resolve()).startswith("is a folder, not an experiment file")


def test_cli_reports_one_line_before_any_work(tmp_path, capsys, monkeypatch):
    import lungsound.training.run as run

    def no_work(*args, **kwargs):  # the config must be refused before training (or data loading) starts
        raise AssertionError("training started")

    monkeypatch.setattr(run, "fit", no_work)
    assert main(["train", "-c", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err == f"lungsound: error: {tmp_path.resolve()}: is a folder, not an experiment file (pass one of its .yaml files)"
    assert main(["train", "train.max_steps_per_epoch=0"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == "lungsound: error: <defaults>: train.max_steps_per_epoch must be null or an integer >= 1, got 0"
