"""`lungsound data download`: fetch the official ICBHI 2017 database and the small side files it lacks.

Rocha et al., "An open access database for the evaluation of respiratory sound classification algorithms",
Physiological Measurement 2019 (docs/methods.md section 1). The challenge archive holds the 920 recordings (`.wav` plus
annotation `.txt`); the split file, diagnoses and demographics are separate files on the challenge site, and the 5
patient folds and `metadata.txt` come from the reference code of [PMCL]. Result: `<dest>/ICBHI_final_database/` with
everything side by side, which is what `open_database` and the `make icbhi-*` targets
(`DATA=data/ICBHI_final_database`) read.

Steps, each safe to interrupt and re-run:
1. download over HTTPS (standard library only) into `<dest>/.partial/<name>.part`, resuming with
   `Range: bytes=<size>-` (a 206 answer is appended to, a 200 answer restarts), retrying connection errors with
   exponential backoff, checking Content-Length, then the SHA-256 when one is known, and only then moving the file
   into place (`os.replace`);
2. extract with every member checked first (`lungsound.data.archive`) into a hidden temporary folder inside `<dest>`,
   renamed into place at the end, so an interrupted extraction never leaves a half-written database;
3. fetch the side files (each optional: a missing one is reported with where to get it, never fatal);
4. write `NAMING.txt`: the recordings whose file name differs from the split file's spelling. Files are not renamed:
   the loader matches on the first four stem fields (`RecordingName.key`), and keeping the archive's own names keeps
   the folder comparable, file for file, with every other copy of the official download.

Sizes and checksums in `ARCHIVE` and `SIDE_FILES` apply only to the official addresses; a mirror (`--url`,
`--meta-url`) is verified against `--sha256` when given. The archive's SHA-256 is not known to this module yet: it is
computed, printed and stored in `<dest>/ICBHI_final_database.zip.sha256` so a maintainer with internet access can
fill it in below.
"""
from __future__ import annotations

import argparse
import hashlib
import http.client
import os
import re
import shutil
import ssl
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, field, replace
from pathlib import Path

from lungsound.data.archive import ExtractLimits, content_root, safe_extract
from lungsound.data.formats.icbhi import AUDIO_SUFFIXES
from lungsound.data.meta import read_split_file
from lungsound.data.naming import is_recording_stem, parse_stem
from lungsound.errors import LungsoundError


@dataclass(frozen=True)
class RemoteFile:
    """A file to fetch: its name on disk, official address, size in bytes and SHA-256 (None where not known)."""

    name: str
    url: str
    size: int | None
    sha256: str | None
    source: str


_CHALLENGE = "https://bhichallenge.med.auth.gr/sites/default/files/ICBHI_final_database/"
_PMCL = ("https://raw.githubusercontent.com/raymin0223/patch-mix_contrastive_learning/"
         "23718c9e40781a151a656d5ea5133b184cd7b0a9/data/icbhi_dataset/")
# The archive's size as reported by two independent third-party downloads (not verified here). The side files' sizes
# and SHA-256 come from copies whose sizes match those reports (challenge files) and the pinned commit (PMCL files).
# TODO(maintainer): fill in the archive's SHA-256 (printed by the first download, stored in <name>.sha256).
ARCHIVE = RemoteFile("ICBHI_final_database.zip", _CHALLENGE + "ICBHI_final_database.zip", 1_978_998_275, None,
                     "ICBHI 2017 challenge, https://bhichallenge.med.auth.gr/ICBHI_2017_Challenge")
