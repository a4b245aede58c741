"""Hardening of the data path (issue 13, items 8, 11, 12, 13): resampling at any rate in bounded memory, non-finite
annotation times, cycles past the end of the audio, silent dropping of unmatched recordings, truncated WAV data,
constant signals in breath detection, and archive bombs made of many small members."""

from __future__ import annotations

import json
import math
import subprocess
import sys
import warnings
import zipfile
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
import torchaudio

from lungsound.audio import decode_bytes, load_audio, resample
from lungsound.config import load_config
from lungsound.data.annotations import Cycle, read_annotation
from lungsound.data.archive import ExtractLimits, _Member, _write_members, safe_extract
from lungsound.data.cycles import CycleConfig, extract_cycles, load_cycles
from lungsound.errors import LungsoundError
from lungsound.inference.segmentation import detect_breath_cycles
from tests.conftest import write_recording

# ---------------------------------------------------------------------------------------------------------------------
# Item 8: resampling at awkward rates in bounded memory; ICBHI rates stay bit-exact
# ---------------------------------------------------------------------------------------------------------------------

# Runs in a fresh interpreter: the peak resident memory of resampling, measured as the growth of ru_maxrss after a
# warm-up, with the address space capped 768 MiB above the warmed-up process so that a multi-GB kernel fails fast
# instead of swamping the machine.
MEMORY_PROBE = r"""
import json, resource, sys
import numpy as np, torch
torch.set_num_threads(1)
from lungsound.audio import load_audio, resample
resample(np.zeros(4410, np.float32), 44100, 16000)
size = next(int(l.split()[1]) * 1024 for l in open("/proc/self/status") if l.startswith("VmSize:"))
resource.setrlimit(resource.RLIMIT_AS, (size + (768 << 20), resource.RLIM_INFINITY))
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
for path in sys.argv[1:]:
    y, sr = load_audio(path, 16000)
    np.save(path + ".npy", y)
print(json.dumps({"peak_mib": (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024}))
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="measures memory with /proc and RLIMIT_AS (Linux)")
def test_awkward_rates_resample_in_bounded_memory_and_keep_the_pitch(tmp_path: Path) -> None:
    """7,919 Hz (a 47 KB file) and 44,101 Hz: coprime with 16 kHz, their torchaudio kernels need 1 and 5.6 GB."""
    paths = []
    for sr in (7919, 44101):
        t = np.arange(3 * sr) / sr
        paths.append(tmp_path / f"tone_{sr}.wav")
        sf.write(paths[-1], 0.5 * np.sin(2 * np.pi * 1000.0 * t), sr, subtype="PCM_16")
    assert paths[0].stat().st_size < 48_000
    done = subprocess.run([sys.executable, "-c", MEMORY_PROBE, *map(str, paths)], capture_output=True, text=True,
                          cwd=Path(__file__).resolve().parents[1])
    assert done.returncode == 0, done.stderr[-2000:]
    assert json.loads(done.stdout)["peak_mib"] < 500
    for path in paths:
        y = np.load(str(path) + ".npy")
        assert y.dtype == np.float32 and len(y) == 48000  # ceil(3 s * 16000)
        ideal = 0.5 * np.sin(2 * np.pi * 1000.0 * np.arange(48000) / 16000)
        np.testing.assert_allclose(y[200:-200], ideal[200:-200], atol=2e-3)  # same sine, same frequency and phase


@pytest.mark.parametrize("sr", [4000, 8000, 10000, 22050, 44100, 48000])
def test_icbhi_rates_stay_bit_exact_with_torchaudio_resample(sr: int) -> None:
    """Golden: the rates ICBHI copies come in give exactly torchaudio's Resample module output, as before."""
    x = np.random.default_rng(sr).uniform(-1, 1, sr // 2).astype(np.float32)
    expected = torchaudio.transforms.Resample(sr, 16000)(torch.from_numpy(x)).numpy()
    np.testing.assert_array_equal(resample(x, sr, 16000), expected)


def test_awkward_rate_follows_torchaudio_formula_to_float32_rounding() -> None:
    """13,010 Hz -> 16 kHz (kernel 1600 x 1315, just past the torchaudio path): the direct evaluation equals the same
    formula evaluated by torchaudio in float64 to float32 rounding, on a 2-D input row by row."""
    x = np.random.default_rng(1).uniform(-1, 1, (2, 13010)).astype(np.float32)
    module = torchaudio.transforms.Resample(13010, 16000, dtype=torch.float64)
    reference = module(torch.from_numpy(x.astype(np.float64)))
    y = resample(x, 13010, 16000)
    assert y.shape == (2, 16000) and y.dtype == np.float32
    np.testing.assert_allclose(y, reference.numpy(), rtol=0, atol=2e-7)


# ---------------------------------------------------------------------------------------------------------------------
# Item 11: non-finite annotation times; cycles past the end of the audio
# ---------------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("line", ["0.5\tinf\t0\t0", "0.5\tnan\t1\t0", "nan\t2.0\t0\t0", "-inf\t2.0\t0\t1",
                                  "0.5\tInfinity\t0\t0"])
