"""The one exception type users see, and how a user-supplied name is shown to them.

Every error caused by bad input (a missing file, a corrupt recording, a malformed annotation, an unknown config key) is a
`LungsoundError` whose message names the file or value and the problem. The CLI prints it on one line without a traceback.

A name that comes from outside (a file name, a typed path or id) can hold anything: terminal escape sequences that would
recolour or rewrite the user's terminal, bidirectional-text controls, bytes that are not UTF-8 (Python keeps them as
lone surrogates, which cannot even be printed), newlines that would split a one-line message, or thousands of
characters. `printable` writes every such character the way Python's repr does (``\\x1b``, ``\\u202e``, ``\\udcff``,
``\\n``) and shortens any run of more than `MAX_WORD` characters without a space to its head and tail with its length;
`display_path` is that for a path. A `LungsoundError`'s message goes through `printable`, so every one-line error is
safe to print; the command line's other output (predict's table and CSV) uses `display_path` for file names.

A library's own exception (MLflow's, the hub's, torch's, ONNX Runtime's) often runs to many lines; `one_line` is the
one rule that turns it (or any message) into the line a `LungsoundError` or a report quotes.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

MAX_WORD = 400  # longer runs without a space are shortened (a real path is far shorter; a 5,000-character one is not)
_LONG_WORD = re.compile(r"\S{%d,}" % (MAX_WORD + 1))


def _escape(ch: str) -> str:
    code = ord(ch)
    if ch in "\n\r\t":
        return {"\n": "\\n", "\r": "\\r", "\t": "\\t"}[ch]
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}"


def _shorten(word: str) -> str:
    return f"{word[:120]}...{word[-40:]} ({len(word):,} characters)"


def printable(text: object) -> str:
    """`text` (str() of it) safe for one terminal line: non-printable characters escaped, over-long words shortened."""
    text = str(text)
    if not text.isprintable():
        text = "".join(ch if ch.isprintable() else _escape(ch) for ch in text)
    return _LONG_WORD.sub(lambda m: _shorten(m.group()), text) if len(text) > MAX_WORD else text


def display_path(path: str | os.PathLike) -> str:
    """A user-supplied path or file name as it may be printed (see `printable`)."""
    return printable(os.fspath(path))


def os_error_message(exc: OSError) -> str:
    """An `OSError` as one line naming its path(s): ``<path>: File name too long``."""
    reason = exc.strerror or type(exc).__name__
    names = [display_path(n) for n in (exc.filename, exc.filename2) if n is not None]
    if not names:
        return printable(f"{reason}: {exc}" if str(exc) and str(exc) != reason else reason)
    return f"{' -> '.join(names)}: {reason}"


def one_line(source: BaseException | str, limit: int | None = 300, *, with_type: bool = False,
             prefer: tuple[str, ...] = ()) -> str:
    """The first non-empty line of `source` (an exception's message, or a text), stripped and cut to `limit`
    characters (None: uncut).

    An exception without a message gives its type name. `with_type` puts the type name first (``OSError: disk full``;
    for a report of an exception nobody foresaw). `prefer`: the first line holding one of these words is taken instead
    of the first line (torch names the cause of a failed load on a later line: ``size mismatch for ...``)."""
    text = str(source)
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    line = next((line for line in lines if any(word in line for word in prefer)), lines[0] if lines else "")
    if isinstance(source, BaseException):
        name = type(source).__name__
        line = (f"{name}: {line}" if line else name) if with_type else (line or name)
    return line if limit is None else line[:limit]


class LungsoundError(Exception):
    """A problem with user input, reported in one line: ``<path>: <problem>`` when a file is involved."""

    def __init__(self, problem: str, path: str | Path | None = None):
        self.problem = problem
        self.path = None if path is None else str(path)
        super().__init__(printable(problem if path is None else f"{display_path(path)}: {problem}"))
