"""EfficientAT's own log-mel front end at 32 kHz ([EFFAT] Schmid, Koutini, Widmer, ICASSP 2023; docs/methods.md
section 12), the input of :mod:`lungsound.models.efficientat`. It is part of the model, so training, evaluation,
``predict``, the app and an ONNX export all compute the same spectrogram from the same 32-kHz waveform.

For a waveform batch ``x`` of shape ``(B, L)`` at 32 kHz (the upstream evaluation front end, whose golden values
``../shared/models/README.md`` lists):

1. pre-emphasis ``y[n] = x[n + 1] - 0.97 x[n]``, ``n = 0 .. L - 2`` (so ``L - 1`` samples);
2. centred STFT: 1024-point FFT, an 800-sample symmetric Hann window (``periodic=False``) centred in the 1024 points,
   hop 320 (10 ms), the signal reflect-padded by 512 on each side, so ``T = 1 + (L - 1) // 320`` frames (800 for 8 s);
3. power spectrum ``|X|^2`` over the 513 one-sided bins;
4. 128 Kaldi-style triangular mel filters from ``fmin = 0`` to ``fmax = 15,000 Hz`` (16,000 - 2,000 / 2), on the
   mel scale ``m(f) = 1127 ln(1 + f / 700)``: filter ``b`` has its edges at ``m_lo + b d``, ``m_lo + (b + 1) d`` and
   ``m_lo + (b + 2) d`` with ``d = (m(fmax) - m(fmin)) / 129``, its weight at FFT bin ``k`` (frequency
   ``k 32000 / 1024``, ``k < 512``) is ``max(0, min(up, down))`` of the two slopes; the 513th bin (Nyquist) gets weight 0;
5. ``log(mel + 1e-5)``, then ``(x + 4.5) / 5``.

The output is ``(B, 1, 128, T)`` (frequency rows, time columns), as the upstream network takes it. With ``jitter`` on
and the module in training mode, each batch draws new filter edges as the upstream training does: ``fmin + U{0..9}`` Hz
and ``fmax + 1000 - U{0..1999}`` Hz (so ``fmax`` in 14,001..16,000 Hz); in evaluation the bank is the fixed one above.

For an ONNX export (``torch.onnx.is_in_onnx_export()``) the STFT is written with ``return_complex=False``, the only
form the TorchScript exporter turns into ONNX's STFT operator (opset 17); the values are the same.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import torch
from torch import nn

SAMPLE_RATE = 32_000  # EfficientAT's AudioSet input rate
FRAMES_PER_SECOND = 100.0  # hop 320 at 32 kHz


@dataclass(frozen=True)
class FrontEndConfig:
    """The evaluation front end of docs/methods.md section 12; ``jitter`` turns on the training-time filter jitter."""

    sample_rate: int = SAMPLE_RATE
    n_fft: int = 1024
    win_length: int = 800
    hop_length: int = 320
    n_mels: int = 128
    fmin: float = 0.0
    fmax: float = 15_000.0
    preemphasis: float = 0.97
    log_offset: float = 1e-5
    shift: float = 4.5
    scale: float = 5.0
    jitter: bool = False
    fmin_jitter: int = 10  # fmin + U{0 .. fmin_jitter - 1} Hz
    fmax_jitter: int = 2000  # fmax + fmax_jitter // 2 - U{0 .. fmax_jitter - 1} Hz


def mel_scale(f):
    """Kaldi's mel scale ``1127 ln(1 + f / 700)`` (float or tensor)."""
    return 1127.0 * (torch.log1p(f / 700.0) if isinstance(f, torch.Tensor) else math.log1p(f / 700.0))


def kaldi_mel_banks(n_mels: int, n_fft: int, sample_rate: int, fmin: float, fmax: float) -> torch.Tensor:
    """The ``(n_mels, n_fft // 2 + 1)`` triangular filter bank of step 4 of the module docstring (float32)."""
    if not 0 <= fmin < fmax <= sample_rate / 2:
        raise ValueError(f"mel bank edges must satisfy 0 <= fmin < fmax <= {sample_rate / 2:g}, got {fmin}, {fmax}")
    low, high = mel_scale(float(fmin)), mel_scale(float(fmax))
    delta = (high - low) / (n_mels + 1)
    bins = mel_scale(torch.arange(n_fft // 2, dtype=torch.float64) * (sample_rate / n_fft))[None, :]
    left = low + delta * torch.arange(n_mels, dtype=torch.float64)[:, None]
    centre, right = left + delta, left + 2 * delta
    up = (bins - left) / (centre - left)
    down = (right - bins) / (right - centre)
    bank = torch.clamp(torch.minimum(up, down), min=0.0)
    return nn.functional.pad(bank, (0, 1)).float()  # the Nyquist bin takes no weight


def num_frames(samples: int, config: FrontEndConfig = FrontEndConfig()) -> int:
    """Frames of the front end for ``samples`` input samples: ``1 + (samples - 1) // hop`` (800 for 8 s)."""
    return 1 + (samples - 1) // config.hop_length


class LogMelFrontEnd(nn.Module):
    """Waveform ``(B, L)`` at 32 kHz -> normalised log-mel ``(B, 1, n_mels, T)`` (see the module docstring).

    Its tensors (window, filter bank) are non-persistent buffers: a model's state dict holds only learned weights, the
    upstream checkpoint's layout."""

    def __init__(self, config: FrontEndConfig = FrontEndConfig()):
        super().__init__()
        self.config = config
        self.register_buffer("window", torch.hann_window(config.win_length, periodic=False), persistent=False)
        self.register_buffer("mel_bank", kaldi_mel_banks(config.n_mels, config.n_fft, config.sample_rate,
                                                         config.fmin, config.fmax), persistent=False)

    @property
    def n_mels(self) -> int:
        return self.config.n_mels

    def num_frames(self, samples: int) -> int:
        return num_frames(samples, self.config)

    def power_spectrum(self, x: torch.Tensor) -> torch.Tensor:
        """Steps 1-3: ``(B, L)`` -> ``(B, n_fft // 2 + 1, T)``."""
        c = self.config
        y = x[:, 1:] - c.preemphasis * x[:, :-1]
        args = dict(n_fft=c.n_fft, hop_length=c.hop_length, win_length=c.win_length, window=self.window,
                    center=True, pad_mode="reflect", normalized=False, onesided=True)
        if torch.onnx.is_in_onnx_export():
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # return_complex=False is deprecated, but it is what exports
                return (torch.stft(y, return_complex=False, **args) ** 2).sum(-1)
        return torch.view_as_real(torch.stft(y, return_complex=True, **args)).pow(2).sum(-1)

    def bank(self) -> torch.Tensor:
        """The filter bank of this call: the fixed one, or a jittered draw when training with ``jitter``."""
        c = self.config
        if not (self.training and c.jitter):
            return self.mel_bank
        fmin = c.fmin + int(torch.randint(c.fmin_jitter, (1,)))
        fmax = min(c.sample_rate / 2, c.fmax + c.fmax_jitter // 2 - int(torch.randint(c.fmax_jitter, (1,))))
        return kaldi_mel_banks(c.n_mels, c.n_fft, c.sample_rate, fmin, fmax).to(self.mel_bank.device)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        c = self.config
        with torch.autocast(device_type=x.device.type, enabled=False):  # the FFT and the log in float32
            power = self.power_spectrum(x.float())
            mel = torch.matmul(self.bank(), power)
            return ((torch.log(mel + c.log_offset) + c.shift) / c.scale).unsqueeze(1)
