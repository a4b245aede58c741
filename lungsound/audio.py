"""Audio decoding and resampling: the first stage of the pipeline (docs/methods.md sections 1 and 2, step 1).

ICBHI 2017 (Rocha et al., Physiol. Meas. 2019) ships recordings at 44.1 kHz (16/24/32-bit PCM), 10 kHz and 4 kHz
(Litt3200), some copies as float32. The AST papers ([PMCL] Bae et al. 2023, [SGSCL] Kim et al. 2024,
[AFT] Kim et al. 2023) and [REPAUG] (Kim et al. 2024) all start from the whole recording as float mono in [-1, 1],
resampled to 16 kHz with torchaudio's `Resample` defaults. This module does exactly that and nothing more.

Decoding uses soundfile (libsndfile), never `torchaudio.load` (which needs torchcodec):

- Integer PCM of b bits is scaled by libsndfile to x = q / 2^(b-1), so x lies in [-1, 1).
- Float WAV data is returned as stored. A float file whose peak exceeds 1 is *not* normalised or clipped (either would
  change the signal silently); its values must be finite, and lossy decoders (Vorbis, MP3) may overshoot 1 slightly.
  A sample beyond +-`HEADROOM` (16, i.e. 24 dB above full scale) is no sound but a corrupt value: no recording chain
  leaves that much headroom, and a few such values (1e30) overflow the float32 filterbank to inf and the model's
  output to NaN. When at most `CORRUPT_FRACTION` (1%) of the samples are such values they are clipped to +-1 with a
  warning naming the file, how many and the largest; more of them is not [-1, 1] audio at all (e.g. integer-scaled
  float data, +-32768) and is refused. `check_levels` applies the same rule to an array.
- Multichannel audio is downmixed to mono by the mean of the channels: x[n] = (1/C) sum_c x_c[n].

Resampling is windowed-sinc band-limited interpolation, `torchaudio.transforms.Resample` with its defaults
(`sinc_interp_hann`, `lowpass_filter_width=6`, `rolloff=0.99`): with g = gcd(orig, target), o = orig/g, t = target/g,
c = 0.99 min(o, t) and sinc(a) = sin(a)/a, output sample j is
y[j] = sum_i x[i] (c/o) sinc(pi u) cos^2(pi u / 12) with u = c (i/o - j/t) clamped to [-6, 6], i over the
w = ceil(6 o / c) input samples either side of j o / t (zero padding at the edges); ceil(N * target / orig) samples out.
torchaudio stores one kernel row per output phase, each spanning a whole block of o input samples: t (2w + o) values,
which is tiny for related rates (44.1 kHz -> 16 kHz: 76,000) but grows with the product of the reduced rates
(7,919 Hz -> 16 kHz: 127 million, gigabytes while it is built). So the torchaudio module is used, bit for bit, only
when its kernel has at most 2^20 values (to 16 kHz: every rate ICBHI ships, and 8, 11.025, 22.05, 32, 48, 96, 192 kHz;
its convolution is run over blocks of the signal, `_blocked_resample`, which gives the same values in bounded memory);
any other pair evaluates the same formula directly (`_sinc_resample`: per output sample only the 2 ceil(6 orig / c') + 2
taps around it, with c' = 0.99 min(orig, target) in Hz, in chunks, in float64), which needs about 100 MB at most for any
rates and agrees with torchaudio's formula evaluated in float64 to float32 rounding (torchaudio's own float32
convolution over such long kernel rows is off by up to about 2e-4). At most 8 torchaudio modules are cached (4 MB of
kernel each).

A WAV file whose data chunk declares more frames than the file holds (a cut-off download or copy) is decoded as far as
it goes, with a warning (`warnings.warn`) naming the file and both lengths.

Every failure (missing file, directory, empty file, unknown format, truncated header, zero frames, NaN/inf samples,
mostly corrupt sample values, too long) raises `LungsoundError` naming the file and the problem; no soundfile/libsndfile
exception escapes.
"""

from __future__ import annotations

import functools
import io
import math
import os
import struct
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf
import torch
import torchaudio.transforms

from lungsound.errors import LungsoundError

DEFAULT_SAMPLE_RATE = 16000  # Hz, every published recipe's; a model's `ModelSpec.sample_rate` may ask for another