SIDE_FILES = (
    RemoteFile("ICBHI_challenge_train_test.txt", _CHALLENGE + "ICBHI_challenge_train_test.txt", 27_219,
               "5afa11096c3988d8aaefa5164c053c873f718e730fbb286d482f516b01f05c52",
               "challenge site: official 60/40 split"),
    RemoteFile("ICBHI_Challenge_diagnosis.txt", _CHALLENGE + "ICBHI_Challenge_diagnosis.txt", 1_368,
               "b3948b8d43eb81331fcd954e78c8545d4bc9a04b48762591377cd94f47697e20",
               "challenge site: diagnosis per patient"),
    RemoteFile("ICBHI_Challenge_demographic_information.txt",
               _CHALLENGE + "ICBHI_Challenge_demographic_information.txt", 2_586,
               "7be825ef14639a2dc9f033139158ddd2d7368c26fb6c871fa7ebf4f21cfc63bc",
               "challenge site: age, sex, BMI, weight, height"),
    RemoteFile("patient_list_foldwise.txt", _PMCL + "patient_list_foldwise.txt", 756,
               "a244cb5a415af08884e6251cedbbc27b03b0001679d33bb8bab9e296252c31f5",
               "[PMCL] reference code: 5 patient folds"),
    RemoteFile("metadata.txt", _PMCL + "metadata.txt", 3_230,
               "3b8f219f10aabb8d073a01cc625c6bf4afdbd63fafc240d7ff5f98320eac3ffc",
               "[PMCL] reference code: demographics with chest location"),
    RemoteFile("official_split.txt", _PMCL + "official_split.txt", 26_298,
               "c107748c9a76277107a7b070176fe4cfc602f2fb00fa0d5d6760d1741584002b",
               "[PMCL] reference code: the split with 226_1b1_Pl_sc_LittC2SE (the loader prefers it)"),
)
DATABASE_DIR = "ICBHI_final_database"
NAMING_FILE = "NAMING.txt"
PACKAGED_META = Path(__file__).with_name("icbhi_meta")  # vendored side files, used when their download fails
_SPLIT_FILES = ("ICBHI_challenge_train_test.txt", "official_split.txt")


@dataclass(frozen=True)
class DownloadConfig:
    timeout: float = 30.0  # seconds per socket operation
    retries: int = 4  # further attempts after a connection error, resuming each time
    backoff: float = 2.0  # the k-th retry waits backoff * 2**(k-1) seconds
    chunk_size: int = 1 << 20
    progress: bool = True


class _Retryable(Exception):
    """A transfer that broke off; the next attempt resumes from what is on disk."""


# ----------------------------------------------------------------------------------------------------------- download


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def download_file(url: str, target: str | Path, *, sha256: str | None = None, size: int | None = None,
                  partial_dir: str | Path | None = None, config: DownloadConfig | None = None) -> str:
    """Fetch `url` into `target` (resuming a `.part` left by an earlier attempt); return the file's SHA-256.

    `size` and `sha256`, when given, must match or the download is deleted and a `LungsoundError` raised.
    """
    config = config or DownloadConfig()
    target = Path(target)
    partial = Path(partial_dir or target.parent / ".partial") / f"{target.name}.part"
    partial.parent.mkdir(parents=True, exist_ok=True)
    for attempt in range(config.retries + 1):
        try:
            _transfer(url, partial, size, config)
            break
        except _Retryable as exc:
            if attempt == config.retries:
                kept = partial.stat().st_size if partial.exists() else 0
                raise LungsoundError(f"download failed after {attempt + 1} attempt(s): {exc}; run the command "
                                     f"again to resume from {kept} bytes", url) from None
            delay = config.backoff * 2**attempt
            print(f"lungsound: {url}: {exc}; retrying in {delay:.0f} s", file=sys.stderr)
            time.sleep(delay)
    got = partial.stat().st_size
    if size is not None and got != size:
        partial.unlink()
        raise LungsoundError(f"downloaded {got} bytes, expected {size}; the download was deleted", url)
    digest = sha256_of(partial)
    if sha256 is not None and digest != sha256.lower():
        partial.unlink()
        raise LungsoundError(f"SHA-256 mismatch: expected {sha256.lower()}, got {digest}; the download was deleted",
                             url)
    os.replace(partial, target)
    return digest