def test_non_finite_annotation_time_is_a_one_line_error_naming_file_and_line(tmp_path: Path, line: str) -> None:
    path = tmp_path / "101_1b1_Al_sc_Meditron.txt"
    path.write_text(f"0.1\t0.5\t0\t0\n{line}\n")
    with pytest.raises(LungsoundError) as info:
        read_annotation(path)
    message = str(info.value)
    assert message.startswith(f"{path}: line 2: cycle times must be finite seconds") and "\n" not in message


def test_data_dump_with_an_infinite_end_is_a_one_line_error(tiny_icbhi: Path, tmp_path: Path, capsys) -> None:
    from lungsound.cli import main

    ann = tiny_icbhi / "102_1b1_Ar_sc_Meditron.txt"
    ann.write_text("0.0\t0.9\t1\t1\n0.9\tinf\t0\t0\n")
    code = main(["data", "dump", "--root", str(tiny_icbhi), "--recording", "102_1b1_Ar_sc_Meditron",
                 "--out", str(tmp_path / "x.npz")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and err == f"lungsound: error: {ann}: line 2: cycle times must be finite seconds, got 0.9 to inf"


def test_cutting_a_cycle_with_an_infinite_end_names_the_recording() -> None:
    cfg = CycleConfig(sample_rate=100, duration=1.0)
    expected = r"^rec\.wav: cycle 2: cycle times must be finite seconds, got 0\.5 to inf$"
    with pytest.raises(LungsoundError, match=expected):
        extract_cycles(np.ones(300, np.float32), [Cycle(0.0, 0.5, 0, 0), Cycle(0.5, math.inf, 0, 0)], cfg, "rec.wav")


def test_cycles_past_the_end_of_the_audio_warn_once_naming_the_recording(tmp_path: Path) -> None:
    """3 s of audio; two of three cycles end after it (3.4 and 3.9 s): one warning saying 2 of 3 were cut."""
    wav = write_recording(tmp_path, "101_1b1_Al_sc_Meditron", [(0.2, 1.5, 0, 0), (1.5, 3.4, 1, 0), (2.8, 3.9, 0, 1)],
                          sr=8000, duration=3.0)
    cycles = read_annotation(wav.with_suffix(".txt"))
    cfg = CycleConfig(duration=2.0)
    with pytest.warns(UserWarning) as record:
        waves = load_cycles(wav, cycles, cfg)
    assert [str(w.message) for w in record] == [
        f"{wav}: 2 of 3 annotated cycle(s) run past the end of the audio (3.000 s) and were cut at its end"]
    assert waves.shape == (3, 32000)
    x, _ = load_audio(wav, 16000)
    faded = torchaudio.transforms.Fade(1000, 1000, "linear")(torch.from_numpy(x)).numpy()
    np.testing.assert_array_equal(waves[1][:48000 - 24000], faded[24000:48000])  # cut at the last sample, then padded
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        load_cycles(wav, cycles[:1], cfg)  # a cycle inside the audio: no warning


# ---------------------------------------------------------------------------------------------------------------------
# Item 12: nothing is left out or cut off silently
# ---------------------------------------------------------------------------------------------------------------------


def test_training_data_warns_about_recordings_without_a_split_entry(tiny_icbhi: Path, tmp_path: Path) -> None:
    from lungsound.training.data import build_run_data

    for stem in ("105_1b1_Tc_sc_Meditron", "106_1b1_Al_sc_Meditron"):
        write_recording(tiny_icbhi, stem, [(0.1, 1.0, 0, 0)], sr=8000)
    cfg = load_config(None, [f"data.root={tiny_icbhi}", "data.duration=1.0", "train.protocol=paper",
                             f"tracking.output_dir={tmp_path}"])
    with pytest.warns(UserWarning) as record:
        data = build_run_data(cfg, progress=False)
    messages = [str(w.message) for w in record]
    assert (f"{tiny_icbhi}: 2 recording(s) have no split entry and are left out of train/test: "
            "105_1b1_Tc_sc_Meditron, 106_1b1_Al_sc_Meditron") in messages
    assert len(data.train) == 5 and len(data.test) == 3  # the cycles of the 4 split recordings only


def test_truncated_wav_data_warns_naming_the_file(tmp_path: Path) -> None:
    full = tmp_path / "full.wav"
    sf.write(full, 0.5 * np.sin(np.arange(16000) / 10), 16000, subtype="PCM_16")  # 44-byte header + 32,000 bytes
    cut = tmp_path / "cut.wav"
    cut.write_bytes(full.read_bytes()[:44 + 15_979])  # 7,989 whole frames and one odd byte left
    expected = ("truncated WAV: the header declares 16000 frames (1.00 s) but the file holds 7989 (0.50 s); "
                "only those are analysed")
    with pytest.warns(UserWarning) as record:
        x, _ = load_audio(cut)
    assert [str(w.message) for w in record] == [f"{cut}: {expected}"] and len(x) == 7989
    with pytest.warns(UserWarning) as record:
        decode_bytes(cut.read_bytes(), "upload.wav", 16000)
    assert [str(w.message) for w in record] == [f"upload.wav: {expected}"]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert len(load_audio(full)[0]) == 16000  # a complete file: no warning


@pytest.mark.parametrize("sr", [4000, 44100])
def test_constant_signal_is_not_breathing(sr: int) -> None:
    """20 s of DC resampled to 16 kHz: the breath band is empty but for the steps at both ends; no cycles."""
    x = resample(np.full(20 * sr, 0.5, np.float32), sr, 16000)
    assert detect_breath_cycles(x, 16000) == []
    assert detect_breath_cycles(np.full(20 * 16000, -0.25, np.float32), 16000) == []


# ---------------------------------------------------------------------------------------------------------------------
# Item 13: archive bombs of many small members
# ---------------------------------------------------------------------------------------------------------------------


def _small_member_bomb(path: Path) -> Path:
    """3 members of 1,000,000 zero bytes (each below the 1 MiB per-member floor): about 3 KB that unpack to 3 MB."""
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        for i in range(3):
            zf.writestr(f"ICBHI_final_database/zeros{i}.wav", bytes(1_000_000))
    return path


def test_many_small_members_cannot_add_up_to_a_bomb(tmp_path: Path) -> None:
    bomb = _small_member_bomb(tmp_path / "bomb.zip")
    size = bomb.stat().st_size
    into = tmp_path / "into"
    into.mkdir()
    fold = round(3_000_000 / size)
    with pytest.raises(LungsoundError) as info:
        safe_extract(bomb, into)
    assert str(info.value) == (f"{bomb}: unpacks to 3000000 bytes from {size}, {fold}-fold (limit 100 in all); "
                               "refusing a possible archive bomb")
    assert not any(into.iterdir())
    safe_extract(bomb, into, ExtractLimits(max_total_ratio=10 * fold))  # the cap is configurable
    assert (into / "ICBHI_final_database" / "zeros2.wav").stat().st_size == 1_000_000


def test_written_bytes_are_counted_against_the_archive_allowance(tmp_path: Path) -> None:
    """The stream count stops the write even when the members' declared sizes passed the checks."""
    archive = tmp_path / "a.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("a.txt", b"a" * 1000)
        zf.writestr("b.txt", b"b" * 1000)
    with zipfile.ZipFile(archive) as zf:
        members = [_Member(Path(i.filename), False, i.file_size, i) for i in zf.infolist()]
        with pytest.raises(LungsoundError, match=r"unpacks to more than 1500 bytes while extracting 'b.txt'"):
            _write_members(archive, members, tmp_path, zf.open, 1500)
    assert (tmp_path / "a.txt").read_bytes() == b"a" * 1000 and not (tmp_path / "b.txt").read_bytes()
