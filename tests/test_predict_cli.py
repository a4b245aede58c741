"""`lungsound predict`: JSON, CSV and text output, annotations next to the audio, and per-file errors."""

from __future__ import annotations

import argparse
import csv
import io
import json
import os
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from lungsound.cli import predict as predict_cmd
from lungsound.config import load_config
from lungsound.errors import LungsoundError
from lungsound.training.checkpoint import build_model, save_model

CLASSES = ["normal", "crackle", "wheeze", "both"]


def run(argv: list[str]) -> int:
    """Parse and run `lungsound predict ...` as `lungsound.cli.main` would (LungsoundError -> one line, exit 2)."""
    parser = argparse.ArgumentParser(prog="lungsound")
    predict_cmd.register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["predict", *argv])
    try:
        return args.handler(args)
    except LungsoundError as exc:
        print(f"lungsound: error: {exc}", file=sys.stderr)
        return 2


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    cfg = load_config(None, ["model.name=ast_tiny", "data.duration=2.0"])
    return save_model(tmp_path_factory.mktemp("cli") / "model", build_model(cfg), cfg, {"selected_epoch": 1})


@pytest.fixture
def recordings(tmp_path) -> dict[str, Path]:
    """Two breathing-like recordings (one with an ICBHI annotation beside it) and one text file named .wav."""
    rng = np.random.default_rng(0)
    sr = 8000
    t = np.arange(12 * sr) / sr
    envelope = np.maximum(0.02, np.sin(np.pi * t / 3.0) ** 2)
    folder = tmp_path / "in"
    folder.mkdir()
    out = {}
    for name in ("a", "b"):
        out[name] = folder / f"{name}.wav"
        sf.write(out[name], (0.2 * envelope * rng.standard_normal(len(t))).astype(np.float32), sr)
    (folder / "a.txt").write_text("0.5\t3.0\t0\t0\n3.0\t6.2\t1\t0\n6.2\t9.0\t0\t1\n")
    out["bad"] = folder / "bad.wav"
    out["bad"].write_text("this is not audio\n")
    return out


def test_json_output_follows_the_contract_and_errors_are_per_file(checkpoint, recordings, capsys, tmp_path,
                                                                   monkeypatch):
    monkeypatch.chdir(tmp_path)
    before = sorted(os.listdir(tmp_path))
    code = run([str(recordings["a"]), str(recordings["bad"]), str(recordings["b"]), "--checkpoint", str(checkpoint),
                "--json"])
    out, err = capsys.readouterr()
    assert code == 2
    assert err.strip().splitlines() == [err.strip()]  # one line
    assert err.startswith(f"lungsound: error: {recordings['bad']}: not audio")
    data = json.loads(out)
    assert [d["file"] for d in data] == [str(recordings["a"]), str(recordings["b"])]
    for d in data:
        assert set(d) == {"file", "duration", "summary", "segments"}
        assert d["duration"] == pytest.approx(12.0)
        for s in d["segments"]:
            assert set(s) == {"start", "end", "probabilities"} and set(s["probabilities"]) == set(CLASSES)
            assert sum(s["probabilities"].values()) == pytest.approx(1.0, abs=1e-5)
    # a.txt beside a.wav is used (--annotation auto): its three cycles are the segments.
    assert [(s["start"], s["end"]) for s in data[0]["segments"]] == [(0.5, 3.0), (3.0, 6.2), (6.2, 9.0)]
    assert data[1]["segments"][0]["start"] == 0.0 and data[1]["segments"][-1]["end"] == pytest.approx(12.0)
    assert sorted(os.listdir(tmp_path)) == before  # nothing written


def test_csv_output_one_row_per_segment(checkpoint, recordings, capsys):
    code = run([str(recordings["a"]), str(recordings["b"]), "--checkpoint", str(checkpoint), "--csv",
                "--annotation", "none", "--segmentation", "windows"])
    out, err = capsys.readouterr()
    assert code == 0 and err == ""
    rows = list(csv.DictReader(io.StringIO(out)))
    assert list(rows[0]) == ["file", "start", "end", *CLASSES]
    # 12 s in 2-s windows with a 1-s hop: 11 windows per file.
    assert [r["file"] for r in rows] == [str(recordings["a"])] * 11 + [str(recordings["b"])] * 11
    for r in rows:
        assert sum(float(r[c]) for c in CLASSES) == pytest.approx(1.0, abs=1e-5)
    assert (rows[0]["start"], rows[10]["end"]) == ("0.000", "12.000")


def test_text_output_and_cycles_without_annotation(checkpoint, recordings, capsys):
    code = run([str(recordings["a"]), "--checkpoint", str(checkpoint)])
    out, _ = capsys.readouterr()
    assert code == 0
    assert out.startswith(f"{recordings['a']}  (12.0 s, 3 segments by cycles)")
    assert "of 3 annotated breathing cycles" in out
    code = run([str(recordings["b"]), "--checkpoint", str(checkpoint), "--segmentation", "cycles"])
    _, err = capsys.readouterr()
    assert code == 2 and "b.wav: segmentation 'cycles' needs an annotation" in err


def test_bad_checkpoint_is_one_line_error(tmp_path, recordings, capsys):
    code = run([str(recordings["a"]), "--checkpoint", str(tmp_path)])
    _, err = capsys.readouterr()
    assert code == 2 and "not a lungsound checkpoint" in err


def test_run_id_loads_from_mlflow(checkpoint, recordings, mlflow_store, tmp_path, capsys):
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=mlflow_store)
    exp = client.create_experiment("cli", artifact_location=(tmp_path / "artifacts").as_uri())
    run_id = client.create_run(exp).info.run_id
    client.log_artifacts(run_id, str(checkpoint), "model")
    code = run([str(recordings["b"]), "--run-id", run_id, "--json"])
    out, _ = capsys.readouterr()
    assert code == 0 and len(json.loads(out)) == 1


def test_wired_into_the_lungsound_command(checkpoint, recordings, capsys):
    from lungsound.cli import build_parser

    try:
        build_parser().parse_args(["predict", str(recordings["b"]), "--checkpoint", str(checkpoint)])
    except SystemExit:
        pytest.skip("`predict` is not registered in lungsound/cli/__init__.py yet")
    from lungsound.cli import main

    assert main(["predict", str(recordings["b"]), "--checkpoint", str(checkpoint), "--json"]) == 0
    assert len(json.loads(capsys.readouterr().out)) == 1
