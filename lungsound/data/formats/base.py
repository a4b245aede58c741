"""The seam between a corpus on disk and the training data layer: what a data format provides, and what it gives back.

A format (`DataFormat`) is registered on `FORMATS` under the name `data.format` selects. It declares its device and
chest-location vocabularies (a sample's device index is its device's position in `devices`), the split names it knows
(split files, patient lists), and how a recording's name is matched; its `read` finds the recordings under a folder,
reads each one's cycles (start, end, crackle and wheeze flags) and metadata (`SampleMeta`), and places each one on
the `train` or `test` side of the split asked for. What it gives back is a `Database` of `Recording`s: everything
downstream (datasets, the feature cache, training, evaluation, `lungsound data stats`) reads only that.

A new corpus is one module: subclass `DataFormat`, set its attributes, write `read`, and decorate the class with
`@register_format` (tests/test_formats.py defines a CSV-of-cycles format in about twenty-five lines).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lungsound.data.annotations import Cycle
from lungsound.data.sample_meta import SampleMeta
from lungsound.errors import LungsoundError
from lungsound.registry import Registry

DEFAULT_FORMAT = "icbhi"  # data.format's default; the built-in synthetic set is written in it


@dataclass(frozen=True)
class RecordingId:
    """The name of a recording of a format whose file names carry no structure: the stem is the key."""

    stem: str
    patient: int

    @property
    def key(self) -> str:
        return self.stem


@dataclass
class Recording:
    """One annotated recording: its files, its cycles, its metadata and where the split puts it."""

    name: Any  # the format's name of the recording, with .stem, .key and .patient (ICBHI: naming.RecordingName)
    annotation: Path  # the file its cycles were read from (part of the feature cache's key)
    audio: Path | None
    cycles: list[Cycle]
    split: str | None = None  # "train", "test", or None when the split does not place it
    device: str = ""  # in the format's device vocabulary (ICBHI: the split file's spelling)
    meta: SampleMeta | None = None  # filled by the format's read (open_database makes sure every recording has one)

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


class DataFormat:
    """What a corpus format must provide. Subclasses set the class attributes and implement `read`.

    - `name`: the registry name (`data.format`); `title`: how reports name the corpus ("ICBHI");
    - `devices`: the device vocabulary (device index i is `devices[i]`); `locations`: the chest-location codes;
    - `splits`: the split names it knows (its split files and patient lists);
    - `read(root, split, ...)`: find the recordings under `root`, read each one's cycles and metadata, place them by
      `split` (None: place none), and return them as a `Database`;
    - `recording_key(stem)`: what `Database.find` matches a recording's name on (the stem itself by default).
    """

    name: str = ""
    title: str = ""
    devices: tuple[str, ...] = ()
    locations: tuple[str, ...] = ()
    splits: tuple[str, ...] = ("official",)

    def check_split(self, split: str) -> str:
        """`split` when this format knows it, else a one-line error listing the ones it does."""
        if split in self.splits:
            return split
        raise LungsoundError(f"unknown split {split!r} for {self.title or self.name} data; choose one of "
                             f"{', '.join(self.splits)}")

    def read(self, root: Path, split: str | None, *, split_file: Path | None = None, folds_file: Path | None = None,
             load_cycles: bool = True) -> "Database":
        raise NotImplementedError

    def recording_key(self, stem: str) -> str:
        return stem


FORMATS: Registry[DataFormat] = Registry("data format")


def register_format(cls: type[DataFormat]) -> type[DataFormat]:
    """Class decorator: register one instance of `cls` under `cls.name`."""
    FORMATS.add(cls.name, cls())
    return cls


@dataclass
class Database:
    """The recordings of one corpus under `root`, placed by one split, read by `format`."""

    root: Path
    split_name: str | None
    recordings: list[Recording]
    format: DataFormat
    patients: dict[int, Any] = field(default_factory=dict)  # the format's patient records (ICBHI: meta.Patient)
    diagnoses: dict[int, str] = field(default_factory=dict)
    side_files: dict[str, Path] = field(default_factory=dict)
    report: MatchReport = field(default_factory=MatchReport)

    @property
    def devices(self) -> tuple[str, ...]:
        """The device vocabulary of this database: a sample's device index is its position here."""
        return tuple(self.format.devices)

    @property
    def locations(self) -> tuple[str, ...]:
        return tuple(self.format.locations)

    def select(self, split: str) -> list[Recording]:
        if split not in ("train", "test"):
            raise LungsoundError(f"split must be 'train' or 'test', got {split!r}")
        return [r for r in self.recordings if r.split == split]

    def patient(self, number: int) -> Any:
        return self.patients.get(number)

    def find(self, stem: str) -> Recording:
        """The recording named `stem`, in any naming variant the format accepts (ICBHI matches the first four
        fields)."""
        key = self.format.recording_key(stem)
        for rec in self.recordings:
            if rec.name.key == key:
                return rec
        raise LungsoundError(f"no recording {stem} (matched on {key}) among the {len(self.recordings)} found",
                             self.root)
