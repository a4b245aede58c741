"""Audio decoding and resampling: the first stage of the pipeline (methods.md sections 1 and 2, step 1).

ICBHI 2017 (Rocha et al., Physiol. Meas. 2019) ships recordings at 44.1 kHz (16/24/32-bit PCM), 10 kHz and 4 kHz
(Litt3200), some copies as float32. The AST papers ([PMCL] Bae et al. 2023, [SGSCL] Kim et al. 2024,
[AFT] Kim et al. 2023) and [REPAUG] (Kim et al. 2024) all start from the whole recording as float mono in [-1, 1],
resampled to 16 kHz with torchaudio's `Resample` defaults. This module does exactly that and nothing more.

Decoding uses soundfile (libsndfile), never `torchaudio.load` (which needs torchcodec):

- Integer PCM of b bits is scaled by libsndfile to x = q / 2^(b-1), so x lies in [-1, 1).
- Float WAV data is returned as stored. A float file whose peak exceeds 1 is *not* normalised or clipped (either would
  change the signal silently); its values must only be finite. Lossy decoders (Vorbis, MP3) may overshoot 1 slightly.
- Multichannel audio is downmixed to mono by the mean of the channels: x[n] = (1/C) sum_c x_c[n].

Resampling is windowed-sinc band-limited interpolation, `torchaudio.transforms.Resample` with its defaults
(`sinc_interp_hann`, `lowpass_filter_width=6`, `rolloff=0.99`): with g = gcd(orig, target), o = orig/g, t = target/g,
c = 0.99 min(o, t) and sinc(a) = sin(a)/a, output sample j is
y[j] = sum_i x[i] (c/o) sinc(pi u) cos^2(pi u / 12) with u = c (i/o - j/t) clamped to [-6, 6], i over the
w = ceil(6 o / c) input samples either side of j o / t (zero padding at the edges); ceil(N * target / orig) samples out.

Every failure (missing file, directory, empty file, unknown format, truncated header, zero frames, NaN/inf samples, too
long) raises `LungsoundError` naming the file and the problem; no soundfile/libsndfile exception escapes.
"""

from __future__ import annotations

import functools
import io
import math
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf
import torch
import torchaudio.transforms

from lungsound.errors import LungsoundError

# libsndfile's public error code for "Format not recognised" (SF_ERR_UNRECOGNISED_FORMAT in sndfile.h).
_SF_ERR_UNRECOGNISED_FORMAT = 1


@dataclass(frozen=True)
class AudioInfo:
    """What the header of an audio file says, without decoding the samples."""

    sample_rate: int
    channels: int
    frames: int
    duration: float  # seconds = frames / sample_rate
    format: str  # container, e.g. "WAV", "FLAC", "OGG", "MP3"
    subtype: str  # encoding, e.g. "PCM_16", "PCM_24", "FLOAT", "VORBIS"


# ---------------------------------------------------------------------------------------------------------------------
# Public API
# ---------------------------------------------------------------------------------------------------------------------


def load_audio(
    path: str | os.PathLike, target_sr: int | None = None, *, max_seconds: float | None = None
) -> tuple[np.ndarray, int]:
    """Decode an audio file to float32 mono and optionally resample it.

    Returns ``(samples, sample_rate)``: a 1-D float32 array and its rate (``target_sr`` when given, else the file's).
    ``max_seconds`` rejects recordings longer than that many seconds (judged from the header, before decoding).
    """
    path = _check_path(path)
    with _open(str(path), path) as f:
        return _decode(f, path, target_sr, max_seconds)


def decode_bytes(
    data: bytes, name: str, target_sr: int | None = None, max_seconds: float | None = None
) -> tuple[np.ndarray, int]:
    """Same as `load_audio` for a file held in memory (an upload); ``name`` labels the data in error messages."""
    if len(data) == 0:
        raise LungsoundError("empty file (0 bytes), not audio", name)
    with _open(io.BytesIO(data), name) as f:
        return _decode(f, name, target_sr, max_seconds)


def audio_info(path: str | os.PathLike) -> AudioInfo:
    """Read sample rate, channels, frames, duration, format and subtype from the header only.

    A header announcing 0 frames is reported as such (``frames == 0``); `load_audio` is the one that rejects it.
    """
    path = _check_path(path)
    with _open(str(path), path) as f:
        return _info_of(f)


def resample(x: np.ndarray, orig_sr: int, target_sr: int) -> np.ndarray:
    """Resample the last axis with `torchaudio.transforms.Resample(orig_sr, target_sr)` (its defaults); float32 out.

    This is the module the reference code uses, bit for bit. `torchaudio.functional.resample` has the same defaults but
    builds its kernel in the input's dtype (float32), so it differs from this by float32 rounding (about 1e-5 at most).
    Equal rates return the input itself (as float32, without a copy when it already is float32).
    """
    orig_sr = _positive_rate(orig_sr, "orig_sr")
    target_sr = _positive_rate(target_sr, "target_sr")
    x = np.asarray(x, dtype=np.float32)
    if orig_sr == target_sr:
        return x
    with torch.no_grad():
        y = _resampler(orig_sr, target_sr)(torch.from_numpy(np.ascontiguousarray(x)))
    return y.numpy()


