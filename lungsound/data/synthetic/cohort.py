"""Plan a synthetic ICBHI-like cohort: patients, their recordings, cycle labels and a patient-disjoint split.

The proportions follow ICBHI 2017 (Rocha et al., Physiol. Meas. 2019; docs/methods.md section 1): COPD patients are the
largest group and contribute most recordings (mostly multichannel AKGC417L sessions); children are mostly recorded
with the Meditron; cycle labels are driven by the diagnosis so the cycle classes come out near ICBHI's
normal 53 % > crackle 27 % > wheeze 13 % > both 7 %. Labels are correlated within a patient and a recording, as in the
real annotations: a patient's class mix is p_patient ~ Dirichlet(10 p_diagnosis + 0.05), a recording's is
p_recording ~ Dirichlet(8 p_patient + 0.05), and each cycle's class is drawn from p_recording.

Cycle lengths are log-normal around the patient's typical length (median ~2.5 s, clipped to 1-8 s), laid end to end
from a short offset (0-1.2 s) up to a 12-22 s target; the audio ends 0.05-0.5 s after the last cycle. The split
assigns whole patients to train or test, keeping the recording share of train near 60 % (docs/methods.md: 539/381
recordings) and the class mixes of both sides alike. Patients number about n / 4.5 (ICBHI: 920 / 126), so small
sets still mix several patients.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from lungsound.data.formats.icbhi import LOCATIONS
from lungsound.data.labels import DIAGNOSES
from lungsound.data.synthetic.devices import choose_subtype, profile
from lungsound.data.synthetic.sounds import Voice
from lungsound.data.synthetic.spec import Cycle, RecordingSpec, format_annotation, plan_rng, voice_rng

MAX_PATIENTS = 899  # patient numbers 101..999 keep the three-digit ICBHI form
TRAIN_SHARE = 0.6
SPLIT_TRIALS = 64  # random patient orders tried when splitting
DURATION_RANGE = (12.0, 22.0)  # target seconds of annotated cycles; ICBHI's are ~20 s, shorter keeps it quick

# Patient share, relative recordings per patient, and cycle class mix (normal, crackle, wheeze, both) per diagnosis.
DIAGNOSIS_TABLE: dict[str, tuple[float, float, tuple[float, float, float, float]]] = {
    "COPD": (0.36, 3.0, (0.40, 0.33, 0.16, 0.11)),
    "Healthy": (0.20, 1.0, (0.96, 0.025, 0.015, 0.0)),
    "URTI": (0.12, 1.0, (0.85, 0.08, 0.05, 0.02)),
    "Bronchiectasis": (0.07, 1.5, (0.35, 0.55, 0.04, 0.06)),
    "Pneumonia": (0.07, 1.5, (0.45, 0.45, 0.04, 0.06)),
    "Bronchiolitis": (0.07, 1.0, (0.50, 0.25, 0.15, 0.10)),
    "LRTI": (0.05, 1.0, (0.60, 0.30, 0.06, 0.04)),
    "Asthma": (0.06, 1.5, (0.40, 0.03, 0.52, 0.05)),
}
assert set(DIAGNOSIS_TABLE) == set(DIAGNOSES)
COARSE_PROBABILITY = {"COPD": 0.6, "Bronchiectasis": 0.8, "Pneumonia": 0.3, "LRTI": 0.5, "Bronchiolitis": 0.3}
LOCATION_WEIGHTS = (0.14, 0.18, 0.18, 0.15, 0.14, 0.09, 0.12)  # Tc Al Ar Pl Pr Ll Lr, as in ICBHI
DEVICE_MIX = {  # patient group -> device probabilities (Meditron, LittC2SE, Litt3200, AKGC417L)
    "child": (0.55, 0.18, 0.10, 0.17),
    "COPD": (0.04, 0.06, 0.06, 0.84),
    "adult": (0.20, 0.12, 0.13, 0.55),
}
DEVICE_ORDER = ("Meditron", "LittC2SE", "Litt3200", "AKGC417L")
MULTICHANNEL_PROBABILITY = {"AKGC417L": 0.9, "LittC2SE": 0.7, "Litt3200": 0.2, "Meditron": 0.05}


@dataclass(frozen=True)
class Patient:
    """One synthetic patient: demographics as in ICBHI's metadata.txt (None = NA), device and voice."""

    pid: int
    diagnosis: str
    age: float | None
    sex: str | None
    bmi: float | None  # adults
    weight: float | None  # children, kg
    height: float | None  # children, cm
    device: str
    mode: str
    voice: Voice


