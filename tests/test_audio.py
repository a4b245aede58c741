"""Tests of lungsound.audio: decoding every supported format, downmix, resampling, and every bad-input error.

Fixtures are written with soundfile into tmp_path; the real ICBHI files are used only when ../shared/data is present.
"""

from __future__ import annotations

import csv
import math
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
import torchaudio

from lungsound.audio import AudioInfo, audio_info, decode_bytes, load_audio, resample
from lungsound.errors import LungsoundError

SHARED_ICBHI = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "icbhi"


def sine(sr: int, seconds: float, freq: float, amp: float = 0.5) -> np.ndarray:
    t = np.arange(int(round(sr * seconds))) / sr
    return amp * np.sin(2 * np.pi * freq * t)


def peak_frequency(x: np.ndarray, sr: int) -> float:
    spectrum = np.abs(np.fft.rfft(x * np.hanning(len(x))))
    return float(np.fft.rfftfreq(len(x), 1 / sr)[np.argmax(spectrum)])


@pytest.fixture
def wav16(tmp_path: Path) -> Path:
    path = tmp_path / "tone.wav"
    sf.write(path, sine(16000, 1.0, 440.0), 16000, subtype="PCM_16")
    return path


def expect_error(call, path_or_name, *problem_words: str) -> LungsoundError:
    """Run ``call``; it must raise LungsoundError whose message names the file and contains every problem word."""
    with pytest.raises(LungsoundError) as info:
        call()
    message = str(info.value)
    assert str(path_or_name) in message
    for word in problem_words:
        assert word in message, f"{word!r} not in {message!r}"
    return info.value


# ---------------------------------------------------------------------------------------------------------------------
# Bad inputs: one test each
# ---------------------------------------------------------------------------------------------------------------------


def test_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "nope.wav"
    err = expect_error(lambda: load_audio(path), path, "file not found")
    assert err.path == str(path)
    expect_error(lambda: audio_info(path), path, "file not found")


def test_directory(tmp_path: Path) -> None:
    path = tmp_path / "folder.wav"
    path.mkdir()
    expect_error(lambda: load_audio(path), path, "is a directory")


def test_empty_zero_byte_file(tmp_path: Path) -> None:
    path = tmp_path / "empty.wav"
    path.write_bytes(b"")
    expect_error(lambda: load_audio(path), path, "empty file (0 bytes)")
    expect_error(lambda: decode_bytes(b"", "upload.wav"), "upload.wav", "empty file (0 bytes)")


def test_header_only_wav_with_zero_frames(tmp_path: Path) -> None:
    path = tmp_path / "header_only.wav"
    sf.write(path, np.zeros(0), 16000, subtype="PCM_16")
    assert path.stat().st_size > 0  # a real header, no data
    expect_error(lambda: load_audio(path), path, "no audio (0 frames)")
    assert audio_info(path).frames == 0  # the header itself is valid


def test_truncated_header(tmp_path: Path, wav16: Path) -> None:
    path = tmp_path / "truncated.wav"
    path.write_bytes(wav16.read_bytes()[:20])
    expect_error(lambda: load_audio(path), path, "truncated or unsupported audio header", "fmt")
    expect_error(lambda: audio_info(path), path, "truncated or unsupported audio header")


def test_text_file_named_wav(tmp_path: Path) -> None:
    path = tmp_path / "notes.wav"
    path.write_text("start\tend\tcrackles\twheezes\n0.1\t1.2\t0\t1\n" * 10)
    expect_error(lambda: load_audio(path), path, "not audio or an unknown format")
    expect_error(lambda: decode_bytes(path.read_bytes(), "notes.wav"), "notes.wav", "not audio or an unknown format")


def test_nan_and_inf_samples(tmp_path: Path) -> None:
    path = tmp_path / "nan.wav"
    x = sine(8000, 0.5, 300.0)
    x[[10, 20, 30]] = np.nan
    x[40] = np.inf
    sf.write(path, x, 8000, subtype="FLOAT")
    expect_error(lambda: load_audio(path), path, "non-finite samples", "3 NaN", "1 infinite", f"of {len(x)}")


def test_too_long(tmp_path: Path) -> None:
    path = tmp_path / "long.wav"
    sf.write(path, sine(8000, 3.0, 300.0), 8000, subtype="PCM_16")
    expect_error(lambda: load_audio(path, max_seconds=2.5), path, "too long", "3.00 s", "max_seconds=2.5")
    x, sr = load_audio(path, max_seconds=3.0)  # exactly at the limit is allowed
    assert (len(x), sr) == (24000, 8000)


def test_invalid_rates_and_limits(wav16: Path) -> None:
    with pytest.raises(LungsoundError, match="target_sr must be a positive integer"):
        load_audio(wav16, 0)
    with pytest.raises(LungsoundError, match="max_seconds must be a positive number"):
        load_audio(wav16, max_seconds=float("nan"))
    with pytest.raises(LungsoundError, match="orig_sr must be a positive integer"):
        resample(np.zeros(10, np.float32), 16000.5, 16000)