# ---------------------------------------------------------------------------------------------------------------------
# Helpers, in the order the public functions use them
# ---------------------------------------------------------------------------------------------------------------------


@functools.lru_cache(maxsize=16)
def _resampler(orig_sr: int, target_sr: int) -> torchaudio.transforms.Resample:
    """One `Resample` module per rate pair (its sinc kernel is built once, in float64, then stored as float32)."""
    return torchaudio.transforms.Resample(orig_sr, target_sr)


def _check_path(path: str | os.PathLike) -> Path:
    """Reject what is not a non-empty regular file before libsndfile sees it (its messages are vaguer)."""
    path = Path(path)
    if not path.exists():
        raise LungsoundError("file not found", path)
    if path.is_dir():
        raise LungsoundError("is a directory, not an audio file", path)
    if path.stat().st_size == 0:
        raise LungsoundError("empty file (0 bytes), not audio", path)
    return path


def _open(source: str | io.BytesIO, label: str | Path) -> sf.SoundFile:
    """Open for reading, translating libsndfile's refusal into a precise `LungsoundError`."""
    try:
        return sf.SoundFile(source)
    except sf.LibsndfileError as err:
        detail = err.error_string.strip()
        if err.code == _SF_ERR_UNRECOGNISED_FORMAT:
            raise LungsoundError(f"not audio or an unknown format (libsndfile: {detail})", label) from None
        problem = f"unreadable, truncated or unsupported audio header (libsndfile: {detail})"
        raise LungsoundError(problem, label) from None
    except (RuntimeError, OSError, TypeError, ValueError) as err:
        raise LungsoundError(f"cannot open as audio ({err})", label) from None


def _info_of(f: sf.SoundFile) -> AudioInfo:
    frames, sr = int(f.frames), int(f.samplerate)
    return AudioInfo(
        sample_rate=sr,
        channels=int(f.channels),
        frames=frames,
        duration=frames / sr if sr > 0 else 0.0,
        format=str(f.format),
        subtype=str(f.subtype),
    )


def _decode(
    f: sf.SoundFile, label: str | Path, target_sr: int | None, max_seconds: float | None
) -> tuple[np.ndarray, int]:
    """Validate the header, read all frames as float32, check finiteness, downmix, resample."""
    info = _info_of(f)
    if target_sr is not None:
        target_sr = _positive_rate(target_sr, "target_sr")
    if info.sample_rate <= 0:
        raise LungsoundError(f"invalid sample rate {info.sample_rate} Hz in the header", label)
    if info.frames == 0:
        raise LungsoundError("contains no audio (0 frames)", label)
    _check_duration(info.duration, max_seconds, label)

    try:
        data = f.read(dtype="float32", always_2d=True)
    except (sf.LibsndfileError, RuntimeError, ValueError) as err:
        raise LungsoundError(f"could not decode the audio data ({err})", label) from None
    if data.shape[0] == 0:
        raise LungsoundError("contains no audio (0 frames decoded)", label)
    _check_duration(data.shape[0] / info.sample_rate, max_seconds, label)  # headers of lossy formats may estimate
    _check_finite(data, label)

    mono = data[:, 0] if data.shape[1] == 1 else data.mean(axis=1, dtype=np.float64).astype(np.float32)
    if target_sr is None or target_sr == info.sample_rate:
        return mono, info.sample_rate
    return resample(mono, info.sample_rate, target_sr), target_sr


def _check_duration(seconds: float, max_seconds: float | None, label: str | Path) -> None:
    if max_seconds is None:
        return
    if not (isinstance(max_seconds, (int, float)) and math.isfinite(max_seconds) and max_seconds > 0):
        raise LungsoundError(f"max_seconds must be a positive number of seconds, got {max_seconds!r}")
    if seconds > max_seconds:
        raise LungsoundError(f"too long: {seconds:.2f} s exceeds the limit of max_seconds={max_seconds:g} s", label)


def _check_finite(data: np.ndarray, label: str | Path) -> None:
    finite = np.isfinite(data)
    if finite.all():
        return
    n_nan = int(np.isnan(data).sum())
    n_inf = int(data.size - finite.sum()) - n_nan
    raise LungsoundError(
        f"non-finite samples: {n_nan} NaN and {n_inf} infinite of {data.size} sample values", label
    )


def _positive_rate(sr: int, what: str) -> int:
    """Sample rates are positive integers (floats such as 16000.0 are accepted when integral)."""
    valid = isinstance(sr, (int, np.integer, float)) and not isinstance(sr, bool)
    if not valid or not math.isfinite(sr) or sr <= 0 or int(sr) != sr:
        raise LungsoundError(f"{what} must be a positive integer number of Hz, got {sr!r}")
    return int(sr)
