"""The [AFT] vocoder mel against an independent NumPy computation (methods.md section 10)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from lungsound.errors import LungsoundError
from lungsound.generation import vocoder_mel


def htk_filterbank(n_freqs: int, sr: int, f_min: float, f_max: float, n_mels: int) -> np.ndarray:
    """(n_freqs, n_mels) triangles on the HTK mel scale mel = 2595 log10(1 + f / 700), no area normalisation."""
    def mel(f):
        return 2595.0 * np.log10(1.0 + f / 700.0)

    def hz(m):
        return 700.0 * (10.0 ** (m / 2595.0) - 1.0)

    freqs = np.linspace(0.0, sr / 2, n_freqs)
    edges = hz(np.linspace(mel(f_min), mel(f_max), n_mels + 2))
    bank = np.zeros((n_freqs, n_mels))
    for m in range(n_mels):
        left, centre, right = edges[m], edges[m + 1], edges[m + 2]
        rising = (freqs - left) / (centre - left)
        falling = (right - freqs) / (right - centre)
        bank[:, m] = np.maximum(0.0, np.minimum(rising, falling))
    return bank


def numpy_mel(x: np.ndarray) -> np.ndarray:
    n_fft, hop = 1024, 256
    window = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(n_fft) / n_fft)  # periodic Hann
    padded = np.pad(x.astype(np.float64), n_fft // 2, mode="reflect")
    frames = 1 + (len(padded) - n_fft) // hop
    stft = np.stack([np.fft.rfft(padded[f * hop:f * hop + n_fft] * window) for f in range(frames)], axis=1)
    magnitude = np.abs(stft) / np.sqrt(np.sum(window ** 2))
    spec = htk_filterbank(n_fft // 2 + 1, 16000, 20.0, 8000.0, 80).T @ magnitude
    db = 20 * np.log10(np.maximum(spec, 1e-5)) - 20
    return np.clip((db + 100) / 100, 0.0, 1.0)


def test_matches_an_independent_numpy_mel_and_has_251_frames_for_four_seconds():
    rng = np.random.default_rng(0)
    t = np.arange(64000) / 16000
    x = 0.3 * np.sin(2 * np.pi * 440 * t) + 0.05 * rng.standard_normal(64000) * np.linspace(0, 1, 64000)
    got = vocoder_mel(torch.tensor(x, dtype=torch.float32))
    want = numpy_mel(x.astype(np.float32))
    assert got.shape == (80, 251) and got.dtype == torch.float32
    assert np.abs(got.numpy() - want).max() < 1e-4
    assert 0.2 < want.mean() < 0.9  # the comparison is on a mel that is neither all-clipped nor all-silent


def test_silence_is_zero_and_a_full_scale_tone_reaches_one():
    assert torch.equal(vocoder_mel(torch.zeros(16000)), torch.zeros(80, 63))
    # A full-scale 1 kHz tone: the Hann-windowed, window-normalised magnitude is N/4 / sqrt(3N/8) = 13.06 at its bin and
    # 6.53 at each neighbour, so the mel bin around 1 kHz holds well over 10, i.e. above 0 dB after the -20 dB shift: 1.
    tone = torch.sin(2 * np.pi * 1000 * torch.arange(16000) / 16000)
    assert vocoder_mel(tone)[:, 10:-10].max() == 1.0


def test_batch_numpy_and_single_inputs_agree():
    rng = np.random.default_rng(1)
    batch = (0.1 * rng.standard_normal((2, 4000))).astype(np.float32)
    both = vocoder_mel(batch)
    assert both.shape == (2, 80, 16)  # 1 + 4000 // 256
    for i in range(2):
        assert torch.allclose(both[i], vocoder_mel(torch.from_numpy(batch[i])), atol=1e-6)


def test_other_rates_and_shapes_are_one_line_errors():
    with pytest.raises(LungsoundError, match="16000 Hz audio, got 4000 Hz: resample first"):
        vocoder_mel(torch.zeros(4000), sample_rate=4000)
    with pytest.raises(LungsoundError, match=r"\(T,\) or \(B, T\)"):
        vocoder_mel(torch.zeros(1, 2, 4000))
