"""Safe extraction of a downloaded zip or tar(.gz) archive (used by `lungsound data download`).

Every member is checked before any byte is written, and the archive is refused, with a `LungsoundError` naming it
and the offending member, when a member
- has an absolute path (`/x`, `C:\\x`) or a `..` component, or otherwise resolves outside the destination;
- is a symbolic link, hard link, device or other special file (only regular files and folders are extracted);
- is listed twice;
- or when the archive (zip bomb / archive bomb checks, `ExtractLimits`):
  - unpacks to more than `max_total_bytes` in all (the total-size cap);
  - unpacks, in all, to more than `max_total_ratio` times its own size on disk once the total exceeds `ratio_floor`
    (the total-ratio cap: many members each below the per-member floor cannot add up to a bomb, and the archive's
    size is measured, not read from a header);
  - has a zip member larger than `ratio_floor` that expands more than `max_ratio`-fold (per member).
While writing, bytes are counted as they stream out, against each member's declared size and against the whole
archive's allowance (the smaller of the two caps), so lying headers cannot write more.
`__MACOSX/` resource forks and `.DS_Store` files are skipped.
"""

from __future__ import annotations

import re
import stat
import tarfile
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from lungsound.errors import LungsoundError

_SKIPPED_MEMBERS = ("__MACOSX", ".DS_Store")


@dataclass(frozen=True)
class ExtractLimits:
    max_total_bytes: int = 20 * 10**9  # the ICBHI archive unpacks to about 2 GB
    max_ratio: float = 100.0  # uncompressed / compressed, per zip member
    max_total_ratio: float = 100.0  # all members' bytes / the archive file's bytes (audio archives: about 1-2)
    ratio_floor: int = 1 << 20  # members, and whole archives, unpacking to less skip the ratio tests (text compresses)

    def allowance(self, archive_bytes: int) -> int:
        """The most bytes an archive of `archive_bytes` may unpack to: both caps together."""
        return min(self.max_total_bytes, max(self.ratio_floor, int(self.max_total_ratio * max(archive_bytes, 1))))
    max_members: int = 100_000