@dataclass(frozen=True)
class Cohort:
    """A planned dataset: patients, recordings (sorted by stem, index = position) and the train/test split."""

    patients: tuple[Patient, ...]
    recordings: tuple[RecordingSpec, ...]
    split: dict[str, str]  # stem -> "train" | "test"
    folds: dict[int, int]  # patient -> fold 0..4


def _log_uniform(rng: np.random.Generator, low: float, high: float) -> float:
    return math.exp(rng.uniform(math.log(low), math.log(high)))


def draw_voice(rng: np.random.Generator, diagnosis: str | None, age: float | None) -> Voice:
    """A patient's timbre; children breathe faster, with higher heart rate and slightly brighter breath sounds."""
    child = age is not None and age < 12
    return Voice(
        breath_low_hz=rng.uniform(80.0, 130.0),
        breath_high_hz=_log_uniform(rng, 110.0, 260.0) * (1.2 if child else 1.0),
        breath_order=int(rng.choice([2, 2, 3])),
        heart_rate_bpm=rng.uniform(85.0, 130.0) if child else rng.uniform(58.0, 100.0),
        heart_gain=_log_uniform(rng, 0.5, 3.0),
        rumble_db=rng.uniform(22.0, 36.0),
        cycle_median_s=float(np.clip(rng.lognormal(math.log(1.9 if child else 2.7), 0.2), 1.3, 5.0)),
        inspiration_fraction=rng.uniform(0.36, 0.44),
        expiration_level=rng.uniform(0.4, 0.8),
        crackle_gain=_log_uniform(rng, 4.0, 15.0),
        coarse_probability=COARSE_PROBABILITY.get(diagnosis or "", 0.5),
        wheeze_gain=_log_uniform(rng, 0.4, 2.0),
        wheeze_f0_hz=_log_uniform(rng, 150.0, 700.0),
    )


def _draw_age(rng: np.random.Generator, diagnosis: str) -> float:
    child_share = {"Healthy": 0.5, "URTI": 0.7, "LRTI": 1.0, "Bronchiolitis": 1.0}.get(diagnosis, 0.0)
    if diagnosis == "Bronchiolitis":
        age = rng.uniform(0.2, 3.0)
    elif rng.random() < child_share:
        age = rng.uniform(0.5, 12.0 if diagnosis == "LRTI" else 16.0)
    else:
        age = {"COPD": (55, 90), "Asthma": (8, 70), "Bronchiectasis": (30, 80), "Pneumonia": (40, 90)}.get(
            diagnosis, (18, 75))
        age = rng.uniform(*age)
    return round(age, 2) if age < 1 else float(round(age))


def draw_demographics(rng: np.random.Generator, diagnosis: str) -> tuple[float | None, ...]:
    """(age, sex, bmi, weight, height) for metadata.txt: BMI for adults, weight and height for children, ~4 % NA."""
    age = _draw_age(rng, diagnosis)
    bmi = weight = height = None
    if age >= 18:
        bmi = round(float(np.clip(rng.normal(26.0, 5.0), 15.0, 45.0)), 2)
    else:
        height = round(50.0 + 25.0 * age if age < 1 else 75.0 + 6.0 * age, 1)
        weight = round(rng.uniform(14.0, 20.0) * (height / 100.0) ** 2, 1)
    sex = "M" if rng.random() < 0.55 else "F"
    missing = rng.random(4) < 0.04  # NA fields, as in the real metadata.txt
    return (None if missing[0] else age, None if missing[1] else sex, None if missing[2] else bmi,
            None if missing[3] else weight, None if missing[3] else height)


