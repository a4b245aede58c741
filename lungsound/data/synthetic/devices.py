"""The four ICBHI 2017 recording devices as signal chains: frequency response, noise, sample rate, sample format.

ICBHI 2017 (Rocha et al., Physiol. Meas. 2019) was recorded with an AKG C417L microphone (AKGC417L), a 3M Littmann
Classic II SE (LittC2SE), a 3M Littmann 3200 (Litt3200) and a WelchAllyn Meditron (Meditron). Device-domain methods
([SGSCL] Kim et al., ICASSP 2024) need the synthetic set to have a real device shift, so each device here has its own
chain, calibrated by eye against the average spectra of the real recordings in `shared/data/icbhi` (power density
relative to the 100-200 Hz band):

- AKGC417L: bright and smooth (gentle second-order low-pass near 2.5 kHz), loud, most ambient noise and mains hum.
- LittC2SE: acoustic tube and diaphragm, a low resonance near 120 Hz and a steep low-pass near 350 Hz: dull.
- Litt3200: electronic, 4 kHz sample rate, presence bump near 450 Hz and a steep low-pass near 900 Hz.
- Meditron: electronic, a broad boost near 1 kHz and a steep low-pass near 1.5 kHz, rising hiss above 8 kHz.

Every response is a cascade of analog second-order sections evaluated at s = j 2 pi f (so the phase is causal and a
crackle keeps its sharp onset):

    high-pass   H(s) = (s/w)^2 / ((s/w)^2 + (s/w)/Q + 1)
    low-pass    H(s) = 1 / ((s/w)^2 + (s/w)/Q + 1)                     (Butterworth order 2k: k sections)
    peaking     H(s) = ((s/w)^2 + (s/w) A/Q + 1) / ((s/w)^2 + (s/w)/(A Q) + 1),  A = 10^(gain_db/40)

and |H| is normalised to 1 at 150 Hz, so the recording level is set separately (`level_range`, RMS in full scale).
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import numpy as np

from lungsound.data.formats.icbhi import DEVICES

REFERENCE_HZ = 150.0


@dataclass(frozen=True)
class Peak:
    """A peaking (bell) section: centre frequency, quality factor and gain in dB."""

    hz: float
    q: float
    gain_db: float


@dataclass(frozen=True)
class DeviceProfile:
    """One device's signal chain and file format."""

    name: str
    sample_rate: int
    subtypes: tuple[tuple[str, float], ...]  # (soundfile subtype, probability)
    highpass_hz: float
    lowpass_hz: float
    lowpass_sections: int  # number of second-order low-pass sections (order = 2 * sections)
    peaks: tuple[Peak, ...]
    floor_db: float  # white electronic noise density relative to the 100-200 Hz band of the signal
    hiss_db: float  # extra noise density above 8 kHz relative to the floor (0: flat floor)
    ambient_db: float  # room noise density (before the device) relative to the breath's 100-200 Hz band
    hum_probability: float  # chance that a recording has mains hum (50 or 60 Hz with harmonics)
    level_range: tuple[float, float]  # RMS of the written recording in full scale, log-uniform


PROFILES: dict[str, DeviceProfile] = {
    "AKGC417L": DeviceProfile(
        name="AKGC417L", sample_rate=44100, subtypes=(("PCM_24", 0.85), ("PCM_16", 0.15)),
        highpass_hz=10.0, lowpass_hz=2500.0, lowpass_sections=1, peaks=(Peak(1200.0, 1.0, 1.5),),
        floor_db=-50.0, hiss_db=0.0, ambient_db=-38.0, hum_probability=0.4, level_range=(0.08, 0.6),
    ),
    "LittC2SE": DeviceProfile(
        name="LittC2SE", sample_rate=44100, subtypes=(("PCM_24", 0.9), ("PCM_16", 0.1)),
        highpass_hz=12.0, lowpass_hz=300.0, lowpass_sections=1, peaks=(Peak(120.0, 1.2, 6.0),),
        floor_db=-58.0, hiss_db=0.0, ambient_db=-46.0, hum_probability=0.1, level_range=(0.03, 0.25),
    ),
    "Litt3200": DeviceProfile(
        name="Litt3200", sample_rate=4000, subtypes=(("PCM_16", 1.0),),
        highpass_hz=15.0, lowpass_hz=900.0, lowpass_sections=3, peaks=(Peak(450.0, 1.2, 6.0),),
        floor_db=-80.0, hiss_db=0.0, ambient_db=-44.0, hum_probability=0.15, level_range=(0.03, 0.08),
    ),
    "Meditron": DeviceProfile(
        name="Meditron", sample_rate=44100, subtypes=(("PCM_24", 0.75), ("PCM_16", 0.25)),
        highpass_hz=12.0, lowpass_hz=1500.0, lowpass_sections=2, peaks=(Peak(1000.0, 0.8, 3.0),),
        floor_db=-52.0, hiss_db=4.0, ambient_db=-42.0, hum_probability=0.2, level_range=(0.02, 0.1),
    ),
}
assert set(PROFILES) == set(DEVICES)