def _member_path(archive: Path, name: str) -> PurePosixPath | None:
    """The member's path relative to the destination; None for entries to skip; refuse anything that could escape."""
    clean = name.replace("\\", "/")
    if clean.startswith("/") or re.match(r"^[A-Za-z]:", clean) or "\0" in clean:
        raise LungsoundError(f"member {name!r} has an absolute path; refusing to extract", archive)
    parts = [p for p in clean.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise LungsoundError(f"member {name!r} points outside the destination ('..'); refusing to extract", archive)
    if not parts or parts[0] in _SKIPPED_MEMBERS or parts[-1] in _SKIPPED_MEMBERS:
        return None
    return PurePosixPath(*parts)


@dataclass
class _Member:
    path: PurePosixPath
    is_dir: bool
    size: int
    handle: object  # ZipInfo or TarInfo


def _zip_members(archive: Path, zf: zipfile.ZipFile, limits: ExtractLimits) -> list[_Member]:
    members = []
    for info in zf.infolist():
        kind = stat.S_IFMT(info.external_attr >> 16)
        if kind == stat.S_IFLNK:
            raise LungsoundError(f"member {info.filename!r} is a symbolic link; refusing to extract", archive)
        if kind not in (0, stat.S_IFREG, stat.S_IFDIR):
            raise LungsoundError(f"member {info.filename!r} is a special file; refusing to extract", archive)
        if info.file_size > limits.ratio_floor and info.file_size > limits.max_ratio * max(info.compress_size, 1):
            raise LungsoundError(f"member {info.filename!r} expands {info.file_size / max(info.compress_size, 1):.0f}"
                                 f"-fold (limit {limits.max_ratio:.0f}); refusing a possible zip bomb", archive)
        path = _member_path(archive, info.filename)
        if path is not None:
            members.append(_Member(path, info.is_dir(), info.file_size, info))
    return members


def _tar_members(archive: Path, tf: tarfile.TarFile) -> list[_Member]:
    members = []
    for info in tf.getmembers():
        if info.issym() or info.islnk():
            raise LungsoundError(f"member {info.name!r} is a {'symbolic' if info.issym() else 'hard'} link; "
                                 "refusing to extract", archive)
        if not (info.isfile() or info.isdir()):
            raise LungsoundError(f"member {info.name!r} is a device or special file; refusing to extract", archive)
        path = _member_path(archive, info.name)
        if path is not None:
            members.append(_Member(path, info.isdir(), info.size, info))
    return members


def _check_members(archive: Path, members: list[_Member], into: Path, limits: ExtractLimits) -> int:
    """Refuse what the member list declares beyond the limits; return the byte allowance for writing."""
    if len(members) > limits.max_members:
        raise LungsoundError(f"{len(members)} members (limit {limits.max_members}); refusing to extract", archive)
    total = sum(m.size for m in members)
    if total > limits.max_total_bytes:
        raise LungsoundError(f"unpacks to {total} bytes (limit {limits.max_total_bytes}); refusing to extract", archive)
    size = archive.stat().st_size
    if total > limits.allowance(size):
        raise LungsoundError(f"unpacks to {total} bytes from {size}, {total / max(size, 1):.0f}-fold (limit "
                             f"{limits.max_total_ratio:g} in all); refusing a possible archive bomb", archive)
    root, seen = into.resolve(), set()
    for m in members:
        if not (into / m.path).resolve().is_relative_to(root):
            raise LungsoundError(f"member {str(m.path)!r} resolves outside the destination; refusing to extract",
                                 archive)
        if not m.is_dir and m.path in seen:
            raise LungsoundError(f"member {str(m.path)!r} is listed twice; refusing to extract", archive)
        seen.add(m.path)
    return limits.allowance(size)


def safe_extract(archive: str | Path, into: str | Path, limits: ExtractLimits | None = None) -> None:
    """Extract a zip or tar(.gz) archive into the existing folder `into`, after checking every member.

    Nothing is written unless all members pass; written bytes are counted against each member's declared size and
    against the archive's allowance (`ExtractLimits.allowance`).
    """
    archive, into, limits = Path(archive), Path(into), limits or ExtractLimits()
    try:
        if zipfile.is_zipfile(archive):
            with zipfile.ZipFile(archive) as zf:
                members = _zip_members(archive, zf, limits)
                allowance = _check_members(archive, members, into, limits)
                _write_members(archive, members, into, zf.open, allowance)
        elif tarfile.is_tarfile(archive):
            with tarfile.open(archive, "r:*") as tf:
                members = _tar_members(archive, tf)
                allowance = _check_members(archive, members, into, limits)
                _write_members(archive, members, into, tf.extractfile, allowance)
        else:
            raise LungsoundError("not a zip or tar archive", archive)
    except (zipfile.BadZipFile, tarfile.TarError, EOFError, zlib.error) as exc:
        raise LungsoundError(f"damaged archive ({exc})", archive) from None
    except OSError as exc:
        raise LungsoundError(f"cannot read the archive ({exc})", archive) from None


def _write_members(archive: Path, members: list[_Member], into: Path, opener, allowance: int) -> None:
    total = 0
    for m in members:
        path = into / m.path
        if m.is_dir:
            path.mkdir(parents=True, exist_ok=True)
            continue
        written = 0
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            with opener(m.handle) as src, open(path, "xb") as dst:
                while block := src.read(1 << 20):
                    written += len(block)
                    total += len(block)
                    if written > m.size:
                        raise LungsoundError(f"member {str(m.path)!r} is larger than it declares; refusing", archive)
                    if total > allowance:
                        raise LungsoundError(f"unpacks to more than {allowance} bytes while extracting "
                                             f"{str(m.path)!r}; refusing a possible archive bomb", archive)
                    dst.write(block)
        except (zipfile.BadZipFile, tarfile.TarError, EOFError, zlib.error, RuntimeError, OSError) as exc:
            raise LungsoundError(f"member {str(m.path)!r} could not be extracted ({exc})", archive) from None
        if written != m.size:
            raise LungsoundError(f"member {str(m.path)!r} is truncated ({written} of {m.size} bytes)", archive)


def content_root(folder: Path) -> Path:
    """Descend through folders that hold nothing but one sub-folder (the archive's top-level directory)."""
    while True:
        entries = list(folder.iterdir())
        if len(entries) != 1 or not entries[0].is_dir():
            return folder
        folder = entries[0]
