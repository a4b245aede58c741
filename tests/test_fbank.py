"""Kaldi fbank against an independent numpy implementation of the Kaldi recipe, and the AST normalisation."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from lungsound.errors import LungsoundError
from lungsound.features.fbank import (
    FbankConfig,
    ast_normalize,
    compute_features,
    compute_features_batch,
    frames_for_duration,
    kaldi_fbank,
    num_frames,
    patch_grid,
)

SHARED_ICBHI = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "icbhi" / "audio_and_txt_files"
RECORDING = "102_1b1_Ar_sc_Meditron"  # 44.1 kHz 16-bit; first cycle 0.264 s .. 1.736 s


def numpy_kaldi_fbank(x: np.ndarray, sr: int = 16000, n_mels: int = 128) -> np.ndarray:
    """Kaldi fbank written from its definition, in float64 (see the fbank module docstring for the equations)."""
    x = np.asarray(x, dtype=np.float64)
    length, shift, n_fft = 400, 160, 512
    n_frames = 1 + (len(x) - length) // shift
    frames = x[np.arange(length)[None, :] + shift * np.arange(n_frames)[:, None]]
    frames = frames - frames.mean(axis=1, keepdims=True)
    previous = np.concatenate([frames[:, :1], frames[:, :-1]], axis=1)  # first sample replicated
    frames = frames - 0.97 * previous
    n = np.arange(length)
    frames = frames * (0.5 - 0.5 * np.cos(2 * np.pi * n / (length - 1)))
    power = np.abs(np.fft.rfft(frames, n=n_fft)) ** 2  # (T, 257)

    def mel(f):
        return 1127.0 * np.log(1.0 + np.asarray(f) / 700.0)

    low, high = mel(20.0), mel(sr / 2)
    delta = (high - low) / (n_mels + 1)
    left = low + delta * np.arange(n_mels)
    center, right = left + delta, left + 2 * delta
    bin_mel = mel(np.arange(n_fft // 2 + 1) * sr / n_fft)
    rising = (bin_mel[None, :] - left[:, None]) / delta
    falling = (right[:, None] - bin_mel[None, :]) / delta
    weights = np.maximum(0.0, np.minimum(rising, falling))  # (n_mels, 257); the Nyquist bin gets 0
    return np.log(np.maximum(power @ weights.T, np.finfo(np.float32).eps))


def synthetic_signal(seconds: float, sr: int = 16000) -> np.ndarray:
    """Deterministic test signal: two tones, a chirp and seeded noise, float32 in [-1, 1]."""
    t = np.arange(int(seconds * sr)) / sr
    rng = np.random.default_rng(1234)
    x = 0.3 * np.sin(2 * np.pi * 220 * t) + 0.2 * np.sin(2 * np.pi * 3100 * t + 0.5)
    x += 0.1 * np.sin(2 * np.pi * (100 * t + 300 * t**2)) + 0.05 * rng.standard_normal(len(t))
    return x.astype(np.float32)


@pytest.mark.parametrize(("seconds", "frames"), [(8, 798), (5, 498)])
def test_shapes_of_8_and_5_second_cycles(seconds, frames):
    assert num_frames(seconds * 16000) == frames
    fb = compute_features(synthetic_signal(seconds))
    assert fb.shape == (frames, 128) and fb.dtype == torch.float32


def test_num_frames_snip_edges():
    assert [num_frames(n) for n in (0, 399, 400, 559, 560, 720)] == [0, 0, 1, 1, 2, 3]


def test_frames_for_duration_and_the_patch_grid_are_fbank_facts():
    assert frames_for_duration(8.0) == 798 and frames_for_duration(5.0) == 498
    assert frames_for_duration(1.0, 32000) == 98  # 1 + (32,000 - 800) // 320
    assert frames_for_duration(1.0, shift_ms=20.0) == 49  # 1 + (16,000 - 400) // 320
    assert kaldi_fbank(synthetic_signal(2.0)).shape[0] == frames_for_duration(2.0)
    with pytest.raises(LungsoundError, match="a clip of 0.01 s is shorter than one 25.0 ms fbank frame"):
        frames_for_duration(0.01)
    assert patch_grid(128, 798) == (12, 79)  # the papers' 948 patches of an 8-s cycle
    assert patch_grid(128, 798, fstride=4, tstride=4) == (29, 196)
    with pytest.raises(LungsoundError, match="an fbank of 10 frames x 128 bins is smaller than one 16x16 patch"):
        patch_grid(128, 10)


def test_matches_numpy_reference():
    x = synthetic_signal(2.0)
    fb = kaldi_fbank(x)
    ref = numpy_kaldi_fbank(x)
    assert fb.shape == ref.shape == (198, 128)
    assert np.isfinite(ref).all()
    np.testing.assert_allclose(fb.numpy(), ref, rtol=1e-4, atol=1e-4)


def test_numpy_float64_and_torch_float32_inputs_both_match_the_reference():
    x = synthetic_signal(1.0)
    ref = numpy_kaldi_fbank(x)
    for waveform in (x.astype(np.float64), torch.from_numpy(x)):
        fb = kaldi_fbank(waveform)
        assert fb.dtype == torch.float32 and fb.shape == (98, 128)  # 1 + (16000 - 400) // 160 = 98 frames
        np.testing.assert_allclose(fb.numpy(), ref, rtol=1e-4, atol=1e-4)


LOG_EPS = -15.942385152878742  # ln(float32 eps) = ln(2 ** -23) = -23 ln 2


def test_silence_and_a_constant_floor_at_log_eps():
    # Zero input has zero energy in every filter: log(max(0, eps)) = ln(2 ** -23) everywhere.
    silence = kaldi_fbank(np.zeros(400, dtype=np.float32))
    assert silence.shape == (1, 128)
    np.testing.assert_allclose(silence.numpy(), LOG_EPS, rtol=0, atol=1e-5)
    # A constant is all DC: the per-frame DC removal leaves zeros, so again the floor (800 samples -> 3 frames).
    dc = kaldi_fbank(np.full(800, 0.5, dtype=np.float32))
    assert dc.shape == (3, 128)
    np.testing.assert_allclose(dc.numpy(), LOG_EPS, rtol=0, atol=1e-5)


def test_empty_filter_and_amplitude_scaling_by_hand():
    # Filter 3 spans mel m(20) + 3d .. m(20) + 5d (d = (m(8000) - m(20)) / 129 = 21.7697), i.e. 62.956 .. 93.008 Hz:
    # the 512-point FFT bins at 62.5 Hz (k = 2) and 93.75 Hz (k = 3) both fall outside, so it never gets energy.
    # Every other filter holds at least one bin, and doubling the amplitude multiplies its energy by 4: + ln 4.
    x = 0.1 * np.random.default_rng(0).standard_normal(1600).astype(np.float32)
    fb, fb2 = kaldi_fbank(x).numpy(), kaldi_fbank(2 * x).numpy()
    np.testing.assert_allclose(fb[:, 3], LOG_EPS, rtol=0, atol=1e-5)
    np.testing.assert_allclose(fb2[:, 3], LOG_EPS, rtol=0, atol=1e-5)
    others = np.delete(fb2 - fb, 3, axis=1)
    np.testing.assert_allclose(others, np.log(4.0), rtol=0, atol=1e-4)  # ln 4 = 1.3862944
    assert (np.delete(fb, 3, axis=1) > LOG_EPS + 1).all()


@pytest.mark.parametrize(("filt", "hz"), [(40, 889.5834), (100, 4365.5430)])
def test_a_tone_at_a_filter_centre_peaks_in_that_filter(filt, hz):
    # Centre of filter i on the HTK mel scale: m_c = m(20) + (i + 1) d, f = 700 (exp(m_c / 1127) - 1):
    # i = 40: m_c = 31.7486 + 41 * 21.7697 = 924.306 -> 889.58 Hz; i = 100: m_c = 2230.487 -> 4365.54 Hz.
    t = np.arange(16000) / 16000
    fb = kaldi_fbank((0.5 * np.sin(2 * np.pi * hz * t)).astype(np.float32))
    assert fb.argmax(dim=1).tolist() == [filt] * 98


def test_ast_normalisation_values():
    fb = torch.tensor([-4.2677393, -4.2677393 + 2 * 4.5689974, 0.0])
    np.testing.assert_allclose(ast_normalize(fb).numpy(), [0.0, 1.0, 4.2677393 / 9.1379948], rtol=1e-6, atol=1e-6)
    x = synthetic_signal(1.0)
    ref = numpy_kaldi_fbank(x)
    np.testing.assert_allclose(compute_features(x).numpy(), (ref + 4.2677393) / (2 * 4.5689974), rtol=1e-4, atol=2e-5)
    np.testing.assert_allclose(compute_features(x, FbankConfig(normalize=False)).numpy(), ref, rtol=1e-4, atol=1e-4)


def test_batch_rows_are_normalised_reference_fbanks():
    x = np.stack([synthetic_signal(1.0), 0.5 * synthetic_signal(1.0)[::-1].copy()])
    batch = compute_features_batch(x)
    assert batch.shape == (2, 98, 128)
    for row, wave in zip(batch, x):
        expected = (numpy_kaldi_fbank(wave) + 4.2677393) / (2 * 4.5689974)
        np.testing.assert_allclose(row.numpy(), expected, rtol=1e-4, atol=2e-5)


@pytest.mark.parametrize(
    ("waveform", "message"),
    [
        (np.zeros((2, 16000), dtype=np.float32), "must be 1-D"),
        (np.zeros(399, dtype=np.float32), "399 samples is shorter than one 25 ms frame (400 samples)"),
        (np.array([np.nan] * 1000, dtype=np.float32), "NaN or infinite"),
        (np.zeros(1000, dtype=np.int16), "must hold float samples"),
    ],
)
def test_bad_waveforms(waveform, message):
    with pytest.raises(LungsoundError) as err:
        kaldi_fbank(waveform)
    assert message in str(err.value)


def test_batch_needs_two_dimensions():
    with pytest.raises(LungsoundError, match="batch, samples"):
        compute_features_batch(np.zeros(16000, dtype=np.float32))


@pytest.mark.needs_shared
def test_real_icbhi_cycle_matches_the_reference():
    wav, txt = SHARED_ICBHI / f"{RECORDING}.wav", SHARED_ICBHI / f"{RECORDING}.txt"
    if not (wav.exists() and txt.exists()):
        pytest.skip(f"real ICBHI data not present ({wav} missing): run from a checkout beside ../shared/data")
    sf = pytest.importorskip("soundfile")
    import torchaudio.functional

    audio, sr = sf.read(str(wav), dtype="float32")
    whole = torchaudio.functional.resample(torch.from_numpy(audio), sr, 16000)
    start, end = (float(v) for v in txt.read_text().split()[:2])
    cycle = whole[int(start * 16000) : int(end * 16000)]
    fb = kaldi_fbank(cycle)
    # 0.264 s .. 1.736 s at 16 kHz: samples 4224 .. 27776, 23552 samples -> 1 + (23552 - 400) // 160 = 145 frames.
    assert len(cycle) == 23552 and fb.shape == (145, 128)
    np.testing.assert_allclose(fb.numpy(), numpy_kaldi_fbank(cycle.numpy()), rtol=1e-4, atol=1e-3)