# ---------------------------------------------------------------------------------------------------------------------
# Decoding
# ---------------------------------------------------------------------------------------------------------------------


def test_stereo_is_downmixed_to_channel_mean(tmp_path: Path) -> None:
    path = tmp_path / "stereo.wav"
    left, right = sine(16000, 0.25, 440.0, 0.6), sine(16000, 0.25, 1000.0, 0.3)
    stereo = np.stack([left, right], axis=1).astype(np.float32)
    sf.write(path, stereo, 16000, subtype="FLOAT")  # float: stored exactly
    x, sr = load_audio(path)
    assert sr == 16000 and x.dtype == np.float32 and x.shape == (len(left),)
    np.testing.assert_allclose(x, (stereo[:, 0].astype(np.float64) + stereo[:, 1]) / 2, rtol=0, atol=1e-7)
    assert audio_info(path).channels == 2


def test_float_values_above_one_are_kept(tmp_path: Path) -> None:
    path = tmp_path / "loud.wav"
    x = np.array([0.0, 1.5, -2.0, 0.25], dtype=np.float32)
    sf.write(path, x, 8000, subtype="FLOAT")
    y, _ = load_audio(path)
    np.testing.assert_array_equal(y, x)  # neither clipped nor normalised


# subtype -> max abs error of the round trip of a 0.5-amplitude sine. libsndfile writes b-bit PCM as
# round(x (2^(b-1) - 1)) and reads q / 2^(b-1), so the round trip is off by at most one quantisation step 2^-(b-1).
LOSSLESS = {
    "PCM_16": 2.0**-15,
    "PCM_24": 2.0**-23,
    "PCM_32": 1e-7,  # float32 output cannot hold 32-bit steps; float32 rounding of values <= 0.5 is <= 3e-8
    "FLOAT": 3e-8,  # float64 -> float32 rounding
    "DOUBLE": 3e-8,
}


def test_pcm16_integers_decode_to_q_over_32768(tmp_path: Path) -> None:
    path = tmp_path / "ints.wav"
    q = np.array([0, 1, -1, 16384, -16384, 32767, -32768], dtype=np.int16)
    sf.write(path, q, 8000, subtype="PCM_16")
    x, _ = load_audio(path)
    np.testing.assert_array_equal(x, q.astype(np.float32) / 32768)
    assert x.min() == -1.0 and x.max() < 1.0


@pytest.mark.parametrize("subtype", sorted(LOSSLESS))
def test_wav_subtypes_round_trip(tmp_path: Path, subtype: str) -> None:
    path = tmp_path / f"{subtype}.wav"
    ref = sine(22050, 0.5, 440.0)
    sf.write(path, ref, 22050, subtype=subtype)
    x, sr = load_audio(path)
    assert sr == 22050 and x.dtype == np.float32 and x.shape == ref.shape
    assert np.max(np.abs(x - ref)) <= LOSSLESS[subtype]
    assert np.max(np.abs(x)) <= 1.0
    info = audio_info(path)
    assert info == AudioInfo(22050, 1, len(ref), len(ref) / 22050, "WAV", subtype)


def test_flac_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "tone.flac"
    ref = sine(44100, 0.5, 440.0)
    sf.write(path, ref, 44100, subtype="PCM_24")
    x, sr = load_audio(path)
    assert sr == 44100 and x.shape == ref.shape
    assert np.max(np.abs(x - ref)) <= 2.0**-23
    assert audio_info(path).format == "FLAC"


def lossy_round_trip(path: Path, fmt: str, subtype: str) -> None:
    """Lossy codecs: same length, same pitch, small relative error after aligning any codec delay."""
    ref = sine(16000, 1.0, 440.0)
    try:
        sf.write(path, ref, 16000, format=fmt, subtype=subtype)
    except (sf.LibsndfileError, TypeError, ValueError) as err:
        pytest.skip(f"this libsndfile ({sf.__libsndfile_version__}) cannot write {fmt}/{subtype}: {err}")
    x, sr = load_audio(path)
    assert sr == 16000 and x.dtype == np.float32
    assert abs(len(x) - len(ref)) <= 1152  # at most one MPEG frame of padding
    n = min(len(x), len(ref))
    lags = range(-200, 201)
    core = slice(400, n - 400)
    errors = [np.sqrt(np.mean((np.roll(x[:n], lag)[core] - ref[:n][core]) ** 2)) for lag in lags]
    assert min(errors) / np.sqrt(np.mean(ref**2)) < 0.05
    assert abs(peak_frequency(x, sr) - 440.0) <= 2.0
    assert audio_info(path).format == fmt


def test_ogg_vorbis_round_trip(tmp_path: Path) -> None:
    lossy_round_trip(tmp_path / "tone.ogg", "OGG", "VORBIS")


def test_mp3_round_trip(tmp_path: Path) -> None:
    if "MP3" not in sf.available_formats():
        pytest.skip(f"this libsndfile ({sf.__libsndfile_version__}) has no MP3 support")
    lossy_round_trip(tmp_path / "tone.mp3", "MP3", "MPEG_LAYER_III")