def _transfer(url: str, partial: Path, size: int | None, config: DownloadConfig) -> None:
    have = partial.stat().st_size if partial.exists() else 0
    if size is not None and have >= size:
        if have == size:
            return
        partial.unlink()
        have = 0
    request = urllib.request.Request(url, headers={"User-Agent": "lungsound-download"})
    if have:
        request.add_header("Range", f"bytes={have}-")
    try:
        response = urllib.request.urlopen(request, timeout=config.timeout)
    except urllib.error.HTTPError as exc:
        if exc.code == 416 and have:  # nothing left after `have`: complete, or a stale part of another file
            if exc.headers.get("Content-Range", "") == f"bytes */{have}":
                return
            partial.unlink()
            raise _Retryable("the partial file does not fit the server's; starting over") from None
        if exc.code in (408, 429) or exc.code >= 500:
            raise _Retryable(f"HTTP {exc.code} {exc.reason}") from None
        raise LungsoundError(f"HTTP {exc.code} {exc.reason}", url) from None
    except urllib.error.URLError as exc:
        if isinstance(exc.reason, ssl.SSLCertVerificationError):
            raise LungsoundError(f"TLS certificate not trusted ({exc.reason.verify_message}); download the file in a "
                                 "browser and pass it with --archive FILE, or use a mirror with --url", url) from None
        raise _Retryable(str(exc.reason)) from None
    except (OSError, http.client.HTTPException) as exc:
        raise _Retryable(str(exc) or type(exc).__name__) from None
    with response:
        if response.status == 206:
            match = re.match(r"bytes (\d+)-", response.headers.get("Content-Range", ""))
            if not match or int(match.group(1)) != have:
                partial.unlink()
                raise _Retryable("the server resumed at the wrong offset; starting over")
        else:
            have = 0
        length = response.headers.get("Content-Length")
        length = int(length) if length is not None and length.isdigit() else None
        total = have + length if length is not None else size
        if size is not None and total is not None and total != size:
            raise LungsoundError(f"the server offers {total} bytes, expected {size} (the table in {__name__} describes "
                                 "the official file; pass --url to fetch another file without that check)", url)
        _copy_body(response, partial, "ab" if have else "wb", have, total, length, config)


def _copy_body(response, partial: Path, mode: str, have: int, total: int | None, length: int | None,
               config: DownloadConfig) -> None:
    from tqdm import tqdm

    received = 0
    with open(partial, mode) as out, tqdm(total=total, initial=have, unit="B", unit_scale=True, unit_divisor=1024,
                                          desc=partial.name[:-5], disable=None if config.progress else True) as bar:
        while True:
            try:
                block = response.read(config.chunk_size)
            except (OSError, http.client.HTTPException) as exc:
                raise _Retryable(f"connection lost after {have + received} bytes ({exc or type(exc).__name__})") \
                    from None
            if not block:
                break
            try:
                out.write(block)
            except OSError as exc:
                raise LungsoundError(f"cannot write the download ({exc})", partial) from None
            received += len(block)
            bar.update(len(block))
    if length is not None and received != length:
        raise _Retryable(f"connection closed after {have + received} of {have + length} bytes")


# ------------------------------------------------------------------------------------------------------ orchestration


@dataclass
class FetchResult:
    """What `fetch_icbhi` found and did."""

    folder: Path
    recordings: int  # audio files named like ICBHI recordings
    annotations: int  # annotation .txt files
    side_present: list[str]
    side_missing: dict[str, str]  # side file -> why it is missing
    renamed: int  # recordings whose file name differs from the split file's spelling (see NAMING.txt)
    archive_sha256: str | None = None
    actions: list[str] = field(default_factory=list)  # empty when everything was already in place

    def summary(self) -> str:
        missing = f" (missing: {', '.join(self.side_missing)})" if self.side_missing else ""
        return (f"{self.folder}: {self.recordings} recordings, {self.annotations} annotation files, side files "
                f"{len(self.side_present)}/{len(SIDE_FILES)} present{missing}")


def fetch_icbhi(dest: str | Path, *, url: str | None = None, sha256: str | None = None,
                archive: str | Path | None = None, meta_url: str | None = None, remove_archive: bool = False,
                config: DownloadConfig | None = None, limits: ExtractLimits | None = None) -> FetchResult:
    """Complete `<dest>/ICBHI_final_database/`: archive (downloaded, or `archive`), extraction, side files, NAMING.txt.

    `url` replaces the official archive address (a mirror; the table's size and checksum then do not apply), `sha256` is
    the archive's expected checksum, `meta_url` a base address serving the side files by name.
    """
    dest, config = Path(dest), config or DownloadConfig()
    dest.mkdir(parents=True, exist_ok=True)
    folder, actions, digest = dest / DATABASE_DIR, [], None
    for stale in dest.glob(".extract-*"):  # left by an extraction that was killed
        shutil.rmtree(stale, ignore_errors=True)
    if folder.exists():
        if not folder.is_dir() or not _scan(folder)[1]:
            raise LungsoundError("exists but holds no ICBHI annotation files; remove it or choose another --dest",
                                 folder)
    else:
        source, digest = _obtain_archive(dest, url, sha256, archive, config, actions)
        _extract_into(source, folder, limits)
        actions.append(f"extracted {source.name}")
        if remove_archive and archive is None:
            source.unlink()
            actions.append(f"removed {source.name}")
    present, missing = _place_side_files(folder, dest / ".partial", meta_url, config, actions)
    text, renamed = naming_report(folder)
    naming = folder / NAMING_FILE
    if not naming.exists() or naming.read_text(encoding="utf-8") != text:
        naming.write_text(text, encoding="utf-8")
        actions.append(f"wrote {NAMING_FILE}")
    if (dest / ".partial").is_dir() and not any((dest / ".partial").iterdir()):
        (dest / ".partial").rmdir()
    audio, annotations = _scan(folder)
    return FetchResult(folder, len(audio), len(annotations), present, missing, renamed, digest, actions)


