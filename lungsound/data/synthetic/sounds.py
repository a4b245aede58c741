"""Sound sources of the synthetic lung-sound model: breath noise, crackles, wheezes, heart sounds and artefacts.

Each function returns a waveform in "breath units" (1 = RMS of the inspiratory breath noise at its loudest), at the
device's sample rate; `render.py` places them on the recording's timeline. The shapes follow the clinical description
of adventitious sounds used by the ICBHI 2017 annotators (Rocha et al., Physiol. Meas. 2019) and the computerized
respiratory sound analysis guidelines (CORSA, Sovijarvi et al., Eur. Respir. Rev. 2000):

- Breath: band-limited noise, amplitude shape  |B(f)| = hp(f) / (1 + (f / f_hi)^(2 m))^(1/2),  hp(f) = (f/f_lo)^2 /
  (1 + (f/f_lo)^2),  with f_lo 80-130 Hz, f_hi 110-310 Hz and m = 2-3 per patient (f_hi doubled at the trachea).
- Crackle: explosive transient x(t) = e(t) sin(phi(t)), phi(t) = 2 pi int_0^t f(u) du with a falling frequency
  f(u) = f0 (1 - 0.4 u / D) (the period lengthens, as in real crackles) and envelope e(t) = (1 - exp(-t / tau_r))
  exp(-t / tau_d). The first half period is the initial deflection: fine crackles f0 500-1000 Hz, D < 10 ms;
  coarse crackles f0 150-350 Hz, D 10-25 ms.
- Wheeze: sum_k r^(k-1) sin(k phi(t) + theta_k) with f(t) = f0 (1 + g u) (1 + 0.01 sin(2 pi 5 t)), f0 in
  100-1000 Hz, pitch glide g, harmonic ratio r, raised-cosine attack and release, duration >= 80 ms.
- Heart: S1 and S2 as Gaussian-windowed damped low-frequency tones (S1 30-120 Hz, ~100 ms; S2 50-150 Hz, shorter).
- Artefacts: friction/handling rubs (rough broadband bursts), stethoscope clicks (single transients), squeaks (short
  tones at 1-2.5 kHz, under 80 ms) and knocks (low-frequency bumps that drive the recording into clipping).

Harmonics or tones above 0.45 * sample rate are left out, so the 4 kHz Litt3200 files carry no aliasing.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Voice:
    """Per-patient timbre: what makes one patient's recordings sound alike."""

    breath_low_hz: float  # high-pass corner of the breath noise
    breath_high_hz: float  # low-pass corner of the breath noise
    breath_order: int  # roll-off order m of the breath noise above breath_high_hz
    heart_rate_bpm: float
    heart_gain: float  # S1 peak in breath units
    rumble_db: float  # sub-40 Hz body noise density relative to the breath's 100-200 Hz band
    cycle_median_s: float  # typical respiratory cycle length
    inspiration_fraction: float  # share of the cycle taken by inspiration (expiration and pause share the rest)
    expiration_level: float  # expiratory loudness relative to inspiratory
    crackle_gain: float  # typical crackle peak in breath units
    coarse_probability: float  # chance that a crackle is coarse rather than fine
    wheeze_gain: float  # typical wheeze RMS in breath units
    wheeze_f0_hz: float  # centre of the patient's wheeze pitch


def band_shape(freqs: np.ndarray, low_hz: float, high_hz: float, order: int) -> np.ndarray:
    """Amplitude shape |B(f)| of band-limited noise (see module docstring), float32; peak value about 1."""
    f = np.asarray(freqs, dtype=np.float32)
    lo2 = np.square(f / np.float32(low_hz))
    hi2 = np.square(f / np.float32(high_hz))
    return lo2 / (1.0 + lo2) / np.sqrt(1.0 + hi2 ** int(order))


def rumble_shape(freqs: np.ndarray) -> np.ndarray:
    """Amplitude shape of low-frequency body and muscle noise: about 1 from 5 to 25 Hz, -9 dB per octave to 80 Hz,
    then -33 dB per octave (it must not reach the breath band)."""
    f = np.maximum(np.asarray(freqs, dtype=float), 1e-3)
    return (f / 5.0) ** 2 / (1.0 + (f / 5.0) ** 2) / (1.0 + (f / 25.0) ** 2) ** 0.75 / (1.0 + (f / 80.0) ** 4)


