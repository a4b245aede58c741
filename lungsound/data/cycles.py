"""Respiratory-cycle extraction exactly as the reference pipeline does it (docs/methods.md section 2).

1. The whole recording, float mono in [-1, 1], resampled to `sample_rate` (16 kHz) with torchaudio's default resampler.
2. A linear fade-in and fade-out of `sample_rate / 16` samples (1,000 at 16 kHz) over the whole recording
   (torchaudio `Fade(fade_shape="linear")`: in-ramp linspace(0, 1, n), out-ramp linspace(1, 0, n)).
3. Cycle i is `x[min(int(start*sr), N) : min(int(end*sr), N)]` (int() truncates toward zero). Times must be finite; a
   cycle starting past the end is an error, and cycles running past the end are cut there with one warning per
   recording (`warnings.warn`, naming it and how many were cut).
4. Fixed length L = duration * sr: a longer cycle keeps its first L samples; a shorter (or equal) one is padded:
   `repeat` tiles it ceil(L / len) times, crops to L and fades out the last 1,000 samples; `zero` centres it in zeros
   (offset (L - len) // 2).
5. One item per cycle, no splitting: 4,142 train and 2,756 test cycles on the official split.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torchaudio

from lungsound.audio import DEFAULT_SAMPLE_RATE, load_audio  # the rate cycles are cut at unless a model asks
from lungsound.data.annotations import Cycle
from lungsound.errors import LungsoundError

PAD_MODES = ("repeat", "zero")


@dataclass(frozen=True)
class CycleConfig:
    """How cycles are cut. `duration` 8 s is the AST papers' choice; [AFT]'s diffusion work uses 5 s."""

    sample_rate: int = DEFAULT_SAMPLE_RATE
    duration: float = 8.0
    pad: str = "repeat"

    def __post_init__(self):
        if self.pad not in PAD_MODES:
            raise LungsoundError(f"pad must be one of {', '.join(PAD_MODES)}, got {self.pad!r}")
        if self.duration <= 0 or self.sample_rate <= 0:
            raise LungsoundError(f"duration and sample_rate must be positive, got {self.duration} and {self.sample_rate}")

    @property
    def length(self) -> int:
        """Samples per cycle, L = duration * sample_rate (128,000 for 8 s at 16 kHz)."""
        return int(self.duration * self.sample_rate)

    @property
    def fade_samples(self) -> int:
        return int(self.sample_rate / 16)


def _fade(x: torch.Tensor, fade_in: int, fade_out: int) -> torch.Tensor:
    return torchaudio.transforms.Fade(fade_in_len=fade_in, fade_out_len=fade_out, fade_shape="linear")(x)


def fade_recording(x: np.ndarray, cfg: CycleConfig) -> np.ndarray:
    """Step 2: linear fade-in and fade-out over the whole recording."""
    n = min(cfg.fade_samples, len(x))
    return _fade(torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)), n, n).numpy()


def cycle_bounds(start: float, end: float, sample_rate: int, n_samples: int) -> tuple[int, int]:
    """Step 3: sample indices of a cycle, truncated with int() and clipped to the recording."""
    if not (math.isfinite(start) and math.isfinite(end)):
        raise LungsoundError(f"cycle times must be finite seconds, got {start} to {end}")
    return min(int(start * sample_rate), n_samples), min(int(end * sample_rate), n_samples)


def fix_length(segment: np.ndarray, cfg: CycleConfig) -> np.ndarray:
    """Step 4: truncate, or pad with `repeat` (+ fade-out) or `zero` (centred) to `cfg.length` samples."""
    target = cfg.length
    if len(segment) == 0:
        raise LungsoundError("empty cycle: its start is at or past the end of the audio")
    if len(segment) > target:
        return np.ascontiguousarray(segment[:target], dtype=np.float32)
    if cfg.pad == "zero":
        out = np.zeros(target, dtype=np.float32)
        offset = (target - len(segment)) // 2
        out[offset:offset + len(segment)] = segment
        return out
    tiled = np.tile(segment.astype(np.float32, copy=False), math.ceil(target / len(segment)))[:target]
    return _fade(torch.from_numpy(np.ascontiguousarray(tiled)), 0, min(cfg.fade_samples, target)).numpy()


def extract_cycles(samples: np.ndarray, cycles: list[Cycle], cfg: CycleConfig, source: str | Path = "") -> np.ndarray:
    """Cycles of one recording already at `cfg.sample_rate`, as an (n_cycles, L) float32 array.

    Warns once (naming `source`) when cycles run past the end of the audio and are cut there.
    """
    faded = fade_recording(samples, cfg)
    out = np.empty((len(cycles), cfg.length), dtype=np.float32)
    seconds = len(samples) / cfg.sample_rate
    past = 0
    for i, cycle in enumerate(cycles):
        try:
            lo, hi = cycle_bounds(cycle.start, cycle.end, cfg.sample_rate, len(faded))
        except LungsoundError as err:
            raise LungsoundError(f"cycle {i + 1}: {err.problem}", source) from None
        if hi <= lo:
            raise LungsoundError(f"cycle {i + 1} ({cycle.start:.3f}-{cycle.end:.3f} s) lies beyond the audio "
                                 f"({seconds:.3f} s)", source)
        past += int(cycle.end * cfg.sample_rate) > len(faded)
        out[i] = fix_length(faded[lo:hi], cfg)
    if past:
        warnings.warn(f"{source or 'recording'}: {past} of {len(cycles)} annotated cycle(s) run past the end of the "
                      f"audio ({seconds:.3f} s) and were cut at its end", stacklevel=2)
    return out


def load_cycles(audio_path: str | Path, cycles: list[Cycle], cfg: CycleConfig) -> np.ndarray:
    """Decode, resample and cut one recording (steps 1 to 4)."""
    samples, _ = load_audio(audio_path, target_sr=cfg.sample_rate)
    return extract_cycles(samples, cycles, cfg, source=audio_path)