# torchaudio's Resample defaults, and the largest kernel (values) for which its module is used.
_ZERO_CROSSINGS, _ROLLOFF = 6, 0.99
_MAX_KERNEL_VALUES = 1 << 20
_CHUNK_VALUES = 1 << 20  # filter weights used at once by `_sinc_resample`
_TABLE_VALUES = 1 << 23  # the largest table of its weights by phase (64 MB)
_BLOCK_VALUES = 1 << 22  # input values one convolution of `_blocked_resample` reads at most (16 MB)

# Float samples beyond +-HEADROOM are corrupt values; up to CORRUPT_FRACTION of them are clipped, more are refused.
HEADROOM, CORRUPT_FRACTION = 16.0, 0.01

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
        return _decode(f, path, target_sr, max_seconds, lambda: open(path, "rb"))


def decode_bytes(
    data: bytes, name: str, target_sr: int | None = None, max_seconds: float | None = None
) -> tuple[np.ndarray, int]:
    """Same as `load_audio` for a file held in memory (an upload); ``name`` labels the data in error messages."""
    if len(data) == 0:
        raise LungsoundError("empty file (0 bytes), not audio", name)
    with _open(io.BytesIO(data), name) as f:
        return _decode(f, name, target_sr, max_seconds, lambda: io.BytesIO(data))


def audio_info(path: str | os.PathLike) -> AudioInfo:
    """Read sample rate, channels, frames, duration, format and subtype from the header only.

    A header announcing 0 frames is reported as such (``frames == 0``); `load_audio` is the one that rejects it.
    """
    path = _check_path(path)
    with _open(str(path), path) as f:
        return _info_of(f)


def resample(x: np.ndarray, orig_sr: int, target_sr: int) -> np.ndarray:
    """Resample the last axis with `torchaudio.transforms.Resample(orig_sr, target_sr)` (its defaults); float32 out.

    This is the module the reference code uses, bit for bit, whenever its kernel is small (see the module docstring);
    for other rate pairs the same windowed-sinc formula is evaluated tap by tap in bounded memory, which agrees with
    torchaudio to float32 rounding. `torchaudio.functional.resample` has the same defaults but builds its kernel in the
    input's dtype (float32), so it differs from this by float32 rounding (about 1e-5 at most).
    Equal rates return the input itself (as float32, without a copy when it already is float32).
    """
    orig_sr = _positive_rate(orig_sr, "orig_sr")
    target_sr = _positive_rate(target_sr, "target_sr")
    x = np.asarray(x, dtype=np.float32)
    if orig_sr == target_sr:
        return x
    if _torchaudio_kernel_size(orig_sr, target_sr) > _MAX_KERNEL_VALUES:
        return _sinc_resample(x, orig_sr, target_sr)
    return _blocked_resample(x, _resampler(orig_sr, target_sr))


def _torchaudio_kernel_size(orig_sr: int, target_sr: int) -> int:
    """Values in `torchaudio.transforms.Resample(orig_sr, target_sr)`'s kernel: t (2w + o), as its code computes w."""
    g = math.gcd(orig_sr, target_sr)
    o, t = orig_sr // g, target_sr // g
    width = math.ceil(_ZERO_CROSSINGS * o / (min(o, t) * _ROLLOFF))
    return t * (2 * width + o)


# ---------------------------------------------------------------------------------------------------------------------
# Helpers, in the order the public functions use them
# ---------------------------------------------------------------------------------------------------------------------


@functools.lru_cache(maxsize=8)
def _resampler(orig_sr: int, target_sr: int) -> torchaudio.transforms.Resample:
    """One `Resample` module per rate pair (its sinc kernel is built once, in float64, then stored as float32).

    Only called for kernels of at most `_MAX_KERNEL_VALUES` (4 MB as float32), so the cache holds at most 32 MB.
    """
    return torchaudio.transforms.Resample(orig_sr, target_sr)


