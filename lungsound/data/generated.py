"""Generated cycles as extra training data (`data.generated: DIR`), for [AFT] (Kim et al., "Adversarial Fine-tuning using
Generated Respiratory Sound to Address Class Imbalance", NeurIPS 2023 DGM4H workshop, arXiv 2311.06480; docs/methods.md
section 10).

A generated set is a folder of 16-kHz wavs with a `manifest.csv` (written by `lungsound generate synth`, whose clips are
32-bit float; any WAV encoding reads the same way, e.g. the 16-bit PCM of older sets): one row per clip with
`file, class, source_recording, source_cycle, patient, device, seed, vocoder_sha256`. Each clip keeps its source
cycle's patient and device, so a clean-protocol validation split drops the clips of its held-out patients and
per-device scores stay right; `domain_labels("generated")` is the real (0) / generated (1) flag the AFT discriminator
learns.

What is read is checked, not only what the manifest says (`read_manifest`, `load_clip`, `check_sources`):
- every `file` entry must resolve, symlinks followed, to a file inside the set folder: an absolute path, a `..` that
  leaves the folder, or a symlink to a file elsewhere (a test recording, /etc/passwd) is refused, naming the row;
- a clip whose bytes are those of an audio file of the training database (any split: a byte copy of a test recording
  placed in the set) is refused, whatever its `source_recording` says; files are compared by size first, so only
  same-size files are hashed. (A re-encoded or resampled copy is not recognised; it cannot come from outside the set.)
- every clip's `source_recording` must be a training recording of that patient (a clip made from a test cycle would
  leak it), and its header must give a sample rate in [1 kHz, 384 kHz] and at most 60 s, checked before it is decoded
  or resampled (a 1-Hz clip would ask for gigabytes at 16 kHz);
- `manifest.csv` and `set.json` must be UTF-8; `set.json`'s facts about the source data are typed and range-checked.

Model input of a clip (cycle length L = data.duration):
- fbank models, `paper` protocol: the reference stretches the clip's fbank to L's frame count with bilinear
  interpolation (a vocoded 4-s clip, 251 mel frames x 256 = 64,256 samples, has (64256 - 400) // 160 + 1 = 400 fbank
  frames; they become the 5-s 498; pitch and tempo change with it);
- fbank models, `clean` protocol, and waveform models: the clip is repeat-padded to L like a real cycle (section 2).
Inputs are computed once and cached on disk (memory-mapped), keyed by the manifest, every clip's bytes and the config.
"""

from __future__ import annotations

import copy
import csv
import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset
from tqdm.auto import tqdm

from lungsound.audio import audio_info, load_audio
from lungsound.data.cache import cache_root, file_sha1, library_versions
from lungsound.data.cycles import DEFAULT_SAMPLE_RATE, CycleConfig, fix_length
from lungsound.data.dataset import Sample
from lungsound.data.formats.icbhi import DEVICES as ICBHI_DEVICES
from lungsound.data.labels import CLASSES, GENERATED_DOMAIN, domain_indices
from lungsound.data.sample_meta import SampleMeta
from lungsound.data.splits import SPLIT_CHOICES
from lungsound.documents import Field, check_fields, read_json
from lungsound.errors import LungsoundError
from lungsound.features.fbank import FbankConfig, compute_features, frames_for_duration

MANIFEST = "manifest.csv"
SET_FILE = "set.json"  # how the set was made: vocoder, its training data and meta, seed, schedule
COLUMNS = ("file", "class", "source_recording", "source_cycle", "patient", "device", "seed", "vocoder_sha256")
CLIP_RATES = (1000, 384_000)  # Hz, inclusive: the sample rates a clip's header may give
MAX_CLIP_SECONDS = 60.0
# What a vocoder's meta (and set.json, which copies it) says about the data it was trained on; `synth` and `generate
# evaluate` cut the source cycles from these, so each is typed and range-checked when read.
TRAINING_META = {
    "data_root": Field(str, optional=True, max_length=4096), "split": Field(str, choices=SPLIT_CHOICES),
    "duration": Field(float, 0, 60, low_open=True), "protocol": Field(str, choices=("paper", "clean")),
    "val_fraction": Field(float, 0, 1, low_open=True, high_open=True), "val_seed": Field(int, 0),
    "step": Field(int, 0, optional=True),
}
SET_FIELDS = {"vocoder": Field(str, max_length=4096), "vocoder_sha256": Field(str, max_length=64),
              "vocoder_meta": Field(dict), "seed": Field(int, 0), "schedule": Field(str, max_length=100),
              "per_class": Field(int, 0), "counts": Field(dict)}


