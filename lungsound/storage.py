"""Safe file writing: atomic replacement, exclusive folders and inter-process locks.

Every file the toolkit rewrites (model folders, `meta.json`, training states, caches, reports) goes through here, so a
crash or a kill mid-write leaves either the previous file or the new one, never a truncated mix:

- `atomic_write(path)` yields a temporary path in the same folder; on a clean exit the temporary file is flushed to disk
  and renamed over `path` (`os.replace` is atomic on POSIX and Windows), on an exception it is removed.
- `atomic_write_text` / `atomic_write_bytes` / `atomic_write_json` are the one-call forms.
- `replace_dir(tmp, target)` swaps a fully written folder into place (the old one is renamed aside first, then removed).
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
from pathlib import Path
from typing import Any, Iterator


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


def replace_dir(tmp: str | Path, target: str | Path) -> Path:
    """Move the finished folder `tmp` to `target`, replacing an existing `target` (which is removed afterwards)."""
    tmp, target = Path(tmp), Path(target)
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
