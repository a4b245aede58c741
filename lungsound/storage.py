"""Safe file writing: atomic replacement, exclusive folders and inter-process locks.

Every file the toolkit rewrites (model folders, `meta.json`, training states, caches, reports) goes through here, so a
crash or a kill mid-write leaves either the previous file or the new one, never a truncated mix:

- `atomic_write(path)` yields a temporary path in the same folder; on a clean exit the temporary file is flushed to disk
  and renamed over `path` (`os.replace` is atomic on POSIX and Windows), on an exception it is removed.
- `atomic_write_text` / `atomic_write_bytes` / `atomic_write_json` are the one-call forms.
- `claim_output_dir(target, kind)` is the one rule for every folder the toolkit writes (model folders, ONNX exports,
  vocoders, staged pushes, generated and synthetic sets): `target` must be new, empty, or a folder of the same kind that
  the toolkit wrote, else a one-line `LungsoundError`, so nothing the toolkit did not write is ever replaced or deleted
  (see `FolderKind`). It also refuses a plain file, a symbolic link, a folder that cannot be created or written, and
  a target that holds, or lies inside, the `source` being read.
- `replace_dir(tmp, target, kind)` swaps a fully written folder into place (the old one is renamed aside first, then
  removed), after `claim_output_dir` allowed it.
- `check_output_dir(path)` is the check for report folders (`--out` of grid, sweep, compare, evaluate), whose own
  named files are written over one by one: an existing path must be a writable folder, a new one creatable.
- `exclusive_dir(parent, stem)` creates a folder that no other process can also have created (`mkdir` without
  `exist_ok` is atomic), adding a suffix when the name is taken.
- `file_lock(path)` is an advisory inter-process lock (`fcntl.flock`; a no-op where fcntl does not exist) for work that
  two processes must not do at the same time, such as creating the built-in data set.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
import uuid
from dataclasses import dataclass
from fnmatch import fnmatchcase
from pathlib import Path
from typing import Any, Iterator

from lungsound.errors import LungsoundError, display_path

TEMP_LEFTOVER = ".*.tmp"  # what `atomic_write` leaves in a folder when the process is killed mid-write


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_write(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside `path`; on success it replaces `path` atomically, on failure it is removed."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, path)
        _fsync_dir(path.parent)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def atomic_write_bytes(path: str | Path, data: bytes) -> Path:
    with atomic_write(path) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def atomic_write_text(path: str | Path, text: str, encoding: str = "utf-8") -> Path:
    return atomic_write_bytes(path, text.encode(encoding))


def atomic_write_json(path: str | Path, obj: Any, **kwargs: Any) -> Path:
    kwargs.setdefault("indent", 2)
    kwargs.setdefault("default", float)
    return atomic_write_text(path, json.dumps(obj, **kwargs) + "\n")


@dataclass(frozen=True)
class FolderKind:
    """A kind of folder the toolkit writes, and how it recognises one it wrote before.

    A folder is "ours, of this kind" when every entry is a plain file whose name matches one of `files` (fnmatch
    patterns, `TEMP_LEFTOVER` always included) and every name in `marker` is present. The marker is the kind's own
    describing file (export.json, vocoder.json, config.yaml + model.safetensors, SYNTHETIC.json, ...), not an extra
    hidden file: it is what each kind has always written, so folders of earlier versions count too, and no extra file
    travels into MLflow artifacts, hub uploads or copies. Requiring every entry to be a known name is what makes the
    rule safe: a folder the user added a file to, or a folder of another kind, is refused instead of replaced. A kind
    with no marker (a generated set, written clip by clip) is recognised by its names alone.
    """

    label: str  # what the refusal calls it, with its article: "a model folder", "an ONNX export", ...
    marker: tuple[str, ...]
    files: tuple[str, ...]

    def foreign(self, folder: Path) -> list[str]:
        """The names of `folder`'s entries that this kind never writes."""
        patterns = self.files + (TEMP_LEFTOVER,)
        return sorted(entry.name for entry in folder.iterdir()
                      if entry.is_symlink() or not entry.is_file()
                      or not any(fnmatchcase(entry.name, p) for p in patterns))


def _inside(a: Path, b: Path) -> bool:
    return a == b or b in a.parents