@dataclass(frozen=True)
class GeneratedItem:
    file: str
    label: int
    source_recording: str
    source_cycle: int
    patient: int
    device: str


def read_manifest(folder: str | Path, devices: Sequence[str] = ICBHI_DEVICES) -> list[GeneratedItem]:
    """The rows of a generated set's manifest, checked (one-line errors naming the file and row); every clip's device
    must be one of `devices` (the training database's vocabulary; generated sets come from ICBHI vocoders, so the
    ICBHI format's own list when no database is at hand)."""
    path = Path(folder) / MANIFEST
    if not path.is_file():
        raise LungsoundError(f"not a generated set: {MANIFEST} is missing (make one with lungsound generate synth)",
                             folder)
    try:
        with open(path, newline="", encoding="utf-8") as fh:
            items = _read_rows(folder, csv.DictReader(fh), path, devices)
    except UnicodeDecodeError as exc:
        raise LungsoundError(f"not UTF-8 text (byte {exc.start})", path) from None
    except csv.Error as exc:
        raise LungsoundError(f"not a readable CSV file: {exc}", path) from None
    if not items:
        raise LungsoundError("the manifest lists no clips", path)
    return items


def _read_rows(folder: str | Path, reader: csv.DictReader, path: Path, devices: Sequence[str]) -> list[GeneratedItem]:
    missing = [c for c in COLUMNS[:6] if c not in (reader.fieldnames or [])]
    if missing:
        raise LungsoundError(f"missing column(s) {', '.join(missing)}", path)
    items = []
    for row_no, row in enumerate(reader, start=2):
        try:
            label = CLASSES.index(row["class"])
            item = GeneratedItem(row["file"], label, row["source_recording"], int(row["source_cycle"]),
                                 int(row["patient"]), row["device"])
        except (ValueError, TypeError):
            raise LungsoundError(f"row {row_no}: bad class, cycle or patient in {dict(row)}", path) from None
        if item.device not in devices:
            raise LungsoundError(f"row {row_no}: unknown device {item.device!r}", path)
        clip_path(folder, item.file, f"row {row_no}: ", path)
        items.append(item)
    return items


def clip_path(folder: str | Path, file: str, where: str = "", source: str | Path | None = None) -> Path:
    """Where the clip `file` of a set lies, refused unless it resolves (symlinks followed) to a file inside `folder`."""
    folder = Path(folder)
    source = source or folder / MANIFEST
    if not isinstance(file, str) or not file.strip() or Path(file).is_absolute() or "\0" in file:
        raise LungsoundError(f"{where}clip {file!r} must be a file name relative to the set folder", source)
    inside = folder.resolve()
    try:
        target = (folder / file).resolve()
    except (OSError, RuntimeError) as exc:  # a symlink loop, a name too long
        raise LungsoundError(f"{where}clip {file!r} cannot be resolved: {exc}", source) from None
    if not target.is_relative_to(inside):
        raise LungsoundError(f"{where}clip {file!r} resolves to {target}, outside the set folder {inside}: refused",
                             source)
    if not target.is_file():
        raise LungsoundError(f"{where}clip {file} is missing", source)
    return target


def load_clip(folder: str | Path, file: str, sample_rate: int = DEFAULT_SAMPLE_RATE) -> np.ndarray:
    """The samples of one clip of a set at `sample_rate`, after its path and its header are checked (a rate in
    `CLIP_RATES`, at most `MAX_CLIP_SECONDS`)."""
    path = clip_path(folder, file)
    rate = audio_info(path).sample_rate
    if not CLIP_RATES[0] <= rate <= CLIP_RATES[1]:
        raise LungsoundError(f"clip sample rate {rate} Hz is outside [{CLIP_RATES[0]}, {CLIP_RATES[1]}] Hz: refused "
                             "before resampling", path)
    return load_audio(path, sample_rate, max_seconds=MAX_CLIP_SECONDS)[0]


def read_set_card(folder: str | Path) -> dict:
    """A generated set's set.json ({} when it has none), UTF-8 JSON whose keys are typed and range-checked, each
    problem one line naming the file and the key."""
    path = Path(folder) / SET_FILE
    if not path.exists():
        return {}
    card = read_json(path, SET_FILE)
    if not isinstance(card, dict):
        raise LungsoundError(f"{SET_FILE} must hold a JSON object, got {type(card).__name__}", path)
    check_fields(card, SET_FIELDS, path)
    check_fields(card.get("vocoder_meta", {}), TRAINING_META, path, "vocoder_meta.")
    return card


