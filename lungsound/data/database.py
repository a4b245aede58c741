"""Find an ICBHI-format database under a folder and match its recordings to a split.

Accepted layouts: the official flat archive (`ICBHI_final_database/` with `.wav` + `.txt` side by side, split and metadata
files next to it), Kaggle's `Respiratory_Sound_Database/audio_and_txt_files/` with CSV side files, or any nesting of those.
Recordings are matched to split entries by the first four stem fields (methods.md section 1); the device label is the split
file's spelling. Nothing is dropped silently: every recording without a split entry, split entry without a recording,
duplicate, and annotation without audio is listed in `MatchReport`.
"""

from __future__ import annotations

import os
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

from lungsound.data.annotations import Cycle, read_annotation
from lungsound.data.meta import Patient, read_diagnosis, read_folds, read_metadata, read_split_file
from lungsound.data.naming import RecordingName, is_recording_stem, parse_stem
from lungsound.data.splits import SPLIT_CHOICES, assign, base_split, check_split  # noqa: F401 (SPLIT_CHOICES re-exported)
from lungsound.errors import LungsoundError

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


@dataclass
class Recording:
    """One annotated recording: its files, its cycles and where the split puts it."""

    name: RecordingName  # as the annotation file spells it
    annotation: Path
    audio: Path | None
    cycles: list[Cycle]
    split: str | None = None  # "train", "test", or None when no split entry matched
    device: str = ""  # the split file's spelling (Meditron-normalised); the file's own when unmatched

    @property
    def stem(self) -> str:
        return self.name.stem

    @property
    def patient(self) -> int:
        return self.name.patient


@dataclass
class MatchReport:
    """What did not line up between files and split; printed by `lungsound data stats`."""

    unmatched_recordings: list[str] = field(default_factory=list)
    unmatched_split_entries: list[str] = field(default_factory=list)
    renamed: list[tuple[str, str]] = field(default_factory=list)  # (file stem, split-file stem)
    duplicates: list[str] = field(default_factory=list)
    missing_audio: list[str] = field(default_factory=list)
    set_aside: dict[str, list[str]] = field(default_factory=dict)  # reason -> stems the split puts in neither side

    def problems(self) -> list[str]:
        lines = []
        if self.unmatched_recordings:
            lines.append(f"{len(self.unmatched_recordings)} recording(s) have no split entry and are left out of train/test: "
                         + ", ".join(self.unmatched_recordings[:10]))
        if self.unmatched_split_entries:
            lines.append(f"{len(self.unmatched_split_entries)} split entr(y/ies) have no annotation file: "
                         + ", ".join(self.unmatched_split_entries[:10]))
        if self.duplicates:
            lines.append(f"{len(self.duplicates)} duplicate annotation file(s) ignored (first path kept): "
                         + ", ".join(self.duplicates[:10]))
        return lines


@dataclass
class Database:
    """An ICBHI-format database: recordings matched to one split, plus patient metadata."""

    root: Path
    split_name: str | None
    recordings: list[Recording]
    patients: dict[int, Patient]
    diagnoses: dict[int, str]
    side_files: dict[str, Path]
    report: MatchReport

    def select(self, split: str) -> list[Recording]:
        if split not in ("train", "test"):
            raise LungsoundError(f"split must be 'train' or 'test', got {split!r}")
        return [r for r in self.recordings if r.split == split]

    def patient(self, number: int) -> Patient | None:
        return self.patients.get(number)

    def find(self, stem: str) -> Recording:
        """The recording named `stem` in any naming variant (matched on the first four fields)."""
        key = parse_stem(stem).key
        for rec in self.recordings:
            if rec.name.key == key:
                return rec
        raise LungsoundError(f"no recording {stem} (matched on {key}) among the {len(self.recordings)} found", self.root)


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


def open_database(root: str | Path, split: str | None = "official", *, split_file: str | Path | None = None,
                  folds_file: str | Path | None = None, load_cycles: bool = True) -> Database:
    """Discover recordings under `root` and assign them to `split` (one of `SPLIT_CHOICES`, see lungsound.data.splits;
    None for none)."""
    root = Path(root)
    if not root.exists():
        raise LungsoundError("data folder not found", root)
    if not root.is_dir():
        raise LungsoundError("not a folder", root)
    overrides = {k: Path(v) for k, v in (("split", split_file), ("folds", folds_file)) if v is not None}
    annotations, audio, side = _walk(root)
    if not annotations:
        raise LungsoundError("no ICBHI annotation files (<patient>_<index>_<location>_<mode>_<device>.txt) found", root)
    entries, patient_split = _split_assignment(split, side, overrides, root)

    report = MatchReport()
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

    meta_path = side.get("metadata")
    diag_path = side.get("diagnosis")
    return Database(
        root=root,
        split_name=split,
        recordings=list(seen.values()),
        patients=read_metadata(meta_path) if meta_path else {},
        diagnoses=read_diagnosis(diag_path) if diag_path else {},
        side_files={**side, **overrides},
        report=report,
    )
