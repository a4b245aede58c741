"""Corpus formats behind one seam: `FORMATS` (a `lungsound.registry.Registry`) maps `data.format` to the `DataFormat`
that reads it (lungsound.data.formats.base says what a format provides). Registered here: `icbhi`
(lungsound.data.formats.icbhi). `lungsound.data.database.open_database(root, split, format=...)` opens a folder with
any of them.
"""

from lungsound.data.formats.base import (DEFAULT_FORMAT, FORMATS, Database, DataFormat, MatchReport, Recording,
                                         RecordingId, register_format)
from lungsound.data.formats import icbhi  # noqa: F401 (registers "icbhi")

__all__ = ["DEFAULT_FORMAT", "FORMATS", "Database", "DataFormat", "MatchReport", "Recording", "RecordingId",
           "register_format"]