@pytest.mark.parametrize("suffix, kwargs", [(".wav", {"subtype": "PCM_24"}), (".flac", {}), (".ogg", {})])
def test_decode_bytes_equals_load_audio(tmp_path: Path, suffix: str, kwargs: dict) -> None:
    path = tmp_path / f"tone{suffix}"
    sf.write(path, np.stack([sine(44100, 0.3, 440.0), sine(44100, 0.3, 660.0)], 1), 44100, **kwargs)
    for target_sr in (None, 16000):
        x, sr = load_audio(path, target_sr)
        y, sr_bytes = decode_bytes(path.read_bytes(), path.name, target_sr)
        assert sr == sr_bytes
        np.testing.assert_array_equal(x, y)


# ---------------------------------------------------------------------------------------------------------------------
# Resampling
# ---------------------------------------------------------------------------------------------------------------------


def test_96k_file_resamples_to_16k(tmp_path: Path) -> None:
    path = tmp_path / "hi_rate.wav"
    sf.write(path, sine(96000, 1.0, 1000.0), 96000, subtype="PCM_24")
    x, sr = load_audio(path, 16000)
    assert sr == 16000 and x.dtype == np.float32 and len(x) == 16000
    assert abs(peak_frequency(x, sr) - 1000.0) <= 1.0
    # away from the edges the band-limited interpolation reproduces the sine itself
    np.testing.assert_allclose(x[200:-200], sine(16000, 1.0, 1000.0)[200:-200], atol=2e-3)


def test_resample_matches_torchaudio() -> None:
    x = np.random.default_rng(0).uniform(-1, 1, 4410).astype(np.float32)
    y = resample(x, 44100, 16000)
    assert y.dtype == np.float32 and len(y) == math.ceil(4410 * 16000 / 44100)
    # bit-exact with the Resample module the reference code uses (float64-built kernel)
    module = torchaudio.transforms.Resample(44100, 16000)
    np.testing.assert_array_equal(y, module(torch.from_numpy(x)).numpy())
    # the functional form has the same defaults; it builds the kernel in float32, hence rounding-level differences only
    functional = torchaudio.functional.resample(torch.from_numpy(x), 44100, 16000).numpy()
    np.testing.assert_allclose(y, functional, rtol=0, atol=2e-5)
    explicit = torchaudio.functional.resample(
        torch.from_numpy(x.astype(np.float64)), 44100, 16000,
        lowpass_filter_width=6, rolloff=0.99, resampling_method="sinc_interp_hann",
    ).numpy()
    np.testing.assert_allclose(y, explicit, rtol=0, atol=1e-5)  # float64 reference with the defaults spelled out


def test_resample_4k_to_16k_gives_four_times_the_samples() -> None:
    x = sine(4000, 0.5, 250.0).astype(np.float32)
    y = resample(x, 4000, 16000)
    assert len(y) == 4 * len(x)
    np.testing.assert_allclose(y[::4][50:-50], x[50:-50], atol=1e-3)  # original samples are kept on the new grid


def test_resample_equal_rates_is_identity() -> None:
    x = np.linspace(-1, 1, 100, dtype=np.float32)
    assert resample(x, 16000, 16000) is x
    y = resample(x.astype(np.float64), 16000, 16000)
    assert y.dtype == np.float32 and np.array_equal(y, x)


# ---------------------------------------------------------------------------------------------------------------------
# Real ICBHI recordings (only when ../shared/data is present)
# ---------------------------------------------------------------------------------------------------------------------


def icbhi_rows() -> list[dict[str, str]]:
    manifest = SHARED_ICBHI / "manifest_audio.csv"
    if not manifest.is_file() or not (SHARED_ICBHI / "audio_and_txt_files").is_dir():
        pytest.skip(f"real ICBHI audio not available at {SHARED_ICBHI} (shared data is not part of a fresh clone)")
    with manifest.open(newline="") as f:
        return list(csv.DictReader(f))


@pytest.mark.needs_shared
@pytest.mark.parametrize("device, sr, bits", [("AKGC417L", 44100, 24), ("Litt3200", 4000, 16)])
def test_real_icbhi_recording(device: str, sr: int, bits: int) -> None:
    row = next(r for r in icbhi_rows() if r["device"] == device and int(r["sr"]) == sr and int(r["bits"]) == bits)
    path = SHARED_ICBHI / "audio_and_txt_files" / f"{row['file']}.wav"
    info = audio_info(path)
    assert (info.sample_rate, info.subtype) == (sr, f"PCM_{bits}")
    x, got_sr = load_audio(path)
    assert got_sr == sr
    assert abs(len(x) / sr - float(row["duration_s"])) <= 0.01
    assert np.isfinite(x).all() and -1.0 <= x.min() and x.max() <= 1.0 and np.abs(x).max() > 0
    y, sr16 = load_audio(path, 16000)
    assert sr16 == 16000 and len(y) == math.ceil(len(x) * 16000 / sr)
