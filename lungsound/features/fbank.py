"""Kaldi-compatible log mel filterbank and the AST input normalisation (docs/methods.md section 3).

The AST models of [PMCL] (Bae et al., Interspeech 2023), [SGSCL] (Kim et al., ICASSP 2024), [REPAUG] (Kim et al.,
EMBC 2024) and [AFT] (Kim et al., 2023) all take the AudioSet AST input (Gong et al., Interspeech 2021): torchaudio's
Kaldi fbank with `htk_compat=True, use_energy=False, window_type='hanning', num_mel_bins=128, dither=0.0,
frame_shift=10` at 16 kHz. For a waveform x of N samples this is, frame by frame:

1. Frames of L = 400 samples (25 ms) every S = 160 samples (10 ms), only frames that fit ("snip edges"):
   T = 1 + floor((N - L) / S) frames, so 8 s (128,000 samples) gives 798 frames and 5 s gives 498.
2. Per frame: remove the DC offset, x_t <- x_t - mean(x_t); pre-emphasis x_t[n] <- x_t[n] - 0.97 x_t[n-1] with
   x_t[-1] := x_t[0]; multiply by the symmetric Hann window w[n] = 0.5 - 0.5 cos(2 pi n / (L - 1)).
3. Zero-pad to 512, power spectrum |FFT|^2 over bins k = 0..256 (bin width 31.25 Hz).
4. 128 triangular filters equally spaced on the HTK mel scale m(f) = 1127 ln(1 + f / 700) between 20 Hz and 8 kHz
   (Kaldi defaults low_freq=20, high_freq=Nyquist); the weight of bin k in filter i is
   max(0, min((m_k - m_i) / d, (m_{i+2} - m_k) / d)) with m_i = m(20) + i d, d = (m(8000) - m(20)) / 129.
5. log(max(energy, eps)) with eps the float32 machine epsilon.

The AST normalisation with the AudioSet statistics is then  (fbank - (-4.2677393)) / (2 * 4.5689974).
The computation itself is delegated to `torchaudio.compliance.kaldi.fbank`; this module fixes its arguments in one
place.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torchaudio.compliance.kaldi as kaldi

from lungsound.audio import DEFAULT_SAMPLE_RATE
from lungsound.errors import LungsoundError


@dataclass
class FbankConfig:
    """Arguments of the Kaldi fbank and of the AST normalisation (defaults = every AST paper).

    `sample_rate` is the rate of the cycles it is computed from: the model's own (`ModelSpec.sample_rate`,
    `lungsound.models.build.input_configs`), 16 kHz for every published recipe."""

    sample_rate: int = DEFAULT_SAMPLE_RATE
    num_mel_bins: int = 128
    frame_shift_ms: float = 10.0
    frame_length_ms: float = 25.0
    normalize: bool = True
    norm_mean: float = -4.2677393  # AudioSet statistics of the AST fbank
    norm_std: float = 4.5689974


def _samples(cfg: FbankConfig, milliseconds: float) -> int:
    # Same rounding as torchaudio (truncation of sr * ms / 1000), so that num_frames agrees with it.
    return int(cfg.sample_rate * milliseconds * 0.001)


def num_frames(n_samples: int, cfg: FbankConfig = FbankConfig()) -> int:
    """Frames the fbank yields for ``n_samples`` samples: 1 + (N - L) // S, or 0 when N < L (snip edges)."""
    length, shift = _samples(cfg, cfg.frame_length_ms), _samples(cfg, cfg.frame_shift_ms)
    return 0 if n_samples < length else 1 + (n_samples - length) // shift


def frames_for_duration(seconds: float, sample_rate: int = DEFAULT_SAMPLE_RATE, frame_ms: float = 25.0,
                        shift_ms: float = 10.0) -> int:
    """`num_frames` of a clip of `seconds` (``1 + (n - window) // shift``): 798 for 8 s, 498 for 5 s at 16 kHz; a clip
    shorter than one frame is an error (a model cannot be built for it)."""
    cfg = FbankConfig(sample_rate=sample_rate, frame_length_ms=frame_ms, frame_shift_ms=shift_ms)
    n = int(round(seconds * sample_rate))
    if n < _samples(cfg, frame_ms):
        raise LungsoundError(f"a clip of {seconds} s is shorter than one {frame_ms} ms fbank frame")
    return num_frames(n, cfg)