def _obtain_archive(dest: Path, url: str | None, sha256: str | None, archive: str | Path | None,
                    config: DownloadConfig, actions: list[str]) -> tuple[Path, str | None]:
    if archive is not None:
        archive = Path(archive)
        if not archive.is_file():
            raise LungsoundError("archive not found", archive)
        if sha256 is None:
            return archive, None
        digest = sha256_of(archive)
        if digest != sha256.lower():
            raise LungsoundError(f"SHA-256 mismatch: expected {sha256.lower()}, got {digest}", archive)
        return archive, digest
    official = url is None
    name = ARCHIVE.name if official else (Path(urllib.parse.urlparse(url).path).name or ARCHIVE.name)
    target, expected = dest / name, sha256 or (ARCHIVE.sha256 if official else None)
    record = target.with_name(f"{target.name}.sha256")
    if target.exists():  # placed by an earlier run (only complete, checked downloads are moved into place)
        digest = sha256_of(target)
        known = expected or (record.read_text().split()[0] if record.exists() else None)
        if known is not None and digest != known.lower():
            raise LungsoundError(f"SHA-256 {digest} differs from the expected {known.lower()}; delete the file and "
                                 "run again", target)
    else:
        size = ARCHIVE.size if official and sha256 is None else None
        digest = download_file(url or ARCHIVE.url, target, sha256=expected, size=size, partial_dir=dest / ".partial",
                               config=config)
        actions.append(f"downloaded {target.name}")
    record.write_text(f"{digest}  {target.name}\n")
    if expected is None:
        print(f"lungsound: SHA-256 of {target.name} is {digest} (no checksum known to verify it against; stored in "
              f"{record})", file=sys.stderr)
    return target, digest


def _extract_into(source: Path, folder: Path, limits: ExtractLimits | None) -> None:
    """Extract into a hidden folder beside `folder`, then rename the archive's content folder into place."""
    tmp = Path(tempfile.mkdtemp(prefix=".extract-", dir=folder.parent))
    try:
        work = tmp / "content"
        work.mkdir()
        safe_extract(source, work, limits)
        root = content_root(work)
        if not _scan(root)[1]:
            raise LungsoundError("the archive holds no ICBHI annotation files (<patient>_<index>_<location>_<mode>_"
                                 "<device>.txt)", source)
        os.replace(root, folder)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _place_side_files(folder: Path, partial_dir: Path, meta_url: str | None, config: DownloadConfig,
                      actions: list[str]) -> tuple[list[str], dict[str, str]]:
    present, missing = [], {}
    side_config = replace(config, retries=min(config.retries, 1))  # optional files: do not wait long for them
    for remote in SIDE_FILES:
        target = folder / remote.name
        if target.exists():
            present.append(remote.name)
            continue
        url = f"{meta_url.rstrip('/')}/{remote.name}" if meta_url else remote.url
        try:
            download_file(url, target, sha256=None if meta_url else remote.sha256,
                          size=None if meta_url else remote.size, partial_dir=partial_dir, config=side_config)
            actions.append(f"downloaded {remote.name}")
        except LungsoundError as exc:
            packaged = PACKAGED_META / remote.name
            if not packaged.is_file() or (remote.sha256 is not None and sha256_of(packaged) != remote.sha256):
                missing[remote.name] = str(exc)
                continue
            shutil.copyfile(packaged, partial_dir / remote.name)
            os.replace(partial_dir / remote.name, target)
            actions.append(f"copied {remote.name} from {PACKAGED_META}")
        present.append(remote.name)
    return present, missing


