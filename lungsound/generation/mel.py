"""The vocoder's log-mel spectrogram (docs/methods.md section 10).

[AFT] Kim et al., "Adversarial Fine-tuning using Generated Respiratory Sound to Address Class Imbalance", NeurIPS 2023
DGM4H workshop, arXiv 2311.06480. Kong et al., "DiffWave: A Versatile Diffusion Model for Audio Synthesis", ICLR 2021.

The DiffWave vocoder of [AFT] is conditioned on this mel, computed from 16-kHz audio ``x``:

    X[k, f]  = sum_n w[n] x[f H + n - N/2] exp(-2 pi i k n / N)      N = n_fft = window = 1024, H = hop = 256,
                                                                    w = periodic Hann, reflect padding of N/2 each side
    S[m, f]  = sum_k fb[k, m] |X[k, f]| / sqrt(sum_n w[n]^2)         (power 1, window-normalised magnitude)
    fb       = 80 triangular filters, HTK mel scale mel(f) = 2595 log10(1 + f / 700), edges equally spaced in mel from
               f_min = 20 Hz to f_max = 8000 Hz, no area normalisation (torchaudio ``MelSpectrogram`` defaults)
    D        = 20 log10(max(S, 1e-5)) - 20                             (dB, shifted by -20)
    mel      = clamp((D + 100) / 100, 0, 1)

so silence maps to 0 and loud bins to 1. With ``center=True`` there are ``1 + T // 256`` frames: a 4-s cycle (64,000
samples) gives 251 frames, and the vocoder turns 251 frames back into 251 x 256 = 64,256 samples.
"""

from __future__ import annotations

import functools

import numpy as np
import torch

from lungsound.errors import LungsoundError

SAMPLE_RATE = 16000  # Hz: the vocoder's own rate (its mel's), whatever rate a classifier takes
N_MELS, N_FFT, WIN_LENGTH, HOP_LENGTH = 80, 1024, 1024, 256
F_MIN, F_MAX = 20.0, 8000.0
MIN_LEVEL, DB_SHIFT, DB_RANGE = 1e-5, 20.0, 100.0


@functools.lru_cache(maxsize=4)
def _transform(device: str):
    import torchaudio

    return torchaudio.transforms.MelSpectrogram(
        sample_rate=SAMPLE_RATE, n_fft=N_FFT, win_length=WIN_LENGTH, hop_length=HOP_LENGTH, f_min=F_MIN, f_max=F_MAX,
        n_mels=N_MELS, power=1.0, normalized=True, center=True, pad_mode="reflect", mel_scale="htk", norm=None,
    ).to(device).eval()


def vocoder_mel(waveform: torch.Tensor | np.ndarray, sample_rate: int = SAMPLE_RATE) -> torch.Tensor:
    """The [AFT] vocoder's normalised log-mel in [0, 1]: ``(T,) -> (80, F)``, ``(B, T) -> (B, 80, F)``,
    F = 1 + T // 256.

    Accepts a tensor (on any device; the result is on the same device, float32) or a NumPy array. The audio must already
    be at 16 kHz: any other rate is a one-line error (resample first).
    """
    if sample_rate != SAMPLE_RATE:
        raise LungsoundError(f"the vocoder mel needs {SAMPLE_RATE} Hz audio, got {sample_rate} Hz: resample first")
    if isinstance(waveform, np.ndarray):
        waveform = torch.from_numpy(np.ascontiguousarray(waveform, dtype=np.float32))
    if not isinstance(waveform, torch.Tensor):
        raise LungsoundError(f"the vocoder mel needs a waveform tensor or array, got {type(waveform).__name__}")
    if waveform.dim() not in (1, 2):
        raise LungsoundError(f"the vocoder mel needs a waveform of shape (T,) or (B, T), got {tuple(waveform.shape)}")
    if waveform.shape[-1] <= N_FFT // 2:
        raise LungsoundError(f"the vocoder mel needs more than {N_FFT // 2} samples, got {waveform.shape[-1]}")
    transform = _transform(str(waveform.device))
    with torch.no_grad():
        spec = transform(waveform.float())
    spec = 20.0 * torch.log10(torch.clamp(spec, min=MIN_LEVEL)) - DB_SHIFT
    return torch.clamp((spec + DB_RANGE) / DB_RANGE, 0.0, 1.0)
