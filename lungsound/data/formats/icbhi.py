"""The ICBHI 2017 format (docs/methods.md section 1): find an ICBHI-format database under a folder and match its recordings
to a split.

Accepted layouts: the official flat archive (`ICBHI_final_database/` with `.wav` + `.txt` side by side, split and metadata
files next to it), Kaggle's `Respiratory_Sound_Database/audio_and_txt_files/` with CSV side files, or any nesting of those.
Recordings are matched to split entries by the first four stem fields (lungsound.data.naming); the device label is the
split file's spelling. Nothing is dropped silently: every recording without a split entry, split entry without a
recording, duplicate, and annotation without audio is listed in `MatchReport`.

The format's vocabularies are the four stethoscopes (`DEVICES`, indices after [SGSCL]: Meditron 0, LittC2SE 1,
Litt3200 2, AKGC417L 3) and the seven chest locations of the file names (`LOCATIONS`); its splits are
`lungsound.data.splits.SPLIT_CHOICES`. Each recording's metadata (`SampleMeta`) comes from its name (chest location),
the split file (device) and the patient's row of the demographic file (age, sex; `extra`: the patient-level chest
location, the recording mode, adult BMI, child weight and height), with None for whatever is missing.
"""

from __future__ import annotations

import os
from collections import defaultdict
from pathlib import Path

from lungsound.data.annotations import read_annotation
from lungsound.data.formats.base import Database, DataFormat, MatchReport, Recording, register_format
from lungsound.data.meta import Patient, read_diagnosis, read_folds, read_metadata, read_split_file
from lungsound.data.naming import DEVICES, LOCATIONS, MODES, is_recording_stem, parse_stem
from lungsound.data.sample_meta import PATIENT_LOCATION, SampleMeta
from lungsound.data.splits import SPLIT_CHOICES, assign, base_split, check_split
from lungsound.errors import LungsoundError

__all__ = ["AUDIO_SUFFIXES", "DEVICES", "IcbhiFormat", "LOCATIONS", "MODES", "SIDE_FILES", "recording_meta"]

AUDIO_SUFFIXES = (".wav", ".flac", ".ogg", ".mp3")
# Side files by role, in order of preference (the official challenge name first, then the copies found in the wild).
SIDE_FILES = {
    # official_split.txt (the reference code's copy) spells 226_1b1_Pl_sc as its annotation file does (_LittC2SE), which
    # gives the published per-device counts; the challenge file calls it _Meditron. Both hold the same 60/40 split.
    "split": ("official_split.txt", "ICBHI_challenge_train_test.txt", "official_ICBHI_challenge_train_test.txt"),
    "folds": ("patient_list_foldwise.txt",),
    "metadata": ("metadata.txt", "ICBHI_Challenge_demographic_information.txt",
                 "official_ICBHI_Challenge_demographic_information.txt", "demographic_info.txt",
                 "kaggle_demographic_info.txt"),
    "diagnosis": ("ICBHI_Challenge_diagnosis.txt", "official_ICBHI_Challenge_diagnosis.txt", "patient_diagnosis.txt",
                  "patient_diagnosis.csv", "kaggle_patient_diagnosis.csv"),
}


def _walk(root: Path) -> tuple[dict[str, list[Path]], dict[str, list[Path]], dict[str, Path]]:
    annotations: dict[str, list[Path]] = defaultdict(list)
    audio: dict[str, list[Path]] = defaultdict(list)
    side: dict[str, Path] = {}
    wanted = {name.lower(): (role, rank) for role, names in SIDE_FILES.items() for rank, name in enumerate(names)}
    ranks: dict[str, int] = {}
    for folder, dirs, files in os.walk(root):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for fname in sorted(files):
            path = Path(folder) / fname
            stem, suffix = os.path.splitext(fname)
            if fname.lower() in wanted:
                role, rank = wanted[fname.lower()]
                if role not in side or rank < ranks[role]:
                    side[role], ranks[role] = path, rank
            elif suffix.lower() == ".txt" and is_recording_stem(stem):
                annotations[stem].append(path)
            elif suffix.lower() in AUDIO_SUFFIXES and is_recording_stem(stem):
                audio[stem].append(path)
    return annotations, audio, side


def _split_assignment(split: str | None, side: dict[str, Path], overrides: dict[str, Path], root: Path):
    """Return (entries by key -> (split-file name, split)) or None, and patient -> split for fold splits."""
    split_path = overrides.get("split") or side.get("split")
    entries = read_split_file(split_path) if split_path else None
    if split is None:
        return entries, {}
    if split is not None:
        check_split(split)
        split = base_split(split)
    if split == "official":
        if entries is None:
            raise LungsoundError("no split file found (looked for " + ", ".join(SIDE_FILES["split"])
                                 + "); pass --split-file PATH", root)
        return entries, None
    folds_path = overrides.get("folds") or side.get("folds")
    if folds_path is None:
        raise LungsoundError(f"split {split} needs patient_list_foldwise.txt, which is not under this folder", root)
    folds = read_folds(folds_path)
    test_fold = int(split[-1])
    return entries, {p: ("test" if f == test_fold else "train") for p, f in folds.items()}