def clip_input(clip: np.ndarray, cycle_cfg: CycleConfig, fbank_cfg: FbankConfig | None, stretch: bool) -> np.ndarray:
    """The model input of one 16-kHz generated clip (see the module docstring)."""
    if fbank_cfg is None or not stretch:
        wave = fix_length(clip.astype(np.float32), cycle_cfg)
        return wave if fbank_cfg is None else compute_features(wave, fbank_cfg).numpy()
    target = frames_for_duration(cycle_cfg.length / cycle_cfg.sample_rate, cycle_cfg.sample_rate,
                                 fbank_cfg.frame_length_ms, fbank_cfg.frame_shift_ms)  # the real cycles' frame count
    feats = compute_features(clip.astype(np.float32), fbank_cfg)  # (T, F); the normalisation is affine: order is free
    stretched = torch.nn.functional.interpolate(feats[None, None], size=(target, feats.shape[1]), mode="bilinear",
                                                align_corners=False)
    return stretched[0, 0].numpy()


def _cache_key(folder: Path, items: list[GeneratedItem], cycle_cfg, fbank_cfg, stretch: bool) -> str:
    from dataclasses import asdict

    h = hashlib.sha1((Path(folder) / MANIFEST).read_bytes())
    for item in items:
        h.update(file_sha1(Path(folder) / item.file).encode())
    h.update(json.dumps([asdict(cycle_cfg), asdict(fbank_cfg) if fbank_cfg else None, stretch, library_versions()],
                        sort_keys=True, default=str).encode())
    return h.hexdigest()[:20]


def _build(folder: Path, items: list[GeneratedItem], cycle_cfg, fbank_cfg, stretch: bool, progress: bool) -> np.ndarray:
    out = None
    for i, item in enumerate(tqdm(items, desc="generated clips", unit="clip", disable=not progress, leave=False)):
        x = clip_input(load_clip(folder, item.file, cycle_cfg.sample_rate), cycle_cfg, fbank_cfg, stretch)
        if out is None:
            out = np.empty((len(items),) + x.shape, dtype=np.float32)
        out[i] = x
    return out


def load_inputs(folder: str | Path, items: list[GeneratedItem], cycle_cfg: CycleConfig, fbank_cfg: FbankConfig | None,
                stretch: bool, progress: bool = True, use_cache: bool = True) -> np.ndarray:
    """(n, ...) model inputs of the clips, from the on-disk cache when present (memory-mapped)."""
    from lungsound.storage import FolderKind, replace_dir, temp_dir_beside

    folder = Path(folder)
    if not use_cache:
        return _build(folder, items, cycle_cfg, fbank_cfg, stretch, progress)
    target = cache_root() / f"generated-{_cache_key(folder, items, cycle_cfg, fbank_cfg, stretch)}"
    if not (target / "arrays.npy").is_file():
        arrays = _build(folder, items, cycle_cfg, fbank_cfg, stretch, progress)
        tmp = temp_dir_beside(target)
        np.save(tmp / "arrays.npy", arrays)
        if not (target / "arrays.npy").is_file():  # another process may have finished first: keep its copy
            replace_dir(tmp, target, FolderKind("a generated-set input cache", ("arrays.npy",), ("arrays.npy",)))
    return np.load(target / "arrays.npy", mmap_mode="r")


class GeneratedCycles(Dataset):
    """The clips of a generated set as (x, label, device, patient, recording, index) items, like `CycleDataset`;
    device indices are into `devices` (the training database's vocabulary)."""

    def __init__(self, folder: str | Path, cycle_cfg: CycleConfig = CycleConfig(),
                 fbank_cfg: FbankConfig | None = FbankConfig(), *, stretch: bool = False, progress: bool = True,
                 use_cache: bool = True, items: list[GeneratedItem] | None = None,
                 devices: Sequence[str] = ICBHI_DEVICES):
        self.folder = Path(folder)
        self.device_names = tuple(devices)
        self.items = items if items is not None else read_manifest(folder, self.device_names)
        self.arrays = load_inputs(self.folder, self.items, cycle_cfg, fbank_cfg, stretch, progress, use_cache)
        self.rows = np.arange(len(self.items))
        self.labels = np.array([it.label for it in self.items], dtype=np.int64)
        self.devices = np.array([self.device_names.index(it.device) for it in self.items], dtype=np.int64)
        self.patients = np.array([it.patient for it in self.items], dtype=np.int64)

    def __len__(self) -> int:
        return len(self.rows)

    def without_patients(self, patients: set[int]) -> "GeneratedCycles":
        keep = ~np.isin(self.patients, list(patients))
        view = copy.copy(self)
        view.items = [it for it, k in zip(self.items, keep) if k]
        for name in ("rows", "labels", "devices", "patients"):
            setattr(view, name, getattr(self, name)[keep])
        return view

    def item(self, i: int) -> tuple[torch.Tensor, GeneratedItem]:
        return torch.from_numpy(np.array(self.arrays[self.rows[i]], dtype=np.float32)), self.items[i]

    def manifest_digest(self) -> str:
        return hashlib.sha1((self.folder / MANIFEST).read_bytes()).hexdigest()[:16]


