"""On-disk cache of the cut cycles of a data root, and their features: the data layer's own store, beside the
recordings it is keyed by.

Cutting 6,898 cycles and computing their fbanks takes minutes, so it happens once per
(data root, recording checksums, cycle config, feature config): the arrays are computed in parallel over CPU cores with a
progress bar, written to `<cache dir>/<key>/arrays.npy` (memory-mapped when read) with `items.json` beside it, and loaded
from there on the next run. Any change to a recording's bytes, its annotation, the config, or the installed torch or
torchaudio version (their resampler and Kaldi fbank compute the arrays) gives a new key.
The cache folder is `$LUNGSOUND_CACHE/features` (default `~/.cache/lungsound/features`): a data root may be read-only
(a shared mount) and an entry of an 8-s fbank set is gigabytes, so entries are not written into the data folder itself.
Its users are the data layer's datasets (`lungsound.data.dataset`, `lungsound.data.generated`); it reads recordings
(`lungsound.data.database`, `lungsound.data.cycles`) and calls the feature functions (`lungsound.features.fbank`), so
the data layer imports the features and never the other way round.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from lungsound.data.cycles import CycleConfig, load_cycles
from lungsound.data.database import Recording
from lungsound.errors import LungsoundError
from lungsound.features.fbank import FbankConfig, compute_features_batch, num_frames
from lungsound.storage import atomic_write_json

CACHE_VERSION = 1


def cache_root() -> Path:
    return Path(os.environ.get("LUNGSOUND_CACHE", Path.home() / ".cache" / "lungsound")) / "features"


def file_sha1(path: Path, memo: dict[str, str] | None = None) -> str:
    """SHA-1 of a file's bytes; `memo` (keyed by path, size and mtime) skips re-reading unchanged files."""
    stat = path.stat()
    token = f"{path.resolve()}:{stat.st_size}:{stat.st_mtime_ns}"
    if memo is not None and token in memo:
        return memo[token]
    digest = hashlib.sha1()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    if memo is not None:
        memo[token] = digest.hexdigest()
    return digest.hexdigest()


@dataclass
class CachedCycles:
    """The cycles of a list of recordings: `arrays[i]` is cycle i's waveform (L,) or features (T, n_mels)."""

    arrays: np.ndarray
    recording_index: np.ndarray  # (n,) index into the recordings list
    cycle_index: np.ndarray  # (n,) cycle number within its recording
    path: Path | None


def _cut(job: tuple[str, list, CycleConfig, FbankConfig | None]) -> np.ndarray:
    audio, cycles, cycle_cfg, fbank_cfg = job
    waves = load_cycles(audio, cycles, cycle_cfg)
    return waves if fbank_cfg is None else compute_features_batch(waves, fbank_cfg).numpy()


def _init_worker() -> None:
    import torch

    torch.set_num_threads(1)


def library_versions() -> dict[str, str]:
    """The versions of the libraries whose numerics the cached arrays depend on."""
    import torch
    import torchaudio

    return {"torch": str(torch.__version__), "torchaudio": str(torchaudio.__version__)}


def cache_key(root: Path, recordings: list[Recording], cycle_cfg: CycleConfig, fbank_cfg: FbankConfig | None,
              memo: dict[str, str]) -> str:
    payload = {
        "version": CACHE_VERSION,
        "libraries": library_versions(),
        "root": str(Path(root).resolve()),
        "cycle": asdict(cycle_cfg),
        "fbank": None if fbank_cfg is None else asdict(fbank_cfg),
        "recordings": [(r.stem, file_sha1(r.audio, memo), file_sha1(r.annotation, memo)) for r in recordings],
    }
    return hashlib.sha1(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:20]