def check_output_dir(path: str | Path) -> Path:
    """`path` as a folder to write files into: an existing one must be a writable folder, a new one creatable (its
    nearest existing parent a writable folder); else a one-line `LungsoundError`. Nothing is created."""
    path = Path(path)
    if path.is_symlink() and not path.is_dir():
        raise LungsoundError("is a symbolic link that leads to no folder: choose a new or empty folder", path)
    if path.exists():
        if not path.is_dir():
            raise LungsoundError("exists and is not a folder: choose a new or empty folder", path)
        if not os.access(path, os.W_OK | os.X_OK):
            raise LungsoundError("is not writable (permission denied)", path)
        return path
    parent = path.absolute().parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir():
        raise LungsoundError(f"cannot be created: {display_path(parent)} is not a folder", path)
    if not os.access(parent, os.W_OK | os.X_OK):
        raise LungsoundError(f"cannot be created: {display_path(parent)} is not writable (permission denied)", path)
    return path


def claim_output_dir(target: str | Path, kind: FolderKind, source: str | Path | None = None) -> Path:
    """`target` if the toolkit may write a `kind` folder there (see the module docstring and `FolderKind`), else a
    one-line `LungsoundError` naming it; `source` is what the folder is made from (a folder or a file), which the
    target may neither hold nor lie inside. Nothing is created or deleted."""
    target = Path(target)
    if source is not None:
        src, dst = Path(source).resolve(), target.resolve()
        if _inside(src, dst) or _inside(dst, src):
            raise LungsoundError(f"would overwrite or sit inside what it is made from ({display_path(source)}): "
                                 "choose another folder", target)
    if target.is_symlink():
        raise LungsoundError("is a symbolic link: choose a new or empty folder", target)
    check_output_dir(target)
    if not target.exists() or not any(target.iterdir()):
        return target
    if not os.access(target.absolute().parent, os.W_OK | os.X_OK):
        raise LungsoundError("cannot be replaced: its parent folder is not writable (permission denied)", target)
    foreign = kind.foreign(target)
    if foreign:
        shown = ", ".join(display_path(name) for name in foreign[:3]) + (", ..." if len(foreign) > 3 else "")
        raise LungsoundError(f"exists and holds other files ({shown}), not only {kind.label} this toolkit wrote: "
                             "choose a new or empty folder", target)
    missing = [name for name in kind.marker if not (target / name).is_file()]
    if missing:
        raise LungsoundError(f"is not {kind.label} this toolkit wrote ({missing[0]} is missing): choose a new or "
                             "empty folder", target)
    return target


def replace_dir(tmp: str | Path, target: str | Path, kind: FolderKind, source: str | Path | None = None) -> Path:
    """Move the finished folder `tmp` to `target`, replacing an existing `target` (removed afterwards) only when
    `claim_output_dir(target, kind, source)` allows it."""
    tmp, target = Path(tmp), Path(target)
    claim_output_dir(target, kind, source)
    old = None
    if target.exists():
        old = target.with_name(f".{target.name}.old-{uuid.uuid4().hex[:8]}")
        os.replace(target, old)
    os.replace(tmp, target)
    _fsync_dir(target.parent)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
    return target


def temp_dir_beside(target: str | Path) -> Path:
    """A fresh hidden folder in `target`'s parent (same file system, so `replace_dir` can rename it)."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent))


def exclusive_dir(parent: str | Path, stem: str) -> Path:
    """Create and return `parent/stem`, or `parent/stem-2`, `-3`, ... if taken: never a folder another process made."""
    parent = Path(parent)
    parent.mkdir(parents=True, exist_ok=True)
    for i in range(1, 10_000):
        folder = parent / (stem if i == 1 else f"{stem}-{i}")
        try:
            folder.mkdir()
        except FileExistsError:
            continue
        return folder
    raise FileExistsError(f"{parent}: no free folder name for {stem!r}")


@contextlib.contextmanager
def file_lock(path: str | Path) -> Iterator[None]:
    """Hold an exclusive advisory lock on `path` (created if missing) for the duration of the block."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        import fcntl
    except ImportError:  # not POSIX: no inter-process lock, the atomic renames still keep files whole
        yield
        return
    with open(path, "a+") as fh:
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)
