"""Write a synthetic dataset in the flat ICBHI 2017 archive layout, in parallel, reproducibly.

Layout of the output folder (as the official archive, Rocha et al., Physiol. Meas. 2019): ``<stem>.wav`` and
``<stem>.txt`` for every recording, plus ``ICBHI_challenge_train_test.txt``, ``metadata.txt``,
``ICBHI_Challenge_diagnosis.txt``, ``patient_list_foldwise.txt`` and the marker ``SYNTHETIC.json`` (generator,
version, seed, counts; ``"complete": true`` once every file is written) by which later commands recognise the set.

Reproducibility: recording i is rendered from the random stream SeedSequence(seed, spawn_key=(1, i)) and written as
integer PCM (x quantised to round(x 2^(b-1)), clipped to the b-bit range), so the same seed gives byte-identical
files whatever the number of worker processes. Workers are spawned processes (`concurrent.futures`), never forked,
so a parent that has started threads (torch, a web server) cannot deadlock them.

Safety: the output folder must be new, empty or a previous synthetic set (`SYNTHETIC_SET`: the marker and only .wav and
.txt files, which are removed first; the folder rule of `lungsound.storage.claim_output_dir`), unless `overwrite=True`
(files are written over, nothing is deleted).
"""

from __future__ import annotations

import json
import multiprocessing
import os
import time
from collections import Counter
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import soundfile as sf
from tqdm import tqdm

from lungsound.data.formats.icbhi import DEVICES
from lungsound.data.labels import CLASSES, class_from_flags
from lungsound.data.synthetic import tables
from lungsound.data.synthetic.cohort import plan_cohort
from lungsound.data.synthetic.devices import profile
from lungsound.data.synthetic.like import plan_like
from lungsound.data.synthetic.render import render
from lungsound.data.synthetic.spec import RecordingSpec
from lungsound.errors import LungsoundError
from lungsound.limits import MAX_RECORDINGS, MAX_SEED, check_int
from lungsound.storage import FolderKind, atomic_write_bytes, atomic_write_text, check_output_dir, claim_output_dir

GENERATOR_VERSION = "1"
DEFAULT_RECORDINGS = 180  # ~1,050 cycles, ~50 min of audio; well under a minute on two cores
SYNTHETIC_SET = FolderKind("a synthetic set", (tables.MARKER_NAME,), ("*.wav", "*.txt", tables.MARKER_NAME))
_BITS = {"PCM_16": 16, "PCM_24": 24}


@dataclass(frozen=True)
class GenerationReport:
    """What a generation run wrote."""

    out_dir: Path
    mode: str  # "cohort" or "like-annotations"
    seed: int
    n_recordings: int
    n_patients: int
    n_cycles: int
    class_counts: dict[str, int]
    split_recordings: dict[str, int]
    split_cycles: dict[str, int]
    device_recordings: dict[str, int]
    audio_seconds: float
    seconds: float = 0.0
    workers: int = 1
    sources: dict[str, str] = field(default_factory=dict)  # like-annotations: side file -> where it came from

    def summary(self) -> str:
        classes = ", ".join(f"{name} {self.class_counts[name]:,}" for name in CLASSES)
        devices = ", ".join(f"{name} {count}" for name, count in self.device_recordings.items() if count)
        split = ", ".join(f"{side} {self.split_recordings.get(side, 0)} recordings / "
                          f"{self.split_cycles.get(side, 0):,} cycles" for side in ("train", "test"))
        return (f"wrote {self.n_recordings} synthetic recordings of {self.n_patients} patients "
                f"({self.audio_seconds / 60:.1f} min of audio, {self.n_cycles:,} cycles: {classes}) to "
                f"{self.out_dir} in {self.seconds:.1f} s with {self.workers} worker(s)\n"
                f"split: {split}\ndevices: {devices}")

    def marker(self, like_annotations: str | None) -> dict:
        """The content of SYNTHETIC.json (no timings or paths of this machine, so it is reproducible too)."""
        return {
            "generator": "lungsound.data.synthetic", "version": GENERATOR_VERSION, "mode": self.mode,
            "seed": self.seed, "like_annotations": like_annotations, "recordings": self.n_recordings,
            "patients": self.n_patients, "cycles": self.n_cycles, "class_counts": self.class_counts,
            "split_recordings": self.split_recordings, "split_cycles": self.split_cycles,
            "device_recordings": self.device_recordings, "complete": True,
            "note": "Synthetic respiratory sounds in the ICBHI 2017 file format; not recordings of real patients.",
        }