def patch_grid(num_mel_bins: int, frames: int, patch: int = 16, fstride: int = 10, tstride: int = 10) -> tuple[int, int]:
    """``(F, T')`` grid of `patch` x `patch` AST patches over a ``(frames x num_mel_bins)`` fbank:
    ``(size - patch) // stride + 1`` per axis; (12, 79) for the papers' 8-s fbank of 798 frames."""
    if num_mel_bins < patch or frames < patch:
        raise LungsoundError(f"an fbank of {frames} frames x {num_mel_bins} bins is smaller than one {patch}x{patch} patch")
    return (num_mel_bins - patch) // fstride + 1, (frames - patch) // tstride + 1


def _as_waveform(waveform: np.ndarray | torch.Tensor, cfg: FbankConfig) -> torch.Tensor:
    """A 1-D float32 tensor long enough for one frame (numpy input is converted, torch input keeps its device)."""
    x = torch.from_numpy(np.asarray(waveform)) if not isinstance(waveform, torch.Tensor) else waveform
    if x.dim() != 1:
        raise LungsoundError(f"waveform must be 1-D (samples,), got shape {tuple(x.shape)}")
    if not x.is_floating_point():
        raise LungsoundError(f"waveform must hold float samples, got dtype {x.dtype}")
    frame = _samples(cfg, cfg.frame_length_ms)
    if x.numel() < frame:
        raise LungsoundError(
            f"waveform of {x.numel()} samples is shorter than one {cfg.frame_length_ms:g} ms frame ({frame} samples)"
        )
    x = x.to(torch.float32)
    if not torch.isfinite(x).all():
        raise LungsoundError("waveform contains NaN or infinite samples")
    return x


def kaldi_fbank(waveform: np.ndarray | torch.Tensor, cfg: FbankConfig = FbankConfig()) -> torch.Tensor:
    """Log mel filterbank (T, num_mel_bins) of a 1-D waveform at ``cfg.sample_rate``, float32, not normalised."""
    x = _as_waveform(waveform, cfg)
    return kaldi.fbank(
        x[None],
        htk_compat=True,
        sample_frequency=cfg.sample_rate,
        use_energy=False,
        window_type="hanning",
        num_mel_bins=cfg.num_mel_bins,
        dither=0.0,
        frame_shift=cfg.frame_shift_ms,
        frame_length=cfg.frame_length_ms,
    )


def ast_normalize(fbank: torch.Tensor, cfg: FbankConfig = FbankConfig()) -> torch.Tensor:
    """AST input normalisation (fbank - mean) / (2 std); with the defaults (fbank + 4.2677393) / 9.1379948."""
    return (fbank - cfg.norm_mean) / (2.0 * cfg.norm_std)


def compute_features(waveform: np.ndarray | torch.Tensor, cfg: FbankConfig = FbankConfig()) -> torch.Tensor:
    """The model input of one waveform: Kaldi fbank (T, M), normalised when ``cfg.normalize``."""
    fbank = kaldi_fbank(waveform, cfg)
    return ast_normalize(fbank, cfg) if cfg.normalize else fbank


def compute_features_batch(waveforms: np.ndarray | torch.Tensor, cfg: FbankConfig = FbankConfig()) -> torch.Tensor:
    """`compute_features` of every row of a (B, L) batch of equal-length waveforms, stacked to (B, T, M)."""
    batch = torch.from_numpy(np.asarray(waveforms)) if not isinstance(waveforms, torch.Tensor) else waveforms
    if batch.dim() != 2:
        raise LungsoundError(f"waveforms must be a (batch, samples) array, got shape {tuple(batch.shape)}")
    if batch.shape[0] == 0:
        raise LungsoundError("waveforms is an empty batch")
    return torch.stack([compute_features(row, cfg) for row in batch])
