"""Render one synthetic recording: lay breaths and sounds on the timeline, then pass them through the device.

Timeline. Every annotated cycle is one breath: inspiration (a fraction f_i ~ 0.35-0.45 of the cycle), a short pause
(f_p ~ 3-12 %), then expiration to the end of the cycle. Gaps between annotated cycles, the time before the first cycle
and after the last are filled with unannotated breaths of the patient's typical length, so the breathing never stops.
The envelope of each phase is the smooth hump e(u) = u^a (1 - u)^b / max, u in [0, 1] across the phase (inspiration
a = 0.8, b = 1.4; expiration a = 0.6, b = 2.0, quieter by the patient's expiration level).

Sounds per breath (`sounds.py`): crackles (5-15, about 80 % inspiratory) in cycles flagged crackles=1; one to three
wheezes (about 75 % expiratory, >= 80 ms) in cycles flagged wheezes=1; heart sounds throughout; and artefacts at the
same per-breath rate whatever the label (rub 8 %, click 6 %, squeak 3 %, knock 2 %), so they never give the label away.

Device (`devices.py`), in the frequency domain on one FFT of the whole recording:
    Y(f) = H(f) [B(f) + S(f) + N_body(f) + N_room(f)] + N_floor(f)
with B the breath, S the other sources, N_* complex Gaussian noise shaped and levelled relative to the breath's (or,
for the floor, the output's) mean power density in 100-200 Hz. The result is scaled to an RMS drawn from the device's
level range; knocks are then added at 1.2-3x full scale and everything is clipped to the PCM range.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import numpy as np
import scipy.fft

from lungsound.data.synthetic import sounds
from lungsound.data.synthetic.devices import frequency_response, noise_floor_shape, profile
from lungsound.data.synthetic.spec import Cycle, RecordingSpec, recording_rng

ARTEFACT_RATES = {"rub": 0.08, "click": 0.06, "squeak": 0.03, "knock": 0.02}
HEART_BY_LOCATION = {"Al": 1.0, "Ll": 0.8, "Ar": 0.6, "Tc": 0.5, "Lr": 0.45, "Pl": 0.4, "Pr": 0.3}
REFERENCE_BAND = (100.0, 200.0)


@dataclass(frozen=True)
class Breath:
    """One breath on the timeline (seconds); `cycle` is its annotation, None for a filler breath."""

    start: float
    inspiration_end: float
    expiration_start: float
    end: float
    loudness: float
    cycle: Cycle | None


def _make_breath(start: float, end: float, voice: sounds.Voice, cycle: Cycle | None,
                 rng: np.random.Generator) -> Breath:
    length = end - start
    f_insp = float(np.clip(voice.inspiration_fraction + rng.normal(0.0, 0.03), 0.3, 0.5))
    f_pause = rng.uniform(0.03, 0.12)
    return Breath(start, start + f_insp * length, start + (f_insp + f_pause) * length, end,
                  float(rng.lognormal(0.0, 0.2)), cycle)


def _filler_lengths(total: float, voice: sounds.Voice) -> list[float]:
    pieces = max(1, int(round(total / voice.cycle_median_s)))
    return [total / pieces] * pieces


def plan_breaths(cycles: tuple[Cycle, ...], duration: float, voice: sounds.Voice,
                 rng: np.random.Generator) -> list[Breath]:
    """All breaths of a recording, in time order; annotated cycles keep their exact bounds."""
    ordered = sorted(cycles, key=lambda c: (c.start, c.end))
    breaths: list[Breath] = []
    # Before the first cycle: breaths of typical length laid backwards from its start (the first one is cut by t=0).
    t = ordered[0].start if ordered else duration
    while t > 0:
        length = voice.cycle_median_s * rng.lognormal(0.0, 0.2)
        breaths.insert(0, _make_breath(t - length, t, voice, None, rng))
        t -= length
    cursor = ordered[0].start if ordered else duration
    for cycle in ordered:
        if cycle.start > cursor + 1e-6:  # an unannotated gap: fill it with breaths
            for length in _filler_lengths(cycle.start - cursor, voice):
                breaths.append(_make_breath(cursor, cursor + length, voice, None, rng))
                cursor += length
        start = max(cycle.start, cursor)  # overlapping annotations: the breath starts where the last one ended
        if cycle.end > start:
            breaths.append(_make_breath(start, cycle.end, voice, cycle, rng))
        else:  # a cycle nested in the previous one: sounds are placed on its own bounds, no extra breath
            breaths.append(replace(_make_breath(cycle.start, cycle.end, voice, cycle, rng), loudness=0.0))
        cursor = max(cursor, cycle.end)
    while cursor < duration:
        length = voice.cycle_median_s * rng.lognormal(0.0, 0.2)
        breaths.append(_make_breath(cursor, cursor + length, voice, None, rng))
        cursor += length
    return breaths


def _hump(n: int, a: float, b: float) -> np.ndarray:
    u = (np.arange(n) + 0.5) / max(n, 1)
    peak = (a / (a + b)) ** a * (b / (a + b)) ** b
    return u ** a * (1.0 - u) ** b / peak


def _place_envelope(env: np.ndarray, start: float, end: float, sr: int, a: float, b: float, gain: float) -> None:
    i0, i1 = int(round(start * sr)), int(round(end * sr))
    if i1 <= i0 or gain == 0.0:
        return
    hump = gain * _hump(i1 - i0, a, b)
    lo, hi = max(0, i0), min(len(env), i1)
    if hi > lo:
        env[lo:hi] = np.maximum(env[lo:hi], hump[lo - i0:hi - i0])


def _phase_time(breath: Breath, inspiratory: bool, u: float) -> float:
    if inspiratory:
        return breath.start + u * (breath.inspiration_end - breath.start)
    return breath.expiration_start + u * (breath.end - breath.expiration_start)


def _add_crackles(out: np.ndarray, sr: int, breath: Breath, voice: sounds.Voice, gain: float,
                  rng: np.random.Generator) -> None:
    coarse_cycle = rng.random() < voice.coarse_probability
    for _ in range(int(rng.integers(5, 16))):
        coarse = coarse_cycle if rng.random() < 0.8 else not coarse_cycle
        inspiratory = rng.random() < 0.8
        if inspiratory:
            u = rng.uniform(0.0, 0.6) if coarse else rng.uniform(0.35, 1.0)
        else:
            u = rng.uniform(0.0, 0.8)
        wave = sounds.crackle(sr, coarse, rng)
        sounds.add_at(out, wave, int(_phase_time(breath, inspiratory, u) * sr), gain * rng.lognormal(0.0, 0.3))


def _add_wheezes(out: np.ndarray, sr: int, breath: Breath, voice: sounds.Voice, gain: float,
                 rng: np.random.Generator) -> None:
    count = int(rng.choice([1, 2, 3], p=[0.7, 0.25, 0.05]))
    for _ in range(count):
        inspiratory = rng.random() < 0.25
        lo = breath.start if inspiratory else breath.expiration_start
        hi = breath.inspiration_end if inspiratory else breath.end
        if hi - lo < 0.09:  # phase too short: use the whole cycle
            lo, hi = breath.start, breath.end
        span = hi - lo
        duration = float(np.clip(rng.lognormal(math.log(0.6), 0.5), 0.08, max(0.08, 0.9 * span)))
        duration = min(duration, breath.end - breath.start) if breath.end - breath.start >= 0.08 else 0.08
        start = lo + rng.uniform(0.0, max(0.0, span - duration))
        f0 = float(np.clip(voice.wheeze_f0_hz * rng.lognormal(0.0, 0.2), 100.0, 1000.0))
        wave = sounds.wheeze(sr, duration, f0, rng)
        sounds.add_at(out, wave, int(start * sr), gain * rng.lognormal(0.0, 0.25))


def _add_artefacts(out: np.ndarray, knocks: list[tuple[int, float]], sr: int, breath: Breath,
                   rng: np.random.Generator) -> None:
    span = breath.end - breath.start
    if rng.random() < ARTEFACT_RATES["rub"]:
        sounds.add_at(out, sounds.rub(sr, rng), int((breath.start + rng.uniform(0, span)) * sr), rng.uniform(0.5, 3.0))
    if rng.random() < ARTEFACT_RATES["click"]:
        for _ in range(int(rng.integers(1, 3))):
            at = int((breath.start + rng.uniform(0, span)) * sr)
            sounds.add_at(out, sounds.click(sr, rng), at, rng.uniform(2.0, 10.0))
    if rng.random() < ARTEFACT_RATES["squeak"]:
        at = int((breath.start + rng.uniform(0, span)) * sr)
        sounds.add_at(out, sounds.squeak(sr, rng), at, rng.uniform(0.3, 1.5))
    if rng.random() < ARTEFACT_RATES["knock"]:
        knocks.append((int((breath.start + rng.uniform(0, span)) * sr), rng.uniform(1.2, 3.0)))


def _complex_noise(nbins: int, rng: np.random.Generator) -> np.ndarray:
    """Circular complex Gaussian spectrum with E|W|^2 = 1 (complex64)."""
    pair = rng.standard_normal(2 * nbins, dtype=np.float32).view(np.complex64)
    return pair * np.float32(1.0 / math.sqrt(2.0))


def _band_mean(values: np.ndarray, freqs: np.ndarray) -> float:
    band = (freqs >= REFERENCE_BAND[0]) & (freqs < REFERENCE_BAND[1])
    return float(np.mean(values[band])) if band.any() else float(np.mean(values))


def _breath_noise(spec: RecordingSpec, breaths: list[Breath], sr: int, n: int, nfft: int, freqs: np.ndarray,
            rng: np.random.Generator) -> tuple[np.ndarray, float]:
    """Breath noise and its mean power density in 100-200 Hz (periodogram scale of an nfft-point rfft).

    One white spectrum W is shaped for inspiration (S_i) and for the darker expiration (S_e); each is normalised to
    unit RMS (divided by c) and multiplied by its envelope. As the envelopes are disjoint and smooth, the density
    is about (n / nfft) sum_phase mean(env^2) mean_band |W S|^2 / c^2, which avoids a further FFT.
    """
    voice, tracheal = spec.voice, spec.location == "Tc"
    high = min(voice.breath_high_hz * (2.0 if tracheal else 1.0), 0.4 * sr)
    white = _complex_noise(len(freqs), rng)
    exp_level = max(voice.expiration_level, rng.uniform(0.8, 1.1)) if tracheal else voice.expiration_level
    out = np.zeros(n, dtype=np.float32)
    density = 0.0
    for cutoff, (a, b), level, edge in ((high, (0.8, 1.4), 1.0, "insp"), (0.75 * high, (0.6, 2.0), exp_level, "exp")):
        shaped = white * sounds.band_shape(freqs, voice.breath_low_hz, cutoff, voice.breath_order).astype(np.float32)
        noise = scipy.fft.irfft(shaped, nfft)[:n]
        power = float(np.mean(noise.astype(np.float64) ** 2)) + 1e-20
        env = np.full(n, 0.04, dtype=np.float32)
        for br in breaths:
            lo, hi = (br.start, br.inspiration_end) if edge == "insp" else (br.expiration_start, br.end)
            _place_envelope(env, lo, hi, sr, a, b, br.loudness * level)
        out += noise * env / np.float32(math.sqrt(power))
        density += float(np.mean(env.astype(np.float64) ** 2)) * _band_mean(np.abs(shaped) ** 2, freqs) / power
    return out, density * n / nfft


def _sources(spec: RecordingSpec, breaths: list[Breath], sr: int, n: int, hum_probability: float,
             rng: np.random.Generator) -> tuple[np.ndarray, list[tuple[int, float]]]:
    """Heart, adventitious sounds, artefacts and hum in breath units; knocks are returned to be added last."""
    voice = spec.voice
    other = sounds.heart_track(n, sr, voice.heart_rate_bpm * rng.lognormal(0.0, 0.05),
                               voice.heart_gain * HEART_BY_LOCATION.get(spec.location, 0.5), rng)
    crackle_gain = voice.crackle_gain * rng.lognormal(0.0, 0.35)  # per-recording jitter of the levels
    wheeze_gain = voice.wheeze_gain * rng.lognormal(0.0, 0.35)
    knocks: list[tuple[int, float]] = []
    for br in breaths:
        if br.cycle is not None and br.cycle.crackles:
            _add_crackles(other, sr, br, voice, crackle_gain, rng)
        if br.cycle is not None and br.cycle.wheezes:
            _add_wheezes(other, sr, br, voice, wheeze_gain, rng)
        _add_artefacts(other, knocks, sr, br, rng)
    if rng.random() < hum_probability:
        mains = 50.0 if rng.random() < 0.5 else 60.0
        t = np.arange(n, dtype=np.float32) / np.float32(sr)
        level = rng.uniform(0.01, 0.15)
        for k in range(1, 5):  # odd harmonics, as from a saturating mains transformer
            omega = np.float32(2 * np.pi * mains * (2 * k - 1))
            other += level / k ** 2 * np.sin(omega * t + rng.uniform(0, 2 * np.pi))
    return other, knocks


def render(spec: RecordingSpec) -> np.ndarray:
    """The recording of `spec` as float samples in [-1, 1] at the device's sample rate (deterministic).

    Device chain: Y = H (B + S) + W sqrt(|H|^2 P_pre + P_floor), where the body rumble and room noise (power shape
    P_pre, levelled on the breath density) and the electronic floor (P_floor, levelled on the output density) are
    independent Gaussian noises and so combine into one noise spectrum W of that total power.
    """
    rng = recording_rng(spec.seed, spec.index)
    device = profile(spec.device)
    sr = device.sample_rate
    n = max(1, int(round(spec.duration * sr)))
    nfft = scipy.fft.next_fast_len(n, real=True)
    freqs = scipy.fft.rfftfreq(nfft, 1.0 / sr)

    breaths = plan_breaths(spec.cycles, spec.duration, spec.voice, rng)
    breath, reference = _breath_noise(spec, breaths, sr, n, nfft, freqs, rng)
    other, knocks = _sources(spec, breaths, sr, n, device.hum_probability, rng)

    response = frequency_response(device, freqs)
    gain2 = np.abs(response) ** 2
    signal = scipy.fft.rfft(breath + other.astype(np.float32), nfft) * response.astype(np.complex64)
    ambient_db = device.ambient_db + rng.uniform(-6.0, 6.0)
    pre = reference * (10 ** (spec.voice.rumble_db / 10) * sounds.rumble_shape(freqs) ** 2
                       + 10 ** (ambient_db / 10) * sounds.pink_shape(freqs) ** 2)
    out_density = _band_mean(np.abs(signal) ** 2, freqs) + _band_mean(gain2 * pre, freqs)
    floor_db = device.floor_db + rng.uniform(-4.0, 4.0)
    floor = out_density * 10 ** (floor_db / 10) * noise_floor_shape(device, freqs) ** 2
    signal += _complex_noise(len(freqs), rng) * np.sqrt(gain2 * pre + floor).astype(np.float32)
    out = scipy.fft.irfft(signal, nfft)[:n].astype(np.float64)

    low, high = device.level_range
    target = math.exp(rng.uniform(math.log(low), math.log(high)))
    out *= target / (math.sqrt(float(np.mean(out ** 2))) + 1e-12)
    for at, peak in knocks:
        sounds.add_at(out, sounds.knock(sr, rng), at, peak * (1.0 if rng.random() < 0.5 else -1.0))
    return np.clip(out, -1.0, 1.0)