def profile(device: str) -> DeviceProfile:
    """The profile of an ICBHI device name (KeyError for an unknown one; callers validate names first)."""
    return PROFILES[device]


def choose_subtype(device: DeviceProfile, rng: np.random.Generator) -> str:
    """Draw the file's sample format from the device's mix (e.g. most AKGC417L files are 24-bit)."""
    names = [name for name, _ in device.subtypes]
    probs = np.array([p for _, p in device.subtypes], dtype=float)
    return names[int(rng.choice(len(names), p=probs / probs.sum()))]


def _second_order(s: np.ndarray, w: float, q: float, kind: str) -> np.ndarray:
    x = s / w
    den = x * x + x / q + 1.0
    return (x * x) / den if kind == "high" else 1.0 / den


def _peaking(s: np.ndarray, peak: Peak) -> np.ndarray:
    x = s / (2 * math.pi * peak.hz)
    a = 10.0 ** (peak.gain_db / 40.0)
    return (x * x + x * a / peak.q + 1.0) / (x * x + x / (a * peak.q) + 1.0)


def _butterworth_qs(sections: int) -> list[float]:
    """Q of each second-order section of a Butterworth low-pass of order 2 * sections."""
    order = 2 * sections
    return [1.0 / (2.0 * math.cos(math.pi * (2 * k + 1) / (2 * order))) for k in range(sections)]


def frequency_response(device: DeviceProfile, freqs: np.ndarray) -> np.ndarray:
    """Complex response H(f) at `freqs` (Hz): linear interpolation of `exact_response` on a 0.5 Hz grid (cached)."""
    grid, values = _response_grid(device.name)
    return np.interp(freqs, grid, values.real) + 1j * np.interp(freqs, grid, values.imag)


@functools.lru_cache(maxsize=len(PROFILES))
def _response_grid(name: str) -> tuple[np.ndarray, np.ndarray]:
    device = PROFILES[name]
    grid = np.arange(0.0, device.sample_rate / 2 + 1.0, 0.5)
    return grid, exact_response(device, grid)


def exact_response(device: DeviceProfile, freqs: np.ndarray) -> np.ndarray:
    """Complex response H(f) of the device at `freqs` (Hz), normalised to |H(150 Hz)| = 1."""

    def raw(f: np.ndarray) -> np.ndarray:
        s = 2j * math.pi * np.asarray(f, dtype=float)
        h = _second_order(s, 2 * math.pi * device.highpass_hz, 1.0 / math.sqrt(2.0), "high")
        for q in _butterworth_qs(device.lowpass_sections):
            h = h * _second_order(s, 2 * math.pi * device.lowpass_hz, q, "low")
        for peak in device.peaks:
            h = h * _peaking(s, peak)
        return h

    return raw(freqs) / abs(raw(np.array([REFERENCE_HZ]))[0])


def noise_floor_shape(device: DeviceProfile, freqs: np.ndarray) -> np.ndarray:
    """Amplitude shape of the electronic floor: flat, plus a smooth rise of `hiss_db` above about 8 kHz."""
    if device.hiss_db == 0.0:
        return np.ones_like(freqs, dtype=float)
    rise = 1.0 / (1.0 + np.exp(-(freqs - 9000.0) / 1500.0))
    return 10.0 ** (device.hiss_db * rise / 20.0)
