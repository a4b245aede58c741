"""Plan a synthetic twin of a real ICBHI annotation set ("like-annotations" mode).

Given a folder of real ICBHI 2017 annotation files (Rocha et al., Physiol. Meas. 2019), every ``<stem>.txt`` becomes
one synthetic recording with the same stem, the same cycle boundaries and labels (the annotation file is copied
verbatim), the device named in the stem and that device's sample rate, and a duration of the last cycle's end plus a
small margin (0.05-0.5 s). The official split file is looked for in the folder, its ``meta/`` subfolder, its parent
and the parent's ``meta/`` (or given explicitly); its lines for the recordings present are copied verbatim, so the
full set reproduces the official split exactly (4,142 train / 2,756 test cycles, docs/methods.md section 1). Recordings
are matched to split lines by the first four stem fields, as the loader does, because the archive and the split file
disagree on the device name of 91 recordings. ``metadata.txt``, the diagnosis list and the patient folds are copied
when found next to the split file (or in the same search folders) and synthesised otherwise.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from lungsound.data.formats.icbhi import DEVICES
from lungsound.data.synthetic import tables
from lungsound.data.synthetic.cohort import assign_folds, assign_split, draw_demographics, draw_diagnosis, draw_voice
from lungsound.data.synthetic.devices import choose_subtype, profile
from lungsound.data.synthetic.spec import Cycle, RecordingSpec, plan_rng, recording_key, split_stem, voice_rng
from lungsound.data.annotations import read_annotation
from lungsound.data.meta import read_diagnosis
from lungsound.errors import LungsoundError

MAX_CYCLE_END_S = 3600.0  # an annotation beyond one hour is certainly not a respiratory recording


@dataclass(frozen=True)
class LikePlan:
    """Recordings to render plus the side files to write (name -> exact bytes)."""

    recordings: tuple[RecordingSpec, ...]
    split: dict[str, str]  # annotation stem -> "train" | "test"
    side_files: dict[str, bytes]
    sources: dict[str, str]  # side file name -> where it was copied from ("synthesised" when made up)


def parse_annotation(path: Path) -> tuple[Cycle, ...]:
    """Cycles of an ICBHI annotation file (`annotations.read_annotation`), refusing implausibly late cycles."""
    cycles = tuple(read_annotation(path))
    late = [c for c in cycles if c.end > MAX_CYCLE_END_S]
    if late:
        raise LungsoundError(f"a cycle ends at {late[0].end} s, beyond {MAX_CYCLE_END_S:.0f} s", path)
    return cycles


def annotation_files(folder: Path) -> list[Path]:
    """The ``<patient>_<index>_<location>_<mode>_<device>.txt`` files of `folder`, sorted by name."""
    if not folder.is_dir():
        raise LungsoundError("annotation folder not found (or not a folder)", folder)
    files = sorted(p for p in folder.iterdir() if p.suffix == ".txt" and p.is_file() and split_stem(p.stem))
    if not files:
        raise LungsoundError("no ICBHI annotation files (<patient>_<index>_<location>_<mode>_<device>.txt) in "
                             "this folder", folder)
    return files


def _search_folders(folder: Path, split: Path | None) -> list[Path]:
    folders = [split.parent] if split is not None else []
    folders += [folder, folder / "meta", folder.parent, folder.parent / "meta"]
    return list(dict.fromkeys(folders))


def _split_from_file(path: Path, stems: list[str]) -> tuple[bytes, dict[str, str]]:
    entries = tables.read_split(path)
    by_key: dict[tuple[str, str, str, str], tables.SplitEntry] = {}
    for entry in entries:
        key = recording_key(entry.stem)
        if key is not None:
            by_key.setdefault(key, entry)
    missing = [s for s in stems if recording_key(s) not in by_key]
    if missing:
        shown = ", ".join(missing[:5]) + (" ..." if len(missing) > 5 else "")
        raise LungsoundError(f"{len(missing)} annotation file(s) have no entry in this split file "
                             f"(matched on patient_index_location_mode): {shown}", path)
    wanted = {recording_key(s) for s in stems}
    kept = [e for e in entries if recording_key(e.stem) in wanted and by_key[recording_key(e.stem)] is e]
    raw = b"".join(e.raw if e.raw.endswith(b"\n") else e.raw + b"\r\n" for e in kept)
    return raw, {s: by_key[recording_key(s)].side for s in stems}


def plan_like(folder: str | Path, seed: int, split: str | Path | None = None) -> LikePlan:
    """Plan one synthetic recording per annotation file in `folder` (see module docstring)."""
    folder = Path(folder)
    split_path = None if split is None else Path(split)
    if split_path is not None and not split_path.is_file():
        raise LungsoundError("split file not found", split_path)
    files = annotation_files(folder)
    stems = [p.stem for p in files]
    search = _search_folders(folder, split_path)
    rng = plan_rng(seed)
    patients = sorted({int(split_stem(s)[0]) for s in stems})

    diagnosis_path = tables.find_side_file(search, tables.DIAGNOSIS_CANDIDATES)
    diagnoses = read_diagnosis(diagnosis_path) if diagnosis_path else {}
    for pid in patients:  # patients the diagnosis list lacks get a drawn diagnosis (it tunes their voice)
        if pid not in diagnoses:
            diagnoses[pid] = draw_diagnosis(rng)
    metadata_path = tables.find_side_file(search, tables.METADATA_CANDIDATES)
    ages = tables.read_ages(metadata_path) if metadata_path else {}

    recordings = []
    for index, (path, stem) in enumerate(zip(files, stems)):
        pid_text, _, location, _, device = split_stem(stem)
        if device not in DEVICES:
            raise LungsoundError(f"unknown device {device!r} in the file name (expected one of "
                                 f"{', '.join(DEVICES)})", path)
        cycles = parse_annotation(path)
        pid = int(pid_text)
        duration = round(max(c.end for c in cycles) + rng.uniform(0.05, 0.5), 3)
        voice = draw_voice(voice_rng(seed, pid), diagnoses.get(pid), ages.get(pid))
        recordings.append(RecordingSpec(
            index=index, seed=seed, stem=stem, patient=pid, location=location, device=device,
            subtype=choose_subtype(profile(device), rng), duration=duration, cycles=cycles, voice=voice,
            annotation=path.read_bytes(),
        ))

    side_files: dict[str, bytes] = {}
    sources: dict[str, str] = {}
    split_found = split_path or tables.find_side_file(search, tables.SPLIT_CANDIDATES)
    if split_found is not None:
        side_files[tables.SPLIT_NAME], split_map = _split_from_file(split_found, stems)
        sources[tables.SPLIT_NAME] = str(split_found)
    else:
        per_patient = {pid: (0, np.zeros(4)) for pid in patients}
        for spec in recordings:
            count, classes = per_patient[spec.patient]
            for c in spec.cycles:
                classes[c.crackles + 2 * c.wheezes] += 1
            per_patient[spec.patient] = (count + 1, classes)
        side = assign_split(rng, per_patient)
        split_map = {s: side[int(split_stem(s)[0])] for s in stems}
        side_files[tables.SPLIT_NAME] = tables.split_text(split_map)
        sources[tables.SPLIT_NAME] = "synthesised"

    if diagnosis_path is not None:
        side_files[tables.DIAGNOSIS_NAME], sources[tables.DIAGNOSIS_NAME] = diagnosis_path.read_bytes(), str(
            diagnosis_path)
    else:
        side_files[tables.DIAGNOSIS_NAME] = tables.diagnosis_text({p: diagnoses[p] for p in patients})
        sources[tables.DIAGNOSIS_NAME] = "synthesised"
    if metadata_path is not None:
        side_files[tables.METADATA_NAME], sources[tables.METADATA_NAME] = metadata_path.read_bytes(), str(
            metadata_path)
    else:
        first_location = {}
        for stem in stems:
            first_location.setdefault(int(split_stem(stem)[0]), split_stem(stem)[2])
        rows = [tables.MetadataRow(pid, *draw_demographics(rng, diagnoses[pid]), first_location[pid])
                for pid in patients]
        side_files[tables.METADATA_NAME], sources[tables.METADATA_NAME] = tables.metadata_text(rows), "synthesised"
    folds_path = tables.find_side_file(search, tables.FOLDS_CANDIDATES)
    if folds_path is not None:
        side_files[tables.FOLDS_NAME], sources[tables.FOLDS_NAME] = folds_path.read_bytes(), str(folds_path)
    else:
        side_files[tables.FOLDS_NAME] = tables.folds_text(assign_folds(rng, patients))
        sources[tables.FOLDS_NAME] = "synthesised"
    return LikePlan(tuple(recordings), split_map, side_files, sources)
