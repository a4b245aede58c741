"""`lungsound data stats` and `lungsound data dump` on the real ICBHI files, and the CLI's one-line errors."""

from __future__ import annotations

import json

import numpy as np
import pytest
import soundfile as sf

from lungsound.cli import main
from lungsound.data.annotations import read_annotation
from tests.test_database import OFFICIAL


def run_cli(capsys, *args) -> tuple[int, str, str]:
    code = main(list(args))
    out = capsys.readouterr()
    return code, out.out, out.err


@pytest.mark.needs_shared
def test_stats_json_gives_the_published_counts(icbhi_dir, capsys):
    code, out, _ = run_cli(capsys, "data", "stats", "--root", str(icbhi_dir), "--json")
    stats = json.loads(out)
    assert code == 0
    for split, expected in OFFICIAL.items():
        assert {k: stats[split][k] for k in expected} == expected
    assert stats["recordings_without_audio"] == 891 and stats["patients_in_both_splits"] == [156, 218]


@pytest.mark.needs_shared
def test_stats_text_and_folds(icbhi_dir, capsys):
    code, out, _ = run_cli(capsys, "data", "stats", "--root", str(icbhi_dir))
    assert code == 0 and "train" in out and "4142" in out and "patients in both splits: 156, 218" in out
    assert "recordings without audio: 891 of 920" in out
    code, out, _ = run_cli(capsys, "data", "stats", "--root", str(icbhi_dir), "--split", "fold2", "--json")
    stats = json.loads(out)
    assert stats["train"]["cycles"] + stats["test"]["cycles"] == 6898 and stats["patients_in_both_splits"] == []


@pytest.mark.needs_shared
def test_dump_every_real_recording(icbhi_dir, tmp_path, capsys):
    wavs = sorted((icbhi_dir / "audio_and_txt_files").glob("*.wav"))
    assert len(wavs) == 29
    rates = set()
    for wav in wavs:
        out = tmp_path / f"{wav.stem}.npz"
        code, _, err = run_cli(capsys, "data", "dump", "--root", str(icbhi_dir), "--recording", wav.stem,
                               "--out", str(out))
        assert code == 0, err
        z = np.load(out)
        cycles = read_annotation(wav.with_suffix(".txt"))
        n = len(cycles)
        assert z["waveforms"].shape == (n, 128_000) and z["waveforms"].dtype == np.float32
        assert z["fbank"].shape == (n, 798, 128) and np.isfinite(z["fbank"]).all()
        assert z["labels"].tolist() == [c.label for c in cycles]
        np.testing.assert_allclose(z["starts"], [c.start for c in cycles])
        np.testing.assert_allclose(z["ends"], [c.end for c in cycles])
        assert np.abs(z["waveforms"]).max() <= 1.05  # decoded in [-1, 1]; sinc resampling may overshoot clipped peaks
        rates.add(sf.info(str(wav)).samplerate)
    assert {4000, 44100} <= rates  # the Litt3200 4 kHz files and the 44.1 kHz (16- and 24-bit) files


@pytest.mark.needs_shared
def test_dump_golden_fbank_of_a_real_cycle(icbhi_dir, tmp_path, capsys):
    """Regression values of the whole section 2-3 pipeline (fades, repeat padding, fbank, normalisation)."""
    out = tmp_path / "d.npz"
    run_cli(capsys, "data", "dump", "--root", str(icbhi_dir), "--recording", "102_1b1_Ar_sc_Meditron", "--out",
            str(out), "--duration", "5", "--pad", "zero")
    z = np.load(out)
    assert z["waveforms"].shape[1] == 80_000 and z["fbank"].shape[1:] == (498, 128)
    first = z["fbank"][0]
    golden = {(0, 0): GOLDEN[0], (250, 10): GOLDEN[1], (250, 100): GOLDEN[2], (300, 64): GOLDEN[3]}
    for (t, f), value in golden.items():
        assert first[t, f] == pytest.approx(value, rel=1e-4, abs=1e-4), (t, f)


# Computed once with this pipeline (torchaudio 2.11); the fbank itself is checked against an independent numpy
# implementation in test_fbank.py, so these guard the cycle cutting and padding around it.
GOLDEN = [-1.277594, -0.736521, -1.073161, -0.978943]


def test_bad_inputs_are_one_line_errors(tmp_path, capsys):
    code, _, err = run_cli(capsys, "data", "stats", "--root", str(tmp_path / "missing"))
    assert code == 2 and err.strip() == f"lungsound: error: {tmp_path / 'missing'}: data folder not found"
    code, _, err = run_cli(capsys, "data", "stats", "--root", str(tmp_path))
    assert code == 2 and "no ICBHI annotation files" in err and "Traceback" not in err


def test_dump_errors(tiny_icbhi, tmp_path, capsys):
    code, _, err = run_cli(capsys, "data", "dump", "--root", str(tiny_icbhi), "--recording", "199_1b1_Al_sc_Meditron",
                           "--out", str(tmp_path / "x.npz"))
    assert code == 2 and "no recording 199_1b1_Al_sc_Meditron" in err
    (tiny_icbhi / "101_1b1_Al_sc_Meditron.wav").write_text("this is not audio")
    code, _, err = run_cli(capsys, "data", "dump", "--root", str(tiny_icbhi), "--recording", "101_1b1_Al_sc_Meditron",
                           "--out", str(tmp_path / "x.npz"))
    assert code == 2 and "101_1b1_Al_sc_Meditron.wav" in err and len(err.strip().splitlines()) == 1
    code, _, err = run_cli(capsys, "data", "dump", "--root", str(tiny_icbhi), "--recording", "102_1b1_Ar_sc_Meditron",
                           "--out", str(tmp_path / "x.txt"))
    assert code == 2 and "output must end in .npz" in err