def draw_diagnosis(rng: np.random.Generator) -> str:
    names = list(DIAGNOSIS_TABLE)
    share = np.array([DIAGNOSIS_TABLE[d][0] for d in names])
    return names[int(rng.choice(len(names), p=share / share.sum()))]


def _draw_patient(rng: np.random.Generator, seed: int, pid: int) -> Patient:
    diagnosis = draw_diagnosis(rng)
    age, sex, bmi, weight, height = draw_demographics(rng, diagnosis)
    adult = age is None or age >= 18
    group = "COPD" if diagnosis == "COPD" and adult else ("adult" if adult else "child")
    device = DEVICE_ORDER[int(rng.choice(4, p=DEVICE_MIX[group]))]
    mode = "mc" if rng.random() < MULTICHANNEL_PROBABILITY[device] else "sc"
    return Patient(pid=pid, diagnosis=diagnosis, age=age, sex=sex, bmi=bmi, weight=weight, height=height,
                   device=device, mode=mode, voice=draw_voice(voice_rng(seed, pid), diagnosis, age))


def _draw_cycles(rng: np.random.Generator, voice: Voice, mix: np.ndarray) -> tuple[tuple[Cycle, ...], float]:
    """Consecutive cycles from a 0-1.2 s offset up to a drawn target length; the audio ends 0.05-0.5 s after the
    last cycle, so the annotation covers the recording as in ICBHI. Returns (cycles, duration)."""
    target = rng.uniform(*DURATION_RANGE)
    bounds = [round(rng.uniform(0.0, 1.2), 3)]
    while True:
        length = float(np.clip(voice.cycle_median_s * rng.lognormal(0.0, 0.3), 1.0, 8.0))
        if bounds[-1] + length > target and len(bounds) > 2:
            break
        bounds.append(round(bounds[-1] + length, 3))
    classes = rng.choice(4, size=len(bounds) - 1, p=mix)
    cycles = tuple(Cycle(bounds[i], bounds[i + 1], int(c) & 1, int(c) >> 1) for i, c in enumerate(classes))
    return cycles, round(bounds[-1] + rng.uniform(0.05, 0.5), 3)


def _dirichlet(rng: np.random.Generator, probs: np.ndarray, concentration: float) -> np.ndarray:
    mix = rng.dirichlet(concentration * probs + 0.05)
    return mix / mix.sum()


def _split_cost(side: dict[int, str], patients: dict[int, tuple[int, np.ndarray]]) -> float:
    """|train share of recordings - 0.6| + 0.5 * L1 distance between the train and test class distributions."""
    recordings = {"train": 0, "test": 0}
    classes = {"train": np.zeros(4), "test": np.zeros(4)}
    for pid, (count, class_counts) in patients.items():
        recordings[side[pid]] += count
        classes[side[pid]] += class_counts
    share = recordings["train"] / max(1, recordings["train"] + recordings["test"])
    if classes["train"].sum() == 0 or classes["test"].sum() == 0:
        return abs(share - TRAIN_SHARE) + 1.0
    gap = np.abs(classes["train"] / classes["train"].sum() - classes["test"] / classes["test"].sum()).sum()
    return abs(share - TRAIN_SHARE) + 0.5 * float(gap)


