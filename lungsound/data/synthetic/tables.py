"""The ICBHI 2017 side files, written and read in the same byte format as the official archive.

- ``ICBHI_challenge_train_test.txt``: ``<stem>\\t{train|test}`` per recording, CRLF line ends (as published).
- ``metadata.txt``: patient, age, sex, adult BMI, child weight (kg), child height (cm), chest location; tab-separated,
  ``NA`` for a missing value, numbers as Python floats (``70.0``, ``0.75``, ``28.47``), LF line ends.
- ``ICBHI_Challenge_diagnosis.txt``: ``patient\\tdiagnosis``.
- ``patient_list_foldwise.txt``: ``patient fold`` (space-separated, folds 0-4).

Reading is used by the like-annotations mode; a malformed line raises `LungsoundError` with file and line number.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from lungsound.data.formats.icbhi import SIDE_FILES
from lungsound.data.meta import read_metadata
from lungsound.errors import LungsoundError

SPLIT_NAME = "ICBHI_challenge_train_test.txt"
METADATA_NAME = "metadata.txt"
DIAGNOSIS_NAME = "ICBHI_Challenge_diagnosis.txt"
FOLDS_NAME = "patient_list_foldwise.txt"
MARKER_NAME = "SYNTHETIC.json"

# Names under which the real archive and its mirrors ship the same tables, in the loader's order of preference
# (so a like-annotations copy carries the device spelling the loader would have used on the real folder).
SPLIT_CANDIDATES = SIDE_FILES["split"]
DIAGNOSIS_CANDIDATES = SIDE_FILES["diagnosis"]
METADATA_CANDIDATES = (METADATA_NAME,)
FOLDS_CANDIDATES = SIDE_FILES["folds"]


@dataclass(frozen=True)
class MetadataRow:
    """One row of metadata.txt; None is written as NA."""

    patient: int
    age: float | None
    sex: str | None
    bmi: float | None
    weight: float | None
    height: float | None
    location: str | None


@dataclass(frozen=True)
class SplitEntry:
    """One line of a split file: the raw bytes (kept verbatim when copied), its stem and side."""

    raw: bytes
    stem: str
    side: str


def _field(value: float | str | None) -> str:
    if value is None:
        return "NA"
    return repr(float(value)) if isinstance(value, (int, float)) else str(value)


def metadata_text(rows: list[MetadataRow]) -> bytes:
    lines = [
        "\t".join([str(r.patient)] + [_field(v) for v in (r.age, r.sex, r.bmi, r.weight, r.height, r.location)])
        for r in sorted(rows, key=lambda r: r.patient)
    ]
    return ("\n".join(lines) + "\n").encode("ascii")


def diagnosis_text(diagnoses: dict[int, str]) -> bytes:
    return "".join(f"{pid}\t{d}\n" for pid, d in sorted(diagnoses.items())).encode("ascii")


def split_text(split: dict[str, str]) -> bytes:
    return "".join(f"{stem}\t{side}\r\n" for stem, side in sorted(split.items())).encode("ascii")


def folds_text(folds: dict[int, int]) -> bytes:
    return "".join(f"{pid} {fold}\n" for pid, fold in folds.items()).encode("ascii")


def _lines(path: Path) -> list[tuple[int, bytes, str]]:
    """(line number, raw bytes with line end, stripped text) of the non-blank lines of a text file."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise LungsoundError(f"cannot read: {exc.strerror or exc}", path) from exc
    out = []
    for number, raw in enumerate(data.splitlines(keepends=True), start=1):
        try:
            text = raw.decode("utf-8").strip()
        except UnicodeDecodeError as exc:
            raise LungsoundError(f"line {number}: not UTF-8 text", path) from exc
        if text:
            out.append((number, raw, text))
    return out


def read_split(path: Path) -> list[SplitEntry]:
    """Entries of a split file (``<stem> train|test`` per line)."""
    entries = []
    for number, raw, text in _lines(path):
        fields = text.split()
        if len(fields) != 2 or fields[1] not in ("train", "test"):
            raise LungsoundError(f"line {number}: expected '<stem><TAB>train|test', got {text!r}", path)
        entries.append(SplitEntry(raw, fields[0], fields[1]))
    if not entries:
        raise LungsoundError("split file lists no recordings", path)
    return entries


def read_ages(path: Path) -> dict[int, float]:
    """patient -> age from metadata.txt (unknown ages are left out: the age only tunes timbre)."""
    return {p: row.age for p, row in read_metadata(path).items() if row.age is not None}


def find_side_file(folders: list[Path], names: tuple[str, ...]) -> Path | None:
    """The first existing file among `names` in `folders` (folder order first, then name order)."""
    for folder in folders:
        for name in names:
            candidate = folder / name
            if candidate.is_file():
                return candidate
    return None