def read_marker(folder: str | Path) -> dict | None:
    """The parsed SYNTHETIC.json of `folder`, or None when the folder is not a synthetic set."""
    path = Path(folder) / tables.MARKER_NAME
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) and data.get("generator") == "lungsound.data.synthetic" else None


def is_synthetic(folder: str | Path) -> bool:
    """True when `folder` holds a (possibly incomplete) synthetic set written by this generator."""
    return read_marker(folder) is not None


def to_pcm(samples: np.ndarray, subtype: str) -> np.ndarray:
    """Integer samples for soundfile: round(x 2^(b-1)) clipped to b bits; 24-bit values sit in the top of an int32."""
    bits = _BITS[subtype]
    scale = 2 ** (bits - 1)
    q = np.clip(np.round(samples * scale), -scale, scale - 1).astype(np.int32)
    return q.astype(np.int16) if bits == 16 else q << 8


def write_recording(spec: RecordingSpec, out_dir: str | Path) -> str:
    """Render `spec` and write ``<stem>.wav`` and ``<stem>.txt`` into `out_dir` (atomically, via temporary names)."""
    out_dir = Path(out_dir)
    audio = to_pcm(render(spec), spec.subtype)
    tmp_wav = out_dir / f".{spec.stem}.wav.tmp"
    sf.write(str(tmp_wav), audio, profile(spec.device).sample_rate, subtype=spec.subtype, format="WAV")
    os.replace(tmp_wav, out_dir / f"{spec.stem}.wav")
    tmp_txt = out_dir / f".{spec.stem}.txt.tmp"
    tmp_txt.write_bytes(spec.annotation)
    os.replace(tmp_txt, out_dir / f"{spec.stem}.txt")
    return spec.stem


def _write_task(task: tuple[RecordingSpec, str]) -> str:
    return write_recording(*task)


def prepare_output(out_dir: str | Path, overwrite: bool = False) -> Path:
    """Create `out_dir`, or make an existing one ready (see module docstring); refuse anything else."""
    out = Path(out_dir)
    if overwrite:
        check_output_dir(out)
        out.mkdir(parents=True, exist_ok=True)
        return out
    try:
        claim_output_dir(out, SYNTHETIC_SET)
        if out.is_dir() and any(out.iterdir()) and not is_synthetic(out):
            raise LungsoundError(f"is not {SYNTHETIC_SET.label} this toolkit wrote ({tables.MARKER_NAME} is not "
                                 "this generator's): choose a new or empty folder", out)
    except LungsoundError as exc:
        raise LungsoundError(f"{exc.problem}, or pass --overwrite to write into it anyway", out) from None
    out.mkdir(parents=True, exist_ok=True)
    for entry in out.iterdir():  # a previous synthetic set: every entry is one of its files
        entry.unlink()
    return out


def default_workers(n_tasks: int) -> int:
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cores = os.cpu_count() or 1
    return max(1, min(cores, n_tasks))


