"""Open a database of any registered format (`lungsound.data.formats`): its recordings, matched to one split.

`open_database(root, split, format="icbhi")` checks the folder and the split name, lets the format find and read the
recordings (the ICBHI reader: lungsound.data.formats.icbhi), and makes sure every recording carries its metadata
record and a device of the format's vocabulary. The containers it returns (`Database`, `Recording`, `MatchReport`) are
defined in lungsound.data.formats.base and importable from here.
"""

from __future__ import annotations

from pathlib import Path

from lungsound.data.formats import DEFAULT_FORMAT, FORMATS, Database, MatchReport, Recording
from lungsound.data.formats.icbhi import AUDIO_SUFFIXES, SIDE_FILES
from lungsound.data.sample_meta import SampleMeta
from lungsound.data.splits import SPLIT_CHOICES
from lungsound.errors import LungsoundError

__all__ = ["AUDIO_SUFFIXES", "DEFAULT_FORMAT", "Database", "MatchReport", "Recording", "SIDE_FILES", "SPLIT_CHOICES",
           "open_database"]


def open_database(root: str | Path, split: str | None = "official", *, format: str = DEFAULT_FORMAT,
                  split_file: str | Path | None = None, folds_file: str | Path | None = None,
                  load_cycles: bool = True) -> Database:
    """Discover the recordings of `format` under `root` and assign them to `split` (one of the format's splits, e.g.
    ICBHI's `SPLIT_CHOICES`, see lungsound.data.splits; None for none)."""
    reader = FORMATS.get(format)
    root = Path(root)
    if not root.exists():
        raise LungsoundError("data folder not found", root)
    if not root.is_dir():
        raise LungsoundError("not a folder", root)
    if split is not None:
        reader.check_split(split)
    db = reader.read(root, split, split_file=None if split_file is None else Path(split_file),
                     folds_file=None if folds_file is None else Path(folds_file), load_cycles=load_cycles)
    devices = set(db.devices)
    for rec in db.recordings:
        if rec.device not in devices:
            raise LungsoundError(f"recording {rec.stem}: device {rec.device!r} is not one of the {reader.name} "
                                 f"format's devices ({', '.join(db.devices)})", rec.annotation)
        if rec.meta is None:
            rec.meta = SampleMeta(patient=rec.patient, recording=rec.stem, device=rec.device)
    return db