def pink_shape(freqs: np.ndarray) -> np.ndarray:
    """Amplitude shape of room noise: pink (1/f power) above 100 Hz, flat below; 1 at 100-150 Hz."""
    f = np.maximum(np.asarray(freqs, dtype=float), 1e-3)
    return 1.0 / np.sqrt(1.0 + f / 125.0) * math.sqrt(2.0)


def raised_cosine_envelope(n: int, ramp: int) -> np.ndarray:
    """Ones with raised-cosine attack and release of `ramp` samples each (shortened for short signals)."""
    env = np.ones(n)
    ramp = max(1, min(ramp, n // 2))
    rise = 0.5 - 0.5 * np.cos(np.pi * np.arange(ramp) / ramp)
    env[:ramp] = rise
    env[n - ramp:] = rise[::-1]
    return env


def _tone_phase(freq: np.ndarray, sr: int) -> np.ndarray:
    return 2.0 * np.pi * np.cumsum(freq) / sr


def crackle(sr: int, coarse: bool, rng: np.random.Generator) -> np.ndarray:
    """One crackle with unit peak: fine (f0 500-1000 Hz, D < 10 ms) or coarse (f0 150-350 Hz, D 10-25 ms)."""
    if coarse:
        f0, duration = rng.uniform(150.0, 350.0), rng.uniform(0.010, 0.025)
    else:
        f0 = rng.uniform(500.0, 1000.0)
        duration = min(0.0095, rng.uniform(3.0, 6.0) / f0)
    f0 = min(f0, 0.45 * sr)
    n = max(4, int(round(duration * sr)))
    t = np.arange(n) / sr
    phase = _tone_phase(f0 * (1.0 - 0.4 * t / duration), sr)
    env = (1.0 - np.exp(-t / (0.04 / f0))) * np.exp(-t / (rng.uniform(0.8, 1.5) / f0))
    wave = env * np.sin(phase)
    wave *= raised_cosine_envelope(n, max(1, n // 8)) ** 0.25  # no step at the end
    peak = np.max(np.abs(wave))
    sign = 1.0 if rng.random() < 0.5 else -1.0
    return sign * wave / peak if peak > 0 else wave


def wheeze(sr: int, duration: float, f0: float, rng: np.random.Generator) -> np.ndarray:
    """A wheeze of unit RMS: a tone with harmonics, a pitch glide, slight vibrato and smooth onset/offset."""
    n = max(8, int(round(duration * sr)))
    t = np.arange(n) / sr
    glide = rng.uniform(-0.3, 0.2)
    vibrato = 1.0 + 0.01 * np.sin(2 * np.pi * rng.uniform(3.0, 7.0) * t + rng.uniform(0, 2 * np.pi))
    freq = f0 * (1.0 + glide * t / max(duration, 1e-9)) * vibrato
    phase = _tone_phase(freq, sr)
    ratio = rng.uniform(0.25, 0.6)
    wave = np.zeros(n)
    for k in range(1, 6):
        if k * freq.max() >= 0.45 * sr:
            break
        wave += ratio ** (k - 1) * np.sin(k * phase + rng.uniform(0, 2 * np.pi))
    wave *= 1.0 + 0.15 * np.sin(2 * np.pi * rng.uniform(2.0, 8.0) * t)  # slow amplitude flutter
    wave *= raised_cosine_envelope(n, int(rng.uniform(0.015, 0.04) * sr))
    rms = math.sqrt(float(np.mean(wave ** 2)))
    return wave / rms if rms > 0 else wave


def _damped_tone(sr: int, freq: float, sigma: float, rng: np.random.Generator) -> np.ndarray:
    t = np.arange(-3.0 * sigma, 3.0 * sigma, 1.0 / sr)
    return np.exp(-0.5 * (t / sigma) ** 2) * np.sin(2 * np.pi * freq * t + rng.uniform(0, 2 * np.pi))


def heart_sound(sr: int, first: bool, rng: np.random.Generator) -> np.ndarray:
    """S1 (first=True: lower, longer) or S2 with unit peak."""
    if first:
        parts = [_damped_tone(sr, rng.uniform(30, 60), rng.uniform(0.018, 0.03), rng),
                 0.6 * _damped_tone(sr, rng.uniform(60, 120), rng.uniform(0.012, 0.02), rng)]
    else:
        parts = [_damped_tone(sr, rng.uniform(50, 150), rng.uniform(0.01, 0.016), rng)]
    n = max(len(p) for p in parts)
    wave = np.zeros(n)
    for p in parts:
        start = (n - len(p)) // 2
        wave[start:start + len(p)] += p
    return wave / np.max(np.abs(wave))


def heart_track(n: int, sr: int, rate_bpm: float, gain: float, rng: np.random.Generator) -> np.ndarray:
    """S1-S2 pairs at `rate_bpm` (3 % beat-to-beat jitter) over n samples; S1 peak = gain, S2 about 0.6 * gain."""
    out = np.zeros(n)
    s1, s2 = heart_sound(sr, True, rng), heart_sound(sr, False, rng)
    rr = 60.0 / rate_bpm
    t = rng.uniform(0.0, rr)
    while t < n / sr:
        beat_rr = rr * (1.0 + 0.03 * rng.standard_normal())
        systole = 0.3 * math.sqrt(beat_rr)
        add_at(out, s1, int(t * sr), gain * rng.lognormal(0.0, 0.1))
        add_at(out, s2, int((t + systole) * sr), 0.6 * gain * rng.lognormal(0.0, 0.15))
        t += beat_rr
    return out


def rub(sr: int, rng: np.random.Generator) -> np.ndarray:
    """Friction/handling rub with unit RMS: 50-300 ms of rough, creaking broadband noise (150-2500 Hz)."""
    n = int(rng.uniform(0.05, 0.3) * sr)
    spec = np.fft.rfft(rng.standard_normal(n))
    f = np.fft.rfftfreq(n, 1.0 / sr)
    spec *= band_shape(f, 150.0, min(2500.0, 0.4 * sr), 2)
    noise = np.fft.irfft(spec, n)
    grains = max(2, int(n / sr * rng.uniform(30, 80)))  # creaks: rough amplitude modulation
    rough = np.interp(np.arange(n), np.linspace(0, n - 1, grains), rng.uniform(0.1, 1.0, grains) ** 2)
    wave = noise * rough * raised_cosine_envelope(n, n // 6)
    rms = math.sqrt(float(np.mean(wave ** 2)))
    return wave / rms if rms > 0 else wave


def click(sr: int, rng: np.random.Generator) -> np.ndarray:
    """Stethoscope click or pop with unit peak: a very short broadband transient, easily mistaken for a crackle."""
    return crackle(sr, coarse=bool(rng.random() < 0.3), rng=rng)


def squeak(sr: int, rng: np.random.Generator) -> np.ndarray:
    """Skin or hair squeak with unit RMS: a short (30-80 ms) tone at 1-2.5 kHz, or at 0.4 * sr if that is lower."""
    f0 = min(rng.uniform(1000.0, 2500.0), 0.4 * sr)
    return wheeze(sr, rng.uniform(0.03, 0.08), f0, rng)


def knock(sr: int, rng: np.random.Generator) -> np.ndarray:
    """Chest-piece knock with unit peak: a 20-60 Hz bump with a sharp onset (drives the recording into clipping)."""
    n = int(rng.uniform(0.08, 0.25) * sr)
    t = np.arange(n) / sr
    wave = np.sin(2 * np.pi * rng.uniform(20.0, 60.0) * t) * np.exp(-t / (0.3 * n / sr))
    wave *= raised_cosine_envelope(n, max(1, int(0.003 * sr)))
    return wave / np.max(np.abs(wave))


def add_at(out: np.ndarray, wave: np.ndarray, start: int, gain: float = 1.0) -> None:
    """out[start : start + len(wave)] += gain * wave, clipped to the bounds of `out`."""
    lo, hi = max(0, start), min(len(out), start + len(wave))
    if hi > lo:
        out[lo:hi] += gain * wave[lo - start:hi - start]
