"""Issue 19 items 7, 10 and 17: bounded options, names that are not paths, and paths and names that cannot hurt.

7: counts and seeds have ranges (`lungsound.limits`), refused in one line before any work; --seeds parses linearly.
10: experiment, run and file names are names (config RULES), for the classifier and the vocoder.
17: an over-long or unusable path is one line naming it (the CLI entry's OSError handler, the app), report --out
folders are checked before the work, and file names are printed escaped (`lungsound.errors.printable`).
"""

from __future__ import annotations

import errno
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from lungsound.cli import main
from lungsound.cli import predict as predict_cmd
from lungsound.cli.validate import format_report
from lungsound.config import config_from_dict, load_config
from lungsound.errors import LungsoundError, display_path
from lungsound.external import LabelledRecording, get_adapter
from lungsound.external.base import ExternalSet, Unmappable
from lungsound.external.validate import summarise
from lungsound.generation.train import load_vocoder_config
from lungsound.training.seeds import parse_seeds
from tests.app_support import load_app_module
from tests.conftest import random_model

LONG = "a" * 5000


def one_error(capsys, argv: list[str]) -> str:
    """Run the CLI; it must exit 2 with exactly one line on stderr, which is returned."""
    assert main(argv) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("lungsound: error: "), lines
    return lines[0]


# --- item 7: ranges -----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("option, value, message", [
    ("--per-class", "1000000000", "--per-class must be an integer from 1 to 100,000, got 1000000000"),
    ("--batch-size", "0", "--batch-size must be an integer from 1 to 1,024, got 0"),
    ("--batch-size", "-1", "--batch-size must be an integer from 1 to 1,024, got -1"),
    ("--seed", "-1", "--seed must be an integer from 0 to 2,147,483,647, got -1"),
])
def test_generate_synth_options_are_range_checked_first(tmp_path, capsys, option, value, message):
    argv = {"--vocoder": str(tmp_path / "no-vocoder"), "--per-class": "2", "--out": str(tmp_path / "set"),
            option: value}
    line = one_error(capsys, ["generate", "synth", *[x for pair in argv.items() for x in pair]])
    assert line == f"lungsound: error: {message}"
    assert not (tmp_path / "set").exists()


@pytest.mark.parametrize("extra, message", [
    (["--recordings", "100000000"], "--recordings must be an integer from 1 to 10,000, got 100000000"),
    (["--seed", "-1"], "--seed must be an integer from 0 to 2,147,483,647, got -1"),
])
def test_data_synth_counts_are_bounded(tmp_path, capsys, extra, message):
    assert one_error(capsys, ["data", "synth", "--out", str(tmp_path / "s"), *extra]) == f"lungsound: error: {message}"
    assert not (tmp_path / "s").exists()


def test_seed_ranges_are_capped_and_parsed_linearly():
    assert parse_seeds("1-1000", 0) == list(range(1, 1001))
    assert parse_seeds("3,1-3,2-4", 0) == [3, 1, 2, 4]
    assert parse_seeds("2147483647", 0) == [2**31 - 1]
    with pytest.raises(LungsoundError, match="--seeds '1-100000' selects 100,000 seeds; at most 1,000 are allowed"):
        parse_seeds("1-100000", 0)
    with pytest.raises(LungsoundError, match="selects 2,000,000,000 seeds"):  # counted, never expanded
        parse_seeds("1-2000000000", 0)
    with pytest.raises(LungsoundError, match="seeds must be from 0 to 2,147,483,647"):
        parse_seeds("2147483648", 0)
    with pytest.raises(LungsoundError, match="the range 5-1 is empty"):
        parse_seeds("5-1", 0)
    with pytest.raises(LungsoundError, match="must look like 1-5 or 1,2,3"):
        parse_seeds("-1", 0)


@pytest.mark.parametrize("command", [["train"], ["generate", "train"]])
@pytest.mark.parametrize("value", ["0", "-1"])
def test_stop_after_below_one_is_refused_before_training(tmp_path, monkeypatch, capsys, command, value):
    monkeypatch.chdir(tmp_path)
    line = one_error(capsys, [*command, "--stop-after", value, f"tracking.output_dir={tmp_path / 'out'}"])
    assert line == f"lungsound: error: --stop-after must be an integer from 1 to 2,147,483,647, got {value}"
    assert not (tmp_path / "out").exists() and not (tmp_path / "mlruns").exists()


# --- item 10: names, not paths ------------------------------------------------------------------------------------

@pytest.mark.parametrize("override", ["tracking.experiment=../../../x", "tracking.experiment=a/b",
                                      "tracking.run_name=..", "tracking.run_name=x\\y", "name=../up",
                                      f"tracking.experiment={'e' * 101}"])
def test_tracking_names_are_names_not_paths(override):
    key = override.split("=")[0]
    with pytest.raises(LungsoundError, match=f"{key} must be (null or )?a name, not a path"):
        load_config(None, [override])
    with pytest.raises(LungsoundError, match=f"{key} must be (null or )?a name, not a path"):
        load_vocoder_config(None, [override])