def _scan(folder: Path) -> tuple[list[str], list[str]]:
    """Stems of the recording audio files and of the annotation files under `folder` (hidden folders skipped)."""
    audio, annotations = [], []
    for parent, dirs, files in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for fname in files:
            stem, suffix = os.path.splitext(fname)
            if not is_recording_stem(stem):
                continue
            if suffix.lower() == ".txt":
                annotations.append(stem)
            elif suffix.lower() in AUDIO_SUFFIXES:
                audio.append(stem)
    return sorted(audio), sorted(annotations)


def naming_report(folder: Path) -> tuple[str, int]:
    """NAMING.txt's text, and how many recordings the first split file found spells differently."""
    audio, annotations = _scan(folder)
    by_key: dict[str, str] = {}
    for stem in sorted(set(audio) | set(annotations)):
        by_key.setdefault(parse_stem(stem).key, stem)
    lines = ["# Recording names compared with the split files (written by `lungsound data download`).",
             "# Files are not renamed: lungsound matches a recording to its split entry on the first four stem fields",
             "# (patient_index_location_mode) and uses the split file's device label.", ""]
    counts = []
    for name in _SPLIT_FILES:
        if not (folder / name).is_file():
            continue
        try:
            entries = read_split_file(folder / name)
        except LungsoundError as exc:
            lines += [f"## {name}: not readable: {exc}", ""]
            continue
        differ = sorted((by_key[k], e[0].stem) for k, e in entries.items() if k in by_key and by_key[k] != e[0].stem)
        no_recording = sorted(e[0].stem for k, e in entries.items() if k not in by_key)
        no_entry = sorted(stem for k, stem in by_key.items() if k not in entries)
        counts.append(len(differ))
        lines += [f"## {name}: {len(entries)} entries, {len(by_key)} recordings",
                  f"### named differently ({len(differ)}): file name<TAB>split-file name",
                  *(f"{a}\t{b}" for a, b in differ),
                  f"### split entries without a recording ({len(no_recording)})", *no_recording,
                  f"### recordings without a split entry ({len(no_entry)})", *no_entry, ""]
    if not counts:
        lines.append(f"No readable split file ({' or '.join(_SPLIT_FILES)}): nothing to compare against.")
    return "\n".join(lines).rstrip("\n") + "\n", counts[0] if counts else 0


# ---------------------------------------------------------------------------------------------------------------- CLI


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--dest", type=Path, default=Path("data"),
                        help=f"folder to put {DATABASE_DIR}/ in (default: data)")
    parser.add_argument("--url", default=None, help=f"download the archive from this mirror instead of {ARCHIVE.url}")
    parser.add_argument("--sha256", default=None, help="expected SHA-256 of the archive (64 hex digits)")
    parser.add_argument("--archive", type=Path, default=None,
                        help="use this already-downloaded .zip/.tar.gz instead of downloading")
    parser.add_argument("--meta-url", default=None,
                        help="base URL serving the side files by name (default: their official addresses)")
    parser.add_argument("--remove-archive", action="store_true", help="delete the downloaded archive after extraction")
    parser.add_argument("--timeout", type=float, default=30.0, help="seconds per network operation (default 30)")
    parser.add_argument("--retries", type=int, default=4, help="retries after a connection error (default 4)")


def run(args: argparse.Namespace) -> int:
    if args.sha256 is not None and not re.fullmatch(r"[0-9a-fA-F]{64}", args.sha256):
        raise LungsoundError(f"--sha256 must be 64 hexadecimal digits, got {args.sha256!r}")
    if args.timeout <= 0 or args.retries < 0:
        raise LungsoundError("--timeout must be positive and --retries at least 0")
    result = fetch_icbhi(args.dest, url=args.url, sha256=args.sha256, archive=args.archive, meta_url=args.meta_url,
                         remove_archive=args.remove_archive,
                         config=DownloadConfig(timeout=args.timeout, retries=args.retries))
    if not result.actions:
        print("nothing to do: the database and its side files are already in place")
    for remote in SIDE_FILES:
        if remote.name in result.side_missing:
            print(f"missing {remote.name} ({remote.source}): {result.side_missing[remote.name]}\n"
                  f"  get it from {remote.url} and put it in {result.folder}")
    if result.renamed:
        print(f"{result.renamed} recordings are named differently from the split file (not renamed; see "
              f"{result.folder / NAMING_FILE})")
    print(result.summary())
    print(f"next: lungsound data stats --root {result.folder}")
    return 0