def _blocked_resample(x: np.ndarray, module: torchaudio.transforms.Resample) -> np.ndarray:
    """`module(x)` bit for bit, its strided convolution run over blocks of outputs of `_BLOCK_VALUES` input values.

    torchaudio pads the signal by w zeros before and w + o after, convolves it at stride o with its t kernel rows of
    K = 2w + o taps (output step k reads padded samples [k o, k o + K)) and keeps ceil(t N / o) outputs. Its one
    convolution over the whole signal needs a buffer of about K / o values per input sample (1 GB for two hours at
    44.1 kHz); each block here reads only the padded samples its steps need, so besides the input and the output
    memory stays near `_BLOCK_VALUES` whatever the length, with the same sums per output (the same kernel row times
    the same samples).
    """
    o, t = module.orig_freq // module.gcd, module.new_freq // module.gcd
    kernel, width = module.kernel, module.width
    taps = kernel.shape[-1]
    rows = torch.from_numpy(np.ascontiguousarray(x)).reshape(-1, x.shape[-1])
    n = rows.shape[1]
    steps = (n + 2 * width + o - taps) // o + 1
    kept = int(torch.ceil(torch.as_tensor(t * n / o)).long())  # as torchaudio computes it
    out = torch.empty(rows.shape[0], steps * t, dtype=rows.dtype)
    block = max(1, _BLOCK_VALUES // taps)
    with torch.no_grad():
        for k0 in range(0, steps, block):
            k1 = min(steps, k0 + block)
            lo, hi = k0 * o - width, (k1 - 1) * o + taps - width  # in input samples; outside [0, n) is padding
            piece = torch.zeros(rows.shape[0], hi - lo, dtype=rows.dtype)
            a, b = max(lo, 0), min(hi, n)
            if b > a:
                piece[:, a - lo:b - lo] = rows[:, a:b]
            y = torch.nn.functional.conv1d(piece[:, None], kernel, stride=o)  # (rows, t, k1 - k0)
            out[:, k0 * t:k1 * t] = y.transpose(1, 2).reshape(rows.shape[0], -1)
    return out[:, :kept].reshape(*x.shape[:-1], kept).numpy()


def _sinc_resample(x: np.ndarray, orig_sr: int, target_sr: int) -> np.ndarray:
    """torchaudio's windowed-sinc formula evaluated directly, for rate pairs whose torchaudio kernel would be huge.

    In Hz, with c = 0.99 min(orig, target): y[j] = sum_i x[i] (c / orig) sinc(pi u) cos^2(pi u / 12),
    u = c (i / orig - j / target) clamped to [-6, 6] (the reduced-rate form of the module docstring, scaled by g).
    Output j needs only the inputs i = floor(j orig / target) + k, k in [-h, h + 1], h = ceil(6 orig / c); with
    r = j orig mod target, i target - j orig = k target - r is an exact integer, and the weights depend on r and k only:
    a table of (target / g) x (2h + 2) values when that is at most `_TABLE_VALUES`, otherwise evaluated per chunk.
    Outputs are computed in chunks of about `_CHUNK_VALUES` weights, summed in float64, so besides the signal itself
    memory stays near 100 MB at most, and time grows with (output samples) x (taps) for any pair of rates.
    """
    shape = x.shape
    rows = x.reshape(-1, shape[-1])
    n = rows.shape[1]
    n_out = -(-n * target_sr // orig_sr)  # ceil(n * target / orig), exactly
    cutoff = _ROLLOFF * min(orig_sr, target_sr)
    half = math.ceil(_ZERO_CROSSINGS * orig_sr / cutoff)
    taps = np.arange(-half, half + 2, dtype=np.int64)

    def weights(offset: np.ndarray) -> np.ndarray:  # offset = i target - j orig
        u = np.clip(offset * (cutoff / (orig_sr * target_sr)), -_ZERO_CROSSINGS, _ZERO_CROSSINGS)
        return np.sinc(u) * np.cos(u * (np.pi / (2 * _ZERO_CROSSINGS))) ** 2 * (cutoff / orig_sr)

    g = math.gcd(orig_sr, target_sr)
    table = None
    if (target_sr // g) * len(taps) <= _TABLE_VALUES:
        table = weights(taps * target_sr - np.arange(0, target_sr, g, dtype=np.int64)[:, None])
    pad = half + 2
    padded = np.zeros((rows.shape[0], n + 2 * pad), dtype=np.float32)
    padded[:, pad:pad + n] = rows
    out = np.empty((rows.shape[0], n_out), dtype=np.float32)
    step = max(1, _CHUNK_VALUES // len(taps))
    for j0 in range(0, n_out, step):
        j = np.arange(j0, min(j0 + step, n_out), dtype=np.int64)[:, None]
        phase = (j * orig_sr) % target_sr
        w = table[phase[:, 0] // g] if table is not None else weights(taps * target_sr - phase)
        index = (j * orig_sr) // target_sr + taps + pad  # (outputs, taps) positions in `padded`
        for r in range(rows.shape[0]):
            out[r, j0:j0 + len(j)] = np.einsum("ok,ok->o", padded[r][index], w)
    return out.reshape(*shape[:-1], n_out)


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
    f: sf.SoundFile, label: str | Path, target_sr: int | None, max_seconds: float | None, reopen
) -> tuple[np.ndarray, int]:
    """Validate the header, read all frames as float32, check finiteness and length, downmix, resample.

    `reopen()` gives the raw bytes as a binary file, for the WAV data-chunk check.
    """
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
    data = check_levels(data, label)
    if info.format in ("WAV", "WAVEX"):
        _warn_if_truncated(reopen, data.shape[0], info.sample_rate, label)

    mono = data[:, 0] if data.shape[1] == 1 else data.mean(axis=1, dtype=np.float64).astype(np.float32)
    if target_sr is None or target_sr == info.sample_rate:
        return mono, info.sample_rate
    return resample(mono, info.sample_rate, target_sr), target_sr


def _warn_if_truncated(reopen, frames: int, sr: int, label: str | Path) -> None:
    """Warn when the WAV data chunk declares more frames than were decoded (libsndfile silently reads what is there)."""
    try:
        with reopen() as fh:
            declared = _wav_declared_frames(fh)
    except OSError:
        return
    if declared is not None and declared > frames:
        warnings.warn(f"{label}: truncated WAV: the header declares {declared} frames ({declared / sr:.2f} s) but the "
                      f"file holds {frames} ({frames / sr:.2f} s); only those are analysed", stacklevel=4)


def _wav_declared_frames(fh) -> int | None:
    """Frames the `data` chunk of a RIFF/RIFX WAVE file declares (size / block align); None when it cannot be told.

    Sizes 0 and 0xFFFFFFFF are the placeholders of streaming writers, not promises, and give None too.
    """
    head = fh.read(12)
    if len(head) < 12 or head[:4] not in (b"RIFF", b"RIFX") or head[8:12] != b"WAVE":
        return None
    endian = "<" if head[:4] == b"RIFF" else ">"
    block_align = None
    while len(chunk := fh.read(8)) == 8:
        cid, size = chunk[:4], struct.unpack(endian + "I", chunk[4:])[0]
        if cid == b"fmt ":
            fmt = fh.read(min(size, 64))
            if len(fmt) < 14:
                return None
            block_align = struct.unpack(endian + "H", fmt[12:14])[0]
            fh.seek(size - len(fmt) + size % 2, io.SEEK_CUR)
        elif cid == b"data":
            if not block_align or size in (0, 0xFFFFFFFF):
                return None
            return size // block_align
        else:
            fh.seek(size + size % 2, io.SEEK_CUR)  # chunks are padded to an even size
    return None


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


def check_levels(data: np.ndarray, label: str | Path) -> np.ndarray:
    """`data` (finite float samples) with corrupt values beyond +-`HEADROOM` clipped to +-1 and a warning naming
    `label`, when they are at most `CORRUPT_FRACTION` of the samples; more of them is a `LungsoundError` (see the
    module docstring). Data within +-`HEADROOM` is returned as it is, without a copy."""
    peak = max(float(data.max()), -float(data.min())) if data.size else 0.0  # no |data| copy of a long recording
    if peak <= HEADROOM:
        return data
    corrupt = np.abs(data) > HEADROOM
    n = int(corrupt.sum())
    if n > CORRUPT_FRACTION * data.size:
        raise LungsoundError(f"{n} of {data.size} sample values lie beyond +-{HEADROOM:g} (up to {peak:.3g}): not "
                             "audio scaled to [-1, 1] (integer-scaled float data must be divided by its full scale, "
                             "e.g. 32768)", label)
    data = data.copy()
    data[corrupt] = np.sign(data[corrupt])
    warnings.warn(f"{label}: {n} corrupt sample value(s) beyond +-{HEADROOM:g} (up to {peak:.3g}) were clipped to "
                  "+-1; the rest of the recording is used as it is", stacklevel=4)
    return data


def _positive_rate(sr: int, what: str) -> int:
    """Sample rates are positive integers (floats such as 44100.0 are accepted when integral)."""
    valid = isinstance(sr, (int, np.integer, float)) and not isinstance(sr, bool)
    if not valid or not math.isfinite(sr) or sr <= 0 or int(sr) != sr:
        raise LungsoundError(f"{what} must be a positive integer number of Hz, got {sr!r}")
    return int(sr)
