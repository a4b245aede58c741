"""Reading a recording for inference: a path, uploaded bytes or an array, decoded to float32 mono at its native rate
(corrupt sample values clipped or refused as `lungsound.audio.check_levels` says), with the decoder's warnings about
that file and the signal checks (too short, silent, flat, clipped) as messages."""

from __future__ import annotations

import os
import warnings as pywarnings

import numpy as np

from lungsound.audio import check_levels, decode_bytes, load_audio
from lungsound.errors import LungsoundError

MIN_SECONDS = 1.0
SILENCE_PEAK = 1e-6
CLIP_LEVEL, CLIP_FRACTION = 0.999, 0.01


def _read(source, sample_rate: int | None, name: str | None, max_seconds: float | None) -> tuple[str, np.ndarray, int]:
    """(label for messages, float32 mono samples at the native rate, native rate)."""
    if isinstance(source, (str, os.PathLike)):
        label = name or str(source)
        x, sr = load_audio(source, None, max_seconds=max_seconds)
        return label, x, sr
    if isinstance(source, (bytes, bytearray, memoryview)):
        label = name or "upload"
        x, sr = decode_bytes(bytes(source), label, None, max_seconds)
        return label, x, sr
    if isinstance(source, np.ndarray):
        label = name or "array"
        if sample_rate is None:
            raise LungsoundError("an array needs its sample_rate", label)
        if source.ndim != 1 or not np.issubdtype(source.dtype, np.floating):
            raise LungsoundError(f"expected a 1-D float array of samples, got {source.dtype} {source.shape}", label)
        if source.size == 0:
            raise LungsoundError("contains no audio (0 samples)", label)
        if not np.all(np.isfinite(source)):
            raise LungsoundError("contains NaN or infinite samples", label)
        if max_seconds is not None and source.size / sample_rate > max_seconds:
            raise LungsoundError(f"too long: {source.size / sample_rate:.2f} s exceeds the limit of "
                                 f"max_seconds={max_seconds:g} s", label)
        return label, check_levels(source.astype(np.float32), label), int(sample_rate)
    raise LungsoundError(f"cannot analyse a {type(source).__name__}: give a file path, the file's bytes or a 1-D array")


def _about_file(caught: list, label: str) -> list[str]:
    """The messages of the decoder's warnings about this file (they start with its name, dropped here); any other
    warning is passed on to Python's warnings unchanged."""
    mine = []
    for w in caught:
        text = str(w.message)
        if issubclass(w.category, UserWarning) and text.startswith(f"{label}: "):
            mine.append(text[len(label) + 2:])
        else:
            pywarnings.warn_explicit(w.message, w.category, w.filename, w.lineno, source=w.source)
    return mine


def _check_signal(x: np.ndarray, sr: int, label: str) -> list[str]:
    """Errors for too short, silent and constant recordings; a warning for heavy clipping."""
    seconds = len(x) / sr
    if seconds < MIN_SECONDS:
        raise LungsoundError(f"too short: {seconds:.2f} s of audio; at least {MIN_SECONDS:g} s is needed", label)
    high, low = float(x.max()), float(x.min())  # extremes, not |x| copies: a long recording is large
    peak = max(high, -low)
    if peak < SILENCE_PEAK:
        raise LungsoundError(f"silent: the recording is digital silence (peak amplitude {peak:.1e})", label)
    mean = float(np.mean(x, dtype=np.float64))
    swing = max(high - mean, mean - low)
    if swing < SILENCE_PEAK:
        raise LungsoundError(f"constant: the recording is a flat level of {mean:.3g} (a DC offset) with no sound "
                             f"(every sample within {swing:.1e} of it)", label)
    clipped = (np.count_nonzero(x >= CLIP_LEVEL) + np.count_nonzero(x <= -CLIP_LEVEL)) / len(x)
    if clipped > CLIP_FRACTION:
        return [f"heavily clipped: {100 * clipped:.1f}% of the samples are at full scale; the sound is distorted and "
                "the probabilities may be unreliable"]
    return []
