"""The ICBHI side files: split file, 5 patient folds, patient metadata and diagnoses (docs/methods.md section 1).

Formats (official challenge files and their Kaggle copies are both accepted):
- split: `<stem>\\t{train|test}` per line (`ICBHI_challenge_train_test.txt`, 539 train / 381 test recordings);
- folds: `<patient> <fold>` per line (`patient_list_foldwise.txt`, folds 0..4);
- metadata: `patient age sex adult_bmi child_weight child_height [chest_location]`, tab or space separated, `NA` missing
  (numbers must be finite and >= 0: a negative or 'nan' value is an error naming the file and line);
- diagnosis: `patient<TAB>diagnosis`, or Kaggle's CSV `ID,CLASS` with a header.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

from lungsound.data.labels import age_group
from lungsound.data.naming import RecordingName, parse_stem
from lungsound.errors import LungsoundError

SPLITS = ("train", "test")


@dataclass(frozen=True)
class Patient:
    """One row of the demographic metadata."""

    patient: int
    age: float | None
    sex: str | None
    adult_bmi: float | None
    child_weight: float | None
    child_height: float | None
    chest_location: str | None = None

    @property
    def age_group(self) -> str | None:
        """The clean definitions' age group (`lungsound.data.labels.age_group` has both)."""
        return age_group(self.age)


def _lines(path: Path) -> list[tuple[int, str]]:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise LungsoundError("file not found", path) from None
    except UnicodeDecodeError:
        raise LungsoundError("not a text file", path) from None
    return [(i, line.strip()) for i, line in enumerate(text.splitlines(), start=1) if line.strip()]


def read_split_file(path: str | Path) -> dict[str, tuple[RecordingName, str]]:
    """Map each entry's key (first four stem fields) to (its name as the split file spells it, 'train'|'test')."""
    path = Path(path)
    entries: dict[str, tuple[RecordingName, str]] = {}
    for lineno, line in _lines(path):
        fields = line.split()
        if len(fields) != 2 or fields[1] not in SPLITS:
            raise LungsoundError(f"line {lineno}: expected '<stem> train|test', got {line!r}", path)
        name = parse_stem(fields[0], source=f"{path}, line {lineno}")
        if name.key in entries:
            raise LungsoundError(f"line {lineno}: recording {name.key} is listed twice", path)
        entries[name.key] = (name, fields[1])
    if not entries:
        raise LungsoundError("split file is empty", path)
    return entries


def read_folds(path: str | Path) -> dict[int, int]:
    """Map patient -> fold (0..4)."""
    path = Path(path)
    folds: dict[int, int] = {}
    for lineno, line in _lines(path):
        fields = line.split()
        try:
            patient, fold = int(fields[0]), int(fields[1])
        except (ValueError, IndexError):
            raise LungsoundError(f"line {lineno}: expected '<patient> <fold>', got {line!r}", path) from None
        folds[patient] = fold
    return folds


METADATA_NUMBERS = ("age", "adult BMI", "child weight", "child height")  # columns 2, 4, 5, 6


def _optional_float(value: str, path: Path, lineno: int, column: str = "value") -> float | None:
    """`NA` is missing (None); otherwise a finite number >= 0. 'nan', 'inf' and negative values are errors."""
    if value.upper() == "NA":
        return None
    try:
        number = float(value)
    except ValueError:
        raise LungsoundError(f"line {lineno}: {column} {value!r} is not a number or NA", path) from None
    if not math.isfinite(number):
        raise LungsoundError(f"line {lineno}: {column} {value!r} is not a finite number (write NA when it is missing)",
                             path)
    if number < 0:
        raise LungsoundError(f"line {lineno}: {column} {value!r} is negative", path)
    return number


def read_metadata(path: str | Path) -> dict[int, Patient]:
    """Read `metadata.txt` (7 columns) or a demographic-information file (6 columns)."""
    path = Path(path)
    patients: dict[int, Patient] = {}
    for lineno, line in _lines(path):
        fields = line.split()
        if len(fields) not in (6, 7) or not fields[0].isdigit():
            raise LungsoundError(f"line {lineno}: expected 'patient age sex bmi weight height [location]', got {line!r}",
                                 path)
        number = [_optional_float(v, path, lineno, column)
                  for v, column in zip((fields[1], fields[3], fields[4], fields[5]), METADATA_NUMBERS)]
        sex = None if fields[2].upper() == "NA" else fields[2]
        location = fields[6] if len(fields) == 7 and fields[6].upper() != "NA" else None
        patients[int(fields[0])] = Patient(int(fields[0]), number[0], sex, number[1], number[2], number[3], location)
    return patients


def read_diagnosis(path: str | Path) -> dict[int, str]:
    """Map patient -> diagnosis from the tab-separated official file or Kaggle's `ID,CLASS` CSV."""
    path = Path(path)
    diagnoses: dict[int, str] = {}
    for lineno, line in _lines(path):
        fields = [f.strip() for f in (line.split(",") if "," in line else line.split(None, 1))]
        if len(fields) != 2:
            raise LungsoundError(f"line {lineno}: expected '<patient> <diagnosis>', got {line!r}", path)
        if not fields[0].isdigit():
            if lineno == 1:  # a CSV header such as "ID,CLASS"
                continue
            raise LungsoundError(f"line {lineno}: patient {fields[0]!r} is not a number", path)
        diagnoses[int(fields[0])] = fields[1]
    return diagnoses


def write_split_file(path: str | Path, entries: list[tuple[str, str]]) -> None:
    """Write `<stem>\\t<split>` lines (the official format)."""
    Path(path).write_text("".join(f"{stem}\t{split}\n" for stem, split in entries), encoding="utf-8")