def assign_split(rng: np.random.Generator, patients: dict[int, tuple[int, np.ndarray]]) -> dict[int, str]:
    """Whole patients to train or test: recordings near 60/40 and similar class mixes on both sides.

    `patients` maps patient -> (number of recordings, cycle counts per class). Each of `SPLIT_TRIALS` random patient
    orders is split greedily (a patient goes where the train share of recordings ends closer to 60 %); the order
    with the lowest `_split_cost` wins. Returns patient -> "train" | "test".
    """
    pids = sorted(patients)
    best: dict[int, str] = {}
    best_cost = math.inf
    for _ in range(SPLIT_TRIALS):
        side: dict[int, str] = {}
        train = total = 0
        for j in rng.permutation(len(pids)):
            count = patients[pids[j]][0]
            after = total + count
            to_train = abs((train + count) / after - TRAIN_SHARE) <= abs(train / after - TRAIN_SHARE)
            side[pids[j]] = "train" if to_train else "test"
            train += count if to_train else 0
            total += count
        cost = _split_cost(side, patients)
        if cost < best_cost:
            best, best_cost = side, cost
    return best


def assign_folds(rng: np.random.Generator, patients: list[int]) -> dict[int, int]:
    """Five patient folds of near-equal size (as in patient_list_foldwise.txt), in a shuffled order."""
    order = rng.permutation(len(patients))
    return {patients[j]: k % 5 for k, j in enumerate(order)}


def plan_cohort(n_recordings: int, seed: int) -> Cohort:
    """Plan `n_recordings` recordings of about n/4.5 patients (deterministic for a seed; no audio is made)."""
    rng = plan_rng(seed)
    n_patients = int(np.clip(round(n_recordings / 4.5), min(n_recordings, 2), min(n_recordings, MAX_PATIENTS)))
    patients = [_draw_patient(rng, seed, 101 + i) for i in range(n_patients)]
    weights = np.array([DIAGNOSIS_TABLE[p.diagnosis][1] for p in patients]) * rng.lognormal(0.0, 0.5, n_patients)
    extra = rng.multinomial(n_recordings - n_patients, weights / weights.sum())
    counts = {p.pid: 1 + int(k) for p, k in zip(patients, extra)}

    drafts: list[tuple[str, Patient, str, float, tuple[Cycle, ...], str]] = []
    for p in patients:
        patient_mix = _dirichlet(rng, np.array(DIAGNOSIS_TABLE[p.diagnosis][2]), 10.0)
        remaining, session = counts[p.pid], 1
        while remaining > 0:
            size = min(remaining, int(rng.integers(3, 7)) if p.mode == "mc" else int(rng.integers(1, 4)))
            locations = rng.choice(LOCATIONS, size=size, replace=False, p=LOCATION_WEIGHTS)
            index = f"{session}{'p' if rng.random() < 0.25 else 'b'}{int(rng.integers(1, 6))}"
            for loc in locations:
                cycles, duration = _draw_cycles(rng, p.voice, _dirichlet(rng, patient_mix, 8.0))
                subtype = choose_subtype(profile(p.device), rng)
                drafts.append((f"{p.pid}_{index}_{loc}_{p.mode}_{p.device}", p, str(loc), duration, cycles, subtype))
            remaining -= size
            session += 1

    drafts.sort(key=lambda d: d[0])
    recordings = tuple(
        RecordingSpec(index=i, seed=seed, stem=stem, patient=p.pid, location=loc, device=p.device, subtype=subtype,
                      duration=duration, cycles=cycles, voice=p.voice, annotation=format_annotation(cycles))
        for i, (stem, p, loc, duration, cycles, subtype) in enumerate(drafts)
    )
    class_counts = {p.pid: np.zeros(4) for p in patients}
    for spec in recordings:
        for c in spec.cycles:
            class_counts[spec.patient][c.crackles + 2 * c.wheezes] += 1
    side = assign_split(rng, {p.pid: (counts[p.pid], class_counts[p.pid]) for p in patients})
    folds = assign_folds(rng, [p.pid for p in patients])
    return Cohort(tuple(patients), recordings, {r.stem: side[r.patient] for r in recordings}, folds)
