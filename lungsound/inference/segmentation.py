"""Where the segments of a whole recording lie: annotated cycles, detected breathing cycles, or sliding windows.

The models are trained on single respiratory cycles (docs/methods.md section 2), so a recording without annotation is first
cut into breathing cycles. Breath sounds are loudest during inspiration, quieter during expiration, and nearly absent
in the pause before the next inspiration; the quiet points of the breath-sound envelope therefore separate cycles.

Breath envelope (at `rate` = 100 frames per second, hop h = sr / rate samples):

1. Band-pass 100-1000 Hz (4th-order Butterworth, zero-phase `sosfiltfilt`): keeps the breath-sound band and removes
   heart sounds (mostly below 100 Hz) and high-frequency noise.
2. Frame energy e[k] = (1/h) sum of y[n]^2 over frame k, smoothed by a centred moving average of `smooth` seconds.
3. Log scale E[k] = 10 log10(e[k] + eps) (dB), so that a threshold means the same for loud and quiet recordings.

Cycle boundaries are quiet points of E:

4. Breathing period P: the autocorrelation of E - mean(E) at lags within the plausible cycle lengths; P is the
   shortest lag whose peak reaches 0.8 of the highest peak (multiples of P correlate almost as well), trusted when that
   peak is at least `min_periodicity`. With a trusted P, E is re-smoothed over `smooth_fraction` * P (short dips such as
   the inspiration-expiration turn vanish, the pause before the next breath stays) and boundaries are at least
   `gap_fraction` * P apart; otherwise at least `min_gap` seconds.
5. Minima: `scipy.signal.find_peaks(-E, distance=..., prominence=prominence_db)` (a quiet point lies at least
   `prominence_db` below the loud phases around it). Each boundary is the centre of the stretch around its minimum
   where E stays within `plateau_db` of the minimum (the middle of a pause rather than a random frame of its floor).
6. Segments run between consecutive boundaries and from the start to the first and the last to the end of the
   recording, so they cover it without gaps. A segment shorter than `min_cycle` is merged into its shorter neighbour,
   one longer than `max_cycle` is split into equal parts.

When no boundary is found (constant noise, a tone, a recording shorter than two cycles) the detector returns nothing and
the caller falls back to sliding windows. On the 29 ICBHI recordings with audio, the number of detected cycles within
the annotated stretch is within a factor 2 of the annotated count for 28 (median ratio 1.0), and 57% of the
annotated cycle starts lie within 0.5 s of a detected boundary (annotators mark cycle starts; quiet points are fuzzy).

The detector also returns nothing when the breath band holds no sound at all: when the median frame energy e[k] is
below `silence_db` (-100 dB re full scale, just above the quantisation noise of 16-bit audio in that band, about
-110 dB; the 29 ICBHI recordings have medians of -62 to -22 dB). A constant (DC) signal, digital silence or a tone far
outside the band is such a case: its envelope is a numerical floor (-120 dB) whose only bumps are the transients that
the steps at its two ends leave (the resampler pads with zeros), and the minima of that floor are no breathing pauses.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy import signal
from scipy.ndimage import uniform_filter1d

from lungsound.data.annotations import Cycle, read_annotation
from lungsound.errors import LungsoundError

Span = tuple[float, float]  # (start, end) in seconds
BLOCK_SECONDS, MARGIN_SECONDS = 60.0, 2.0  # the breath band is filtered in blocks of this length, with these margins


@dataclass(frozen=True)
class BreathConfig:
    """Parameters of the breathing-cycle detector (see the module docstring)."""

    low_hz: float = 100.0
    high_hz: float = 1000.0
    rate: int = 100  # envelope frames per second
    smooth: float = 0.2  # seconds of moving-average smoothing
    min_gap: float = 1.0  # seconds between two boundaries at least
    gap_fraction: float = 0.6  # with a clear breathing period P, boundaries are at least gap_fraction * P apart
    min_periodicity: float = 0.3  # autocorrelation needed to trust P
    plateau_db: float = 1.0  # a boundary is the centre of the quiet stretch within this many dB of the minimum
    smooth_fraction: float = 0.1  # with a clear period P, the minima are found after smoothing over this * P
    prominence_db: float = 3.0
    silence_db: float = -100.0  # a median band energy below this (dB re full scale) means no breath sound at all
    min_cycle: float = 1.0  # plausible cycle lengths, seconds
    max_cycle: float = 8.0

    def __post_init__(self):
        if not 0 < self.low_hz < self.high_hz:
            raise LungsoundError(f"breath band must satisfy 0 < low_hz < high_hz, got {self.low_hz}-{self.high_hz} Hz")
        if not 0 < self.min_cycle < self.max_cycle:
            raise LungsoundError(f"cycle lengths must satisfy 0 < min_cycle < max_cycle, got {self.min_cycle} and "
                                 f"{self.max_cycle}")


def breath_envelope(x: np.ndarray, sr: int, cfg: BreathConfig = BreathConfig(), smooth: float | None = None
                    ) -> np.ndarray:
    """The smoothed log-energy envelope E (dB) of the breath band, one value per 1 / cfg.rate seconds.

    `smooth` overrides `cfg.smooth` (seconds of moving average).
    """
    return _smooth_db(_band_energy(x, sr, cfg), cfg.smooth if smooth is None else smooth, cfg.rate)


def detect_breath_cycles(x: np.ndarray, sr: int, cfg: BreathConfig = BreathConfig()) -> list[Span]:
    """Consecutive breathing cycles covering the recording, or [] when no quiet point between breaths is found."""
    duration = len(x) / sr
    energy = _band_energy(x, sr, cfg)
    if len(energy) < 3 or band_is_silent(energy, cfg):
        return []
    envelope = _smooth_db(energy, cfg.smooth, cfg.rate)
    period = breath_period(envelope, cfg)
    min_gap = cfg.min_gap
    if period is not None:  # a clear rhythm: smooth away short dips (inspiration -> expiration), keep the pauses
        min_gap = max(cfg.min_gap, cfg.gap_fraction * period)
        envelope = _smooth_db(energy, max(cfg.smooth, cfg.smooth_fraction * period), cfg.rate)
    minima, _ = signal.find_peaks(-envelope, distance=max(1, int(min_gap * cfg.rate)), prominence=cfg.prominence_db)
    if len(minima) == 0:
        return []
    edges = [0.0] + [(_quiet_centre(envelope, k, cfg.plateau_db) + 0.5) / cfg.rate for k in minima] + [duration]
    spans = regularize([(a, b) for a, b in zip(edges[:-1], edges[1:]) if b > a], cfg.min_cycle, cfg.max_cycle)
    return spans if len(spans) >= 2 else []


def band_is_silent(energy: np.ndarray, cfg: BreathConfig = BreathConfig()) -> bool:
    """True when the median frame energy of the breath band is below `cfg.silence_db`: nothing there to segment.

    The median ignores the transients a step at either end of the recording leaves in the first and last frames.
    """
    return bool(10.0 * np.log10(np.median(energy) + 1e-30) < cfg.silence_db)


def _quiet_centre(envelope: np.ndarray, k: int, tolerance_db: float) -> float:
    """Centre of the stretch around minimum k where the envelope stays within `tolerance_db` of E[k]: a long pause
    has a noisy, flat floor, and its middle is a steadier boundary than the exact lowest frame."""
    quiet = envelope <= envelope[k] + tolerance_db
    lo, hi = k, k
    while lo > 0 and quiet[lo - 1]:
        lo -= 1
    while hi < len(envelope) - 1 and quiet[hi + 1]:
        hi += 1
    return (lo + hi) / 2


def _band_energy(x: np.ndarray, sr: int, cfg: BreathConfig) -> np.ndarray:
    """Mean square of the band-passed signal per frame of sr / cfg.rate samples.

    The zero-phase filter runs over blocks of `BLOCK_SECONDS` (whole frames) read with `MARGIN_SECONDS` of the signal
    on either side, so its float64 buffers stay bounded however long the recording: the filter's response to the
    block's own ends has died out within the margin (what is left is float64 rounding, about 1e-14 of the energy),
    which is cut off again, and the recording's own ends are filtered as in one pass over it.
    """
    hop = max(1, int(round(sr / cfg.rate)))
    high = min(cfg.high_hz, 0.45 * sr)  # a 4 kHz recording has nothing above 2 kHz
    sos = signal.butter(4, [cfg.low_hz, high], btype="bandpass", fs=sr, output="sos")
    n_frames = len(x) // hop
    if not n_frames:
        return np.zeros(0)
    block = hop * max(1, int(BLOCK_SECONDS * sr) // hop)
    margin = int(MARGIN_SECONDS * sr)
    energy = np.empty(n_frames)
    for start in range(0, n_frames * hop, block):
        stop = min(start + block, n_frames * hop)
        lo = 0 if start <= margin else start - margin
        hi = len(x) if stop + margin >= len(x) else stop + margin
        y = signal.sosfiltfilt(sos, np.asarray(x[lo:hi], dtype=np.float64))[start - lo:stop - lo]
        energy[start // hop:stop // hop] = np.mean(y.reshape(-1, hop) ** 2, axis=1)
    return energy


def _smooth_db(energy: np.ndarray, seconds: float, rate: int) -> np.ndarray:
    width = max(1, int(round(seconds * rate)))
    return 10.0 * np.log10(uniform_filter1d(energy, size=width, mode="nearest") + 1e-12) if len(energy) else energy


def breath_period(envelope: np.ndarray, cfg: BreathConfig = BreathConfig()) -> float | None:
    """The breathing period (seconds) from the autocorrelation of the envelope, or None without a clear rhythm.

    Among the autocorrelation peaks at plausible cycle lengths, the shortest lag whose peak reaches 0.8 of the highest
    (multiples of the period correlate almost as well as the period itself); None when that peak is below
    `cfg.min_periodicity`.
    """
    e = envelope - envelope.mean()
    lo, hi = int(cfg.min_cycle * cfg.rate), min(int(cfg.max_cycle * cfg.rate), len(e) // 2)
    if hi <= lo + 2 or not np.any(e):
        return None
    # Lags 0..hi+1 only (a full autocorrelation costs len(e)^2: minutes for a long recording); the same dot products.
    acf = np.array([np.dot(e[:len(e) - k], e[k:]) for k in range(min(hi + 2, len(e)))])
    acf = acf / acf[0]
    peaks, _ = signal.find_peaks(acf)
    peaks = peaks[(peaks >= lo) & (peaks <= hi)]
    if len(peaks) == 0:
        return None
    # The first peak nearly as high as the highest: multiples of the period correlate almost as well as the period.
    best = peaks[np.argmax(acf[peaks] >= 0.8 * acf[peaks].max())]
    return float(best) / cfg.rate if acf[best] >= cfg.min_periodicity else None


def regularize(spans: list[Span], min_len: float, max_len: float) -> list[Span]:
    """Merge spans shorter than `min_len` into their shorter neighbour, then split those longer than `max_len`.

    `spans` must be consecutive (each starts where the previous ends); the result is consecutive over the same range.
    """
    spans = list(spans)
    while len(spans) > 1:
        lengths = [b - a for a, b in spans]
        i = int(np.argmin(lengths))
        if lengths[i] >= min_len:
            break
        if i == 0:
            j = 1
        elif i == len(spans) - 1:
            j = i - 1
        else:
            j = i - 1 if lengths[i - 1] <= lengths[i + 1] else i + 1
        lo, hi = min(i, j), max(i, j)
        spans[lo:hi + 1] = [(spans[lo][0], spans[hi][1])]
    out: list[Span] = []
    for a, b in spans:
        parts = max(1, math.ceil((b - a) / max_len - 1e-9))
        edges = [a] + [a + (b - a) * k / parts for k in range(1, parts)] + [b]
        out.extend(zip(edges[:-1], edges[1:]))
    return out


def sliding_windows(duration: float, window: float, hop: float | None = None) -> list[Span]:
    """Windows of `window` seconds every `hop` seconds (default window / 2) from 0; the last one ends at `duration`.

    A recording shorter than one window is a single segment (0, duration).
    """
    if window <= 0 or duration <= 0:
        raise LungsoundError(f"window and duration must be positive, got {window} and {duration}")
    hop = window / 2 if hop is None else hop
    if not 0 < hop <= window:
        raise LungsoundError(f"window hop must satisfy 0 < hop <= window ({window} s), got {hop}")
    if duration <= window:
        return [(0.0, float(duration))]
    n = math.ceil((duration - window) / hop - 1e-9)  # windows before the last one
    starts = [k * hop for k in range(n)] + [duration - window]
    return [(float(s), float(s + window)) for s in starts]


def annotated_cycles(annotation: str | Path | list, duration: float,
                     source: str | Path = "") -> tuple[list[Span], list[str]]:
    """The cycles of an ICBHI annotation (a `.txt` path, or a list of Cycle / (start, end)) that lie in the audio.

    Returns (spans, warnings): cycles starting at or after the end of the audio are dropped, those running past it are
    cut at the end, each with a warning. Raises when no cycle lies in the audio.
    """
    if isinstance(annotation, (str, Path)):
        items = [(c.start, c.end) for c in read_annotation(annotation)]
        where = Path(annotation).name
    else:
        items = [(c.start, c.end) if isinstance(c, Cycle) else _pair(c) for c in annotation]
        where = "the annotation"
    warnings: list[str] = []
    dropped = [(a, b) for a, b in items if a >= duration]
    if dropped:
        warnings.append(f"{len(dropped)} cycle(s) of {where} start after the end of the audio ({duration:.2f} s) "
                        "and were skipped")
    cut = sum(1 for a, b in items if a < duration < b)
    if cut:
        warnings.append(f"{cut} cycle(s) of {where} run past the end of the audio and were cut at {duration:.2f} s")
    spans = [(float(a), float(min(b, duration))) for a, b in items if a < duration]
    if not spans:
        raise LungsoundError(f"no annotated cycle lies within the audio ({duration:.2f} s)", source)
    return spans, warnings


def _pair(item) -> Span:
    try:
        start, end = (float(v) for v in item)
    except (TypeError, ValueError):
        raise LungsoundError(f"an annotated cycle must be (start, end) in seconds, got {item!r}") from None
    if not (0 <= start < end) or not math.isfinite(end):
        raise LungsoundError(f"an annotated cycle must have 0 <= start < end, got {start} to {end}")
    return start, end