def recording_meta(rec: Recording, patient: Patient | None) -> SampleMeta:
    """One ICBHI recording's metadata: its name's chest location, its (split-file) device, its patient's row."""
    p = patient
    extra = {PATIENT_LOCATION: p.chest_location if p else None, "mode": rec.name.mode,
             "adult_bmi": p.adult_bmi if p else None, "child_weight": p.child_weight if p else None,
             "child_height": p.child_height if p else None}
    return SampleMeta(patient=rec.patient, recording=rec.stem, age=p.age if p else None, sex=p.sex if p else None,
                      location=rec.name.location, device=rec.device, extra=extra)


@register_format
class IcbhiFormat(DataFormat):
    """ICBHI 2017: `<patient>_<index>_<location>_<mode>_<device>.txt` annotation files beside their audio."""

    name = "icbhi"
    title = "ICBHI"
    devices = DEVICES
    locations = LOCATIONS
    splits = SPLIT_CHOICES

    def check_split(self, split: str) -> str:
        return check_split(split)

    def recording_key(self, stem: str) -> str:
        return parse_stem(stem).key

    def read(self, root: Path, split: str | None, *, split_file: Path | None = None, folds_file: Path | None = None,
             load_cycles: bool = True) -> Database:
        """Discover recordings under `root` and assign them to `split` (one of `SPLIT_CHOICES`, see
        lungsound.data.splits; None for none)."""
        overrides = {k: Path(v) for k, v in (("split", split_file), ("folds", folds_file)) if v is not None}
        annotations, audio, side = _walk(root)
        if not annotations:
            raise LungsoundError("no ICBHI annotation files (<patient>_<index>_<location>_<mode>_<device>.txt) found",
                                 root)
        report = MatchReport()
        recordings = _match(root, split, annotations, audio, side, overrides, report, load_cycles)
        meta_path = side.get("metadata")
        diag_path = side.get("diagnosis")
        patients = read_metadata(meta_path) if meta_path else {}
        for rec in recordings:
            rec.meta = recording_meta(rec, patients.get(rec.patient))
        return Database(
            root=root,
            split_name=split,
            recordings=recordings,
            format=self,
            patients=patients,
            diagnoses=read_diagnosis(diag_path) if diag_path else {},
            side_files={**side, **overrides},
            report=report,
        )


def _match(root: Path, split: str | None, annotations: dict[str, list[Path]], audio: dict[str, list[Path]],
           side: dict[str, Path], overrides: dict[str, Path], report: MatchReport,
           load_cycles: bool) -> list[Recording]:
    """One `Recording` per annotation key, with its audio, device and split; what does not match goes to `report`."""
    entries, patient_split = _split_assignment(split, side, overrides, root)
    audio_by_key: dict[str, list[Path]] = defaultdict(list)
    for stem, paths in audio.items():
        audio_by_key[parse_stem(stem).key].extend(paths)
    seen: dict[str, Recording] = {}
    for stem in sorted(annotations):
        name = parse_stem(stem)
        paths = annotations[stem]
        if name.key in seen:
            report.duplicates.extend(str(p) for p in paths)
            continue
        report.duplicates.extend(str(p) for p in paths[1:])
        ann = paths[0]
        same_dir = [p for p in audio.get(stem, []) if p.parent == ann.parent]
        candidates = same_dir or audio.get(stem, []) or audio_by_key.get(name.key, [])
        rec = Recording(name, ann, candidates[0] if candidates else None,
                        read_annotation(ann) if load_cycles else [], device=name.device)
        if rec.audio is None:
            report.missing_audio.append(stem)
        entry = entries.get(name.key) if entries else None
        if entry is not None:
            rec.device = entry[0].device
            if entry[0].stem != stem:
                report.renamed.append((stem, entry[0].stem))
        if patient_split is None:
            rec.split = entry[1] if entry else None
        else:
            rec.split = patient_split.get(name.patient)
        if rec.split is None and split is not None:
            report.unmatched_recordings.append(stem)
        seen[name.key] = rec
    if entries is not None and split is not None and base_split(split) == "official":
        report.unmatched_split_entries = sorted(e[0].stem for k, e in entries.items() if k not in seen)
    if split is not None:
        report.set_aside = assign(split, list(seen.values()))
    return list(seen.values())
