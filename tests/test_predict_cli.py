"""`lungsound predict`: JSON, CSV and text output, annotations next to the audio, and per-file errors."""

from __future__ import annotations

import csv
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from lungsound.cli import main
from tests.conftest import random_model

CLASSES = ["normal", "crackle", "wheeze", "both"]


def run(argv: list[str]) -> int:
    """`lungsound predict ...` through the real entry point `lungsound.cli.main` (LungsoundError: one line, exit 2)."""
    return main(["predict", *argv])


def error_lines(err: str) -> list[str]:
    """stderr as lines; every line must be a one-line `lungsound: error: ...` report (no traceback, no noise)."""
    lines = err.strip().splitlines()
    assert all(line.startswith("lungsound: error: ") for line in lines), err
    return lines


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    return random_model(tmp_path_factory.mktemp("cli") / "model")


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
    missing, empty = recordings["a"].parent / "missing.wav", recordings["a"].parent / "empty.wav"
    empty.write_bytes(b"")
    code = run([str(recordings["a"]), str(recordings["bad"]), str(missing), str(recordings["b"]), str(empty),
                "--checkpoint", str(checkpoint), "--json"])
    out, err = capsys.readouterr()
    assert code == 2  # some file failed
    # One line per bad file, in the order given, each naming its file; the good files are still analysed.
    lines = error_lines(err)
    assert len(lines) == 3
    assert lines[0].startswith(f"lungsound: error: {recordings['bad']}: not audio")
    assert lines[1] == f"lungsound: error: {missing}: file not found"
    assert lines[2] == f"lungsound: error: {empty}: empty file (0 bytes), not audio"
    data = json.loads(out)
    assert [d["file"] for d in data] == [str(recordings["a"]), str(recordings["b"])]
    for d in data:
        assert set(d) == {"file", "duration", "summary", "warnings", "segments"}
        assert d["duration"] == pytest.approx(12.0)
        assert d["summary"]["label"] in ("normal", "crackles", "wheezes", "both")  # recording-level finding
        for s in d["segments"]:
            assert set(s) == {"start", "end", "probabilities"} and set(s["probabilities"]) == set(CLASSES)
            assert sum(s["probabilities"].values()) == pytest.approx(1.0, abs=1e-5)
    # a.txt beside a.wav is used (--annotation auto): its three cycles are the segments.
    assert [(s["start"], s["end"]) for s in data[0]["segments"]] == [(0.5, 3.0), (3.0, 6.2), (6.2, 9.0)]
    assert data[1]["segments"][0]["start"] == 0.0 and data[1]["segments"][-1]["end"] == pytest.approx(12.0)
    assert sorted(os.listdir(tmp_path)) == before  # nothing written


def test_all_files_good_exit_code_0_and_silent_stderr(checkpoint, recordings, capsys):
    code = run([str(recordings["a"]), str(recordings["b"]), "--checkpoint", str(checkpoint), "--json"])
    out, err = capsys.readouterr()
    assert code == 0 and err == ""
    assert [d["file"] for d in json.loads(out)] == [str(recordings["a"]), str(recordings["b"])]


def test_every_file_failing_gives_only_error_lines(checkpoint, recordings, capsys):
    code = run([str(recordings["a"]), str(recordings["b"]), "--checkpoint", str(checkpoint), "--max-seconds", "10"])
    out, err = capsys.readouterr()
    assert code == 2 and out == ""
    assert error_lines(err) == [
        f"lungsound: error: {recordings[k]}: too long: 12.00 s exceeds the limit of max_seconds=10 s" for k in "ab"]


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
    out, err = capsys.readouterr()
    assert code == 0 and err == ""
    assert out.startswith(f"{recordings['a']}  (12.0 s, 3 segments by cycles)")
    assert "of 3 annotated breathing cycles" in out
    code = run([str(recordings["b"]), str(recordings["a"]), "--checkpoint", str(checkpoint),
                "--segmentation", "cycles"])
    out, err = capsys.readouterr()
    assert code == 2
    assert error_lines(err) == [f"lungsound: error: {recordings['b']}: segmentation 'cycles' needs an annotation "
                                "(an ICBHI .txt file or (start, end) list)"]
    assert out.startswith(f"{recordings['a']}  (12.0 s, 3 segments by cycles)")  # a.wav is still analysed


def test_bad_checkpoint_is_one_line_error(tmp_path, recordings, capsys):
    code = run([str(recordings["a"]), "--checkpoint", str(tmp_path)])
    out, err = capsys.readouterr()
    assert code == 2 and out == ""
    (line,) = error_lines(err)
    assert "not a lungsound checkpoint" in line


def test_run_id_loads_from_mlflow(checkpoint, recordings, mlflow_store, tmp_path, capsys):
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=mlflow_store)
    exp = client.create_experiment("cli", artifact_location=(tmp_path / "artifacts").as_uri())
    run_id = client.create_run(exp).info.run_id
    client.log_artifacts(run_id, str(checkpoint), "model")
    code = run([str(recordings["b"]), "--run-id", run_id, "--json"])
    out, _ = capsys.readouterr()
    assert code == 0
    assert [d["file"] for d in json.loads(out)] == [str(recordings["b"])]


def test_the_installed_command_in_a_real_process(checkpoint, recordings):
    """`python -m lungsound predict` as a user runs it: the process's exit code, stdout and stderr (a crash would be a
    traceback and exit code 1, not a skip)."""
    def command(*files):
        proc = subprocess.run([sys.executable, "-m", "lungsound", "predict", *map(str, files), "--checkpoint",
                               str(checkpoint), "--json"], capture_output=True, text=True, timeout=300)
        assert "Traceback" not in proc.stderr, proc.stderr
        return proc

    good = command(recordings["b"])
    assert good.returncode == 0 and good.stderr == "", good.stderr
    assert [d["file"] for d in json.loads(good.stdout)] == [str(recordings["b"])]
    mixed = command(recordings["bad"], recordings["b"])
    assert mixed.returncode == 2
    (line,) = error_lines(mixed.stderr)  # the whole of stderr: one line for the one bad file
    assert line.startswith(f"lungsound: error: {recordings['bad']}: not audio")
    assert [d["file"] for d in json.loads(mixed.stdout)] == [str(recordings["b"])]