def test_run_names_the_toolkit_makes_stay_valid():
    sweep_child = "quickstart-train.lr=0.001-data.duration=2.0-seed3"  # lungsound.sweeps.sweep and seeds name runs so
    cfg = load_config(None, [f"tracking.run_name={sweep_child}", "tracking.experiment=icbhi-aft", "name=icbhi (copy)"])
    assert config_from_dict(cfg.to_dict()).tracking.run_name == sweep_child


# --- item 17: paths and names from outside ------------------------------------------------------------------------

@pytest.mark.parametrize("option", ["--checkpoint", "--model"])
def test_a_5000_character_path_is_one_short_line(tmp_path, capsys, option):
    line = one_error(capsys, ["predict", str(tmp_path / "x.wav"), option, LONG])
    assert line.endswith(f"{'a' * 120}...{'a' * 40} (5,000 characters): File name too long")
    assert len(line) < 250


def test_report_out_that_is_a_file_or_cannot_be_made_is_refused_first(tmp_path, capsys):
    plain = tmp_path / "grid.txt"
    plain.write_text("mine")
    line = one_error(capsys, ["grid", "--table-only", "--experiment", "nothing-here", "--out", str(plain)])
    assert line == f"lungsound: error: {plain}: exists and is not a folder: choose a new or empty folder"
    line = one_error(capsys, ["grid", "--table-only", "--experiment", "nothing-here", "--out", str(plain / "x")])
    assert line == f"lungsound: error: {plain / 'x'}: cannot be created: {plain} is not a folder"
    assert plain.read_text() == "mine"


def test_an_os_error_on_a_users_path_is_one_line(tmp_path, monkeypatch, capsys):
    def refused(args):
        raise PermissionError(errno.EACCES, "Permission denied", "/srv/shared/out")

    monkeypatch.setattr(predict_cmd, "run_predict", refused)
    line = one_error(capsys, ["predict", "x.wav", "--checkpoint", str(tmp_path)])
    assert line == "lungsound: error: /srv/shared/out: Permission denied"


def test_file_names_with_terminal_escapes_are_printed_escaped(tmp_path, capsys):
    model = random_model(tmp_path / "model")
    wav = tmp_path / "a\x1b[31mred.wav"
    sf.write(wav, (0.1 * np.random.default_rng(0).standard_normal(3 * 16000)).astype(np.float32), 16000)
    gone = tmp_path / "b\x1b]0;owned\x07.wav"
    assert main(["predict", str(wav), str(gone), "--checkpoint", str(model), "--csv"]) == 2
    out, err = capsys.readouterr()
    assert "\x1b" not in out and "\x1b" not in err and "\x07" not in err
    rows = out.strip().splitlines()
    assert rows[0] == "file,start,end,normal,crackle,wheeze,both" and len(rows) > 1
    assert all(row.startswith(f"{tmp_path}/a\\x1b[31mred.wav,") for row in rows[1:])
    assert f"{tmp_path}/b\\x1b]0;owned\\x07.wav" in err
    assert main(["predict", str(wav), "--checkpoint", str(model)]) == 0
    assert capsys.readouterr().out.startswith(f"{tmp_path}/a\\x1b[31mred.wav  (3.0 s,")


def test_validate_external_report_prints_unmappable_names_escaped(tmp_path):
    odd = tmp_path / "BP1_\x1b[8mhidden,P R L ,20,M.wav"
    external = ExternalSet("kauh", tmp_path, [LabelledRecording(tmp_path / "r0.wav", False, False)],
                           [Unmappable(odd, "bad name \x1b[0m")])
    records = [{"file": "r0.wav", "label": "normal", "predicted": "normal", "groups": {}}]
    report = format_report(summarise(external, get_adapter("kauh"), records, []))
    assert "\x1b" not in report
    assert "  BP1_\\x1b[8mhidden,P R L ,20,M.wav: bad name \\x1b[0m" in report.splitlines()


def test_printable_escapes_controls_and_undecodable_bytes_and_shortens_long_words():
    assert display_path("x\u202egnp.exe\n") == "x\\u202egnp.exe\\n"
    assert display_path(b"caf\xe9.wav".decode("utf-8", "surrogateescape")) == "caf\\udce9.wav"
    assert str(LungsoundError("bad", "d\x1b[2J")) == "d\\x1b[2J: bad"
    assert str(LungsoundError(f"no such run {LONG!r}")) == f"no such run '{'a' * 119}...{'a' * 39}' (5,002 characters)"


def test_the_app_turns_an_over_long_model_name_into_one_line(monkeypatch):
    models = load_app_module("models")
    with pytest.raises(LungsoundError) as exc:
        models.hub_choice(LONG)
    assert "File name too long" in str(exc.value) and len(str(exc.value)) < 300
    monkeypatch.setenv(models.ENV_MODEL, LONG)
    found = models.discover_models(Path("no-outputs-here"))
    assert any(note.startswith("$LUNGSOUND_APP_MODEL: ") and "File name too long" in note for note in found.notes)