def compute_cycles(recordings: list[Recording], cycle_cfg: CycleConfig, fbank_cfg: FbankConfig | None,
                   workers: int | None = None, progress: bool = True, out: np.ndarray | None = None) -> np.ndarray:
    """Cut (and featurise) every cycle of `recordings`, in recording order, in parallel over `workers` processes."""
    missing = [r.stem for r in recordings if r.audio is None]
    if missing:
        raise LungsoundError(f"{len(missing)} recording(s) have no audio file: {', '.join(missing[:5])}")
    jobs = [(str(r.audio), r.cycles, cycle_cfg, fbank_cfg) for r in recordings]
    if out is None:
        shape = _item_shape(cycle_cfg, fbank_cfg)
        out = np.empty((sum(len(r.cycles) for r in recordings), *shape), dtype=np.float32)
    workers = max(1, min(workers or os.cpu_count() or 1, len(jobs)))
    bar = tqdm(total=len(jobs), desc="cutting cycles", unit="rec", disable=not progress)
    offset = 0
    if workers == 1:
        results = map(_cut, jobs)
        pool = None
    else:
        pool = ProcessPoolExecutor(max_workers=workers, initializer=_init_worker)
        results = pool.map(_cut, jobs, chunksize=4)
    try:
        for arr in results:
            out[offset:offset + len(arr)] = arr
            offset += len(arr)
            bar.update()
    finally:
        bar.close()
        if pool is not None:
            pool.shutdown(cancel_futures=True)
    return out


def _item_shape(cycle_cfg: CycleConfig, fbank_cfg: FbankConfig | None) -> tuple[int, ...]:
    if fbank_cfg is None:
        return (cycle_cfg.length,)
    return (num_frames(cycle_cfg.length, fbank_cfg), fbank_cfg.num_mel_bins)


def _indices(recordings: list[Recording]) -> tuple[np.ndarray, np.ndarray]:
    rec = np.concatenate([np.full(len(r.cycles), i, dtype=np.int64) for i, r in enumerate(recordings)])
    cyc = np.concatenate([np.arange(len(r.cycles), dtype=np.int64) for r in recordings])
    return rec, cyc


def load_or_build(root: Path, recordings: list[Recording], cycle_cfg: CycleConfig, fbank_cfg: FbankConfig | None,
                  cache_dir: Path | None = None, workers: int | None = None, progress: bool = True,
                  use_cache: bool = True) -> CachedCycles:
    """The cycles of `recordings` from the cache, computing and storing them on a miss."""
    if not recordings:
        raise LungsoundError("no recordings to load", root)
    rec_idx, cyc_idx = _indices(recordings)
    if not use_cache:
        return CachedCycles(compute_cycles(recordings, cycle_cfg, fbank_cfg, workers, progress), rec_idx, cyc_idx, None)
    base = Path(cache_dir) if cache_dir is not None else cache_root()
    base.mkdir(parents=True, exist_ok=True)
    memo_path = base / "checksums.json"
    try:
        memo = json.loads(memo_path.read_text()) if memo_path.exists() else {}
    except (OSError, ValueError):
        memo = {}
    key = cache_key(root, recordings, cycle_cfg, fbank_cfg, memo)
    atomic_write_json(memo_path, memo, indent=None)
    target = base / key
    if not (target / "arrays.npy").exists():
        tmp = Path(tempfile.mkdtemp(prefix=f".{key}-", dir=base))
        try:
            arrays = np.lib.format.open_memmap(tmp / "arrays.npy", mode="w+", dtype=np.float32,
                                               shape=(len(rec_idx), *_item_shape(cycle_cfg, fbank_cfg)))
            compute_cycles(recordings, cycle_cfg, fbank_cfg, workers, progress, out=arrays)
            arrays.flush()
            del arrays
            items = {"stems": [r.stem for r in recordings], "cycle": asdict(cycle_cfg), **library_versions(),
                     "fbank": None if fbank_cfg is None else asdict(fbank_cfg)}
            (tmp / "items.json").write_text(json.dumps(items))
            try:
                tmp.rename(target)
            except OSError:  # another process finished the same key first
                shutil.rmtree(tmp, ignore_errors=True)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    arrays = np.load(target / "arrays.npy", mmap_mode="r")
    if len(arrays) != len(rec_idx):
        raise LungsoundError(f"cache entry holds {len(arrays)} cycles, expected {len(rec_idx)}; delete it", target)
    return CachedCycles(arrays, rec_idx, cyc_idx, target)