def _render_all(specs: tuple[RecordingSpec, ...], out: Path, workers: int, progress: bool) -> None:
    bar = tqdm(total=len(specs), disable=not progress, unit="rec", desc="synthesising", dynamic_ncols=True)
    tasks = [(spec, str(out)) for spec in specs]
    try:
        if workers <= 1:
            for task in tasks:
                _write_task(task)
                bar.update(1)
        else:
            context = multiprocessing.get_context("spawn")
            with ProcessPoolExecutor(max_workers=workers, mp_context=context) as pool:
                chunk = max(1, len(tasks) // (workers * 16))
                for _ in pool.map(_write_task, tasks, chunksize=chunk):
                    bar.update(1)
    finally:
        bar.close()


def _report(out: Path, mode: str, seed: int, specs: tuple[RecordingSpec, ...], split: dict[str, str],
            workers: int, sources: dict[str, str] | None = None) -> GenerationReport:
    classes: Counter[str] = Counter()
    split_cycles: Counter[str] = Counter()
    for spec in specs:
        for c in spec.cycles:
            classes[CLASSES[class_from_flags(c.crackles, c.wheezes)]] += 1
            split_cycles[split[spec.stem]] += 1
    devices = Counter(spec.device for spec in specs)
    return GenerationReport(
        out_dir=out, mode=mode, seed=seed, n_recordings=len(specs), n_patients=len({s.patient for s in specs}),
        n_cycles=sum(classes.values()), class_counts={name: classes[name] for name in CLASSES},
        split_recordings={side: sum(1 for s in specs if split[s.stem] == side) for side in ("train", "test")},
        split_cycles={side: split_cycles[side] for side in ("train", "test")},
        device_recordings={name: devices[name] for name in DEVICES},
        audio_seconds=float(sum(s.duration for s in specs)), workers=workers, sources=dict(sources or {}),
    )


def _write_marker(out: Path, content: dict) -> None:
    atomic_write_text(out / tables.MARKER_NAME, json.dumps(content, indent=2, sort_keys=True) + "\n")


def _run(out: Path, mode: str, seed: int, specs: tuple[RecordingSpec, ...], split: dict[str, str],
         side_files: dict[str, bytes], workers: int | None, progress: bool, like: str | None,
         sources: dict[str, str] | None = None) -> GenerationReport:
    started = time.perf_counter()
    n_workers = default_workers(len(specs)) if workers is None else max(1, int(workers))
    report = _report(out, mode, seed, specs, split, n_workers, sources)
    _write_marker(out, {**report.marker(like), "complete": False})
    for name, data in side_files.items():
        atomic_write_bytes(out / name, data)
    _render_all(specs, out, n_workers, progress)
    _write_marker(out, report.marker(like))
    return replace(report, seconds=time.perf_counter() - started)


def generate(out_dir: str | Path, n_recordings: int = DEFAULT_RECORDINGS, seed: int = 0, workers: int | None = None,
             progress: bool = True, overwrite: bool = False) -> GenerationReport:
    """Write a synthetic ICBHI-format dataset of `n_recordings` recordings into `out_dir` (deterministic per seed)."""
    n_recordings = check_int("--recordings", n_recordings, 1, MAX_RECORDINGS)
    seed = check_int("--seed", seed, 0, MAX_SEED)
    out = prepare_output(out_dir, overwrite)
    cohort = plan_cohort(n_recordings, seed)
    first_location: dict[int, str] = {}
    for spec in cohort.recordings:
        first_location.setdefault(spec.patient, spec.location)
    rows = [tables.MetadataRow(p.pid, p.age, p.sex, p.bmi, p.weight, p.height, first_location[p.pid])
            for p in cohort.patients]
    side_files = {
        tables.SPLIT_NAME: tables.split_text(cohort.split),
        tables.METADATA_NAME: tables.metadata_text(rows),
        tables.DIAGNOSIS_NAME: tables.diagnosis_text({p.pid: p.diagnosis for p in cohort.patients}),
        tables.FOLDS_NAME: tables.folds_text(cohort.folds),
    }
    return _run(out, "cohort", seed, cohort.recordings, cohort.split, side_files, workers, progress, None)


def generate_like_annotations(annotation_dir: str | Path, out_dir: str | Path, seed: int = 0,
                              split: str | Path | None = None, workers: int | None = None, progress: bool = True,
                              overwrite: bool = False) -> GenerationReport:
    """Write one synthetic recording per real annotation file in `annotation_dir` (see `like.py`)."""
    source = Path(annotation_dir)
    seed = check_int("--seed", seed, 0, MAX_SEED)
    if Path(out_dir).resolve() == source.resolve():
        raise LungsoundError("the output folder must differ from the annotation folder", out_dir)
    plan = plan_like(source, seed, split)  # validates every input before anything is written
    out = prepare_output(out_dir, overwrite)
    return _run(out, "like-annotations", seed, plan.recordings, plan.split, plan.side_files, workers, progress,
                str(source), plan.sources)
