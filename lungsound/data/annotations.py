"""ICBHI annotation files: one respiratory cycle per line, `start end crackles wheezes` (seconds, 0/1 flags).

Times must be finite with 0 <= start < end (`inf` and `nan` parse as floats, so they are refused explicitly).

The label is `crackles + 2 * wheezes` (normal 0, crackle 1, wheeze 2, both 3; docs/methods.md section 1).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

from lungsound.data.labels import class_from_flags
from lungsound.errors import LungsoundError


@dataclass(frozen=True)
class Cycle:
    """One annotated respiratory cycle."""

    start: float
    end: float
    crackles: int
    wheezes: int

    @property
    def label(self) -> int:
        return class_from_flags(self.crackles, self.wheezes)

    @property
    def duration(self) -> float:
        return self.end - self.start


def parse_annotation_text(text: str, source: str | Path) -> list[Cycle]:
    """Parse the text of an annotation file; errors name `source` and the line number."""
    cycles: list[Cycle] = []
    for lineno, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        fields = line.split()
        if len(fields) != 4:
            raise LungsoundError(f"line {lineno}: expected 4 fields 'start end crackles wheezes', got {len(fields)}: "
                                 f"{line.strip()!r}", source)
        try:
            start, end = float(fields[0]), float(fields[1])
            crackles, wheezes = int(fields[2]), int(fields[3])
        except ValueError:
            raise LungsoundError(f"line {lineno}: not numbers: {line.strip()!r}", source) from None
        if crackles not in (0, 1) or wheezes not in (0, 1):
            raise LungsoundError(f"line {lineno}: crackle and wheeze flags must be 0 or 1, got {crackles} {wheezes}",
                                 source)
        if not (math.isfinite(start) and math.isfinite(end)):
            raise LungsoundError(f"line {lineno}: cycle times must be finite seconds, got {fields[0]} to {fields[1]}",
                                 source)
        if not (0 <= start < end):
            raise LungsoundError(f"line {lineno}: cycle must have 0 <= start < end, got {start} to {end}", source)
        cycles.append(Cycle(start, end, crackles, wheezes))
    return cycles


def read_annotation(path: str | Path) -> list[Cycle]:
    """Read `<stem>.txt`. An empty file is an error: every ICBHI recording has at least one cycle."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8", errors="strict")
    except FileNotFoundError:
        raise LungsoundError("annotation file not found", path) from None
    except UnicodeDecodeError:
        raise LungsoundError("annotation file is not text", path) from None
    cycles = parse_annotation_text(text, path)
    if not cycles:
        raise LungsoundError("annotation file has no cycles", path)
    return cycles


def format_annotation(cycles: list[Cycle]) -> str:
    """The inverse of `parse_annotation_text`, in the archive's tab-separated layout (3 decimals)."""
    return "".join(f"{c.start:.3f}\t{c.end:.3f}\t{c.crackles}\t{c.wheezes}\n" for c in cycles)
