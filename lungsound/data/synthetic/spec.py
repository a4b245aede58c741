"""What one synthetic recording is: its ICBHI name, annotated cycles, device, file format and the patient's voice.

A `RecordingSpec` is planned in the parent process (by `cohort.py` or `like.py`) and rendered and written in a worker
(`render.py`, `writer.py`). It holds everything the worker needs, so the output depends only on the spec, never on
which worker renders it or in what order: the worker's random stream is derived from (seed, recording index) with
numpy's `SeedSequence` (`recording_rng`).

ICBHI 2017 naming (Rocha et al., Physiol. Meas. 2019): ``<patient>_<index>_<location>_<mode>_<device>``, and each
annotation line is ``start<TAB>end<TAB>crackles<TAB>wheezes`` (seconds, 0/1 flags).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from lungsound.data.annotations import Cycle
from lungsound.data.annotations import format_annotation as annotation_text
from lungsound.data.naming import is_recording_stem, parse_stem
from lungsound.data.synthetic.sounds import Voice

# Stream keys under one seed: cohort planning, per-recording sound, per-patient voices (like-annotations mode).
PLAN_STREAM, SOUND_STREAM, VOICE_STREAM = 0, 1, 2



@dataclass(frozen=True)
class RecordingSpec:
    """Everything needed to render and write one recording."""

    index: int  # position in the dataset (sorted stems): keys the random stream
    seed: int
    stem: str
    patient: int
    location: str
    device: str
    subtype: str  # soundfile subtype of the written WAV, e.g. "PCM_24"
    duration: float  # seconds of audio
    cycles: tuple[Cycle, ...]
    voice: Voice
    annotation: bytes  # exact content of <stem>.txt


def recording_rng(seed: int, index: int) -> np.random.Generator:
    """The random stream of recording `index` under `seed`: independent of worker count and order."""
    return np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(SOUND_STREAM, index)))


def plan_rng(seed: int) -> np.random.Generator:
    """The random stream that plans a cohort (patients, recordings, labels, split)."""
    return np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(PLAN_STREAM,)))


def voice_rng(seed: int, patient: int) -> np.random.Generator:
    """The random stream of one patient's voice, so all of a patient's recordings share it."""
    return np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(VOICE_STREAM, patient)))


def format_annotation(cycles: tuple[Cycle, ...] | list[Cycle]) -> bytes:
    """ICBHI annotation text: one ``start\\tend\\tcrackles\\twheezes`` line per cycle, 3 decimals, LF line ends."""
    lines = [f"{c.start:.3f}\t{c.end:.3f}\t{c.crackles}\t{c.wheezes}\n" for c in cycles]
    return "".join(lines).encode("ascii")


def split_stem(stem: str) -> tuple[str, str, str, str, str] | None:
    """(patient, index, location, mode, device) of an ICBHI stem, or None when it is not one (`naming.parse_stem`)."""
    if not is_recording_stem(stem):
        return None
    name = parse_stem(stem)
    return str(name.patient), name.index, name.location, name.mode, name.device


def recording_key(stem: str) -> tuple[str, str, str, str] | None:
    """The first four fields of a stem: how recordings are matched across naming variants of the device."""
    parts = split_stem(stem)
    return None if parts is None else parts[:4]