class MixedDataset(Dataset):
    """Real training cycles followed by generated ones: what the trainer sees when `data.generated` is set.

    Item i < len(real) is the real item i; the others are generated clips. Every real item has the generated flag 0 and
    every clip 1 (`domain_labels("generated")`); a clip's metadata record is its source recording's (so are its other
    domains), with `recording` the clip's file and `extra` adding `generated`, `source_recording` and `source_cycle`.
    """

    def __init__(self, real, generated: GeneratedCycles):
        if tuple(generated.device_names) != tuple(real.device_names):
            raise LungsoundError(f"the generated set's device vocabulary ({', '.join(generated.device_names)}) is not "
                                 f"the training data's ({', '.join(real.device_names)})", generated.folder)
        self.real, self.generated = real, generated
        self.db, self.recordings = real.db, real.recordings
        self.device_names = real.device_names
        self.clip_metas = [clip_meta(item, self.db.find(item.source_recording).meta) for item in generated.items]
        self.labels = np.concatenate([real.labels, generated.labels])
        self.devices = np.concatenate([real.devices, generated.devices])
        self.patients = np.concatenate([real.patients, generated.patients])
        self.rows = np.concatenate([real.rows, len(real.arrays) + generated.rows])
        self.fingerprint_extra = generated.manifest_digest()

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int):
        n = len(self.real)
        if i < n:
            s = self.real[i]
            return Sample(s.x, s.label, s.device, s.patient, s.recording, i, s.meta)
        x, item = self.generated.item(i - n)
        return Sample(x, item.label, int(self.generated.devices[i - n]), item.patient, item.file, i,
                      self.clip_metas[i - n])

    @property
    def metas(self) -> list[SampleMeta]:
        return self.real.metas + self.clip_metas

    def generated_flags(self) -> np.ndarray:
        return np.concatenate([np.zeros(len(self.real), np.int64), np.ones(len(self.generated), np.int64)])

    def domain_labels(self, name: str, *, definitions: str = "clean") -> np.ndarray:
        if name == GENERATED_DOMAIN:
            return self.generated_flags()
        extra = np.array(domain_indices(name, self.clip_metas, definitions, self.db), dtype=np.int64)
        return np.concatenate([self.real.domain_labels(name, definitions=definitions), extra])

    def class_counts(self, n_classes: int = 4) -> np.ndarray:
        return np.bincount(self.labels, minlength=n_classes)


def clip_meta(item: GeneratedItem, source: SampleMeta) -> SampleMeta:
    """A generated clip's metadata record: its source recording's, naming the clip and where it came from."""
    return replace(source, recording=item.file, extra={**source.extra, "generated": True,
                                                       "source_recording": item.source_recording,
                                                       "source_cycle": item.source_cycle})


def check_sources(generated: GeneratedCycles, db) -> None:
    """Every clip must come from a training recording of `db` (a clip made from a test cycle would leak it), and no
    clip may be an audio file of `db` itself (compared by content: see the module docstring)."""
    check_not_recordings(generated.folder, generated.items, db)
    for item in generated.items:
        rec = db.find(item.source_recording)
        if rec.split != "train":
            raise LungsoundError(f"clip {item.file} was generated from {item.source_recording}, which is not in the "
                                 f"training split of {db.root} ({rec.split or 'no split entry'})", generated.folder)
        if rec.patient != item.patient:
            raise LungsoundError(f"clip {item.file}: patient {item.patient} does not match its source recording "
                                 f"{item.source_recording}", generated.folder)


def check_not_recordings(folder: Path, items: list[GeneratedItem], db) -> None:
    """Refuse a clip whose bytes are those of an audio file of `db` (same size first, then the same SHA-1)."""
    clips: dict[int, list[Path]] = {}
    for item in items:
        path = clip_path(folder, item.file)
        clips.setdefault(path.stat().st_size, []).append(path)
    for rec in db.recordings:
        if rec.audio is None or not rec.audio.is_file() or rec.audio.stat().st_size not in clips:
            continue
        digest = file_sha1(rec.audio)
        for path in clips[rec.audio.stat().st_size]:
            if file_sha1(path) == digest:
                raise LungsoundError(f"clip {path.name} is a byte copy of the recording {rec.audio} "
                                     f"({rec.split or 'no split entry'} split of {db.root}), not a generated clip: "
                                     "refused", folder / MANIFEST)
