"""The one exception type users see.

Every error caused by bad input (a missing file, a corrupt recording, a malformed annotation, an unknown config key) is a
`LungsoundError` whose message names the file or value and the problem. The CLI prints it on one line without a traceback.
"""

from __future__ import annotations

from pathlib import Path


class LungsoundError(Exception):
    """A problem with user input, reported in one line: ``<path>: <problem>`` when a file is involved."""

    def __init__(self, problem: str, path: str | Path | None = None):
        self.problem = problem
        self.path = None if path is None else str(path)
        super().__init__(problem if path is None else f"{path}: {problem}")
