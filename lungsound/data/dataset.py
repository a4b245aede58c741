"""The training dataset: one item per annotated cycle, with the labels every method needs.

An item is a `Sample(x, label, device, patient, recording, index, meta)`:
`x` is the AST-normalised fbank (T, 128) or, for waveform models, the 16 kHz cycle (L,); `label` the 4-class index;
`device` the stethoscope index in the database's device vocabulary (`Database.devices`; ICBHI: Meditron 0, LittC2SE 1,
Litt3200 2, AKGC417L 3); `index` the item's position, with which `domain_labels(name, definitions=...)` looks up other
metadata domains (age group, sex, chest location) for the domain methods, in the paper or clean definitions of
`lungsound.data.labels` (the experiment's `train.protocol`); `meta` the item's metadata record (`SampleMeta`: patient,
recording, age, sex, chest location, device and what the corpus adds), its recording's.
`collate_samples` makes a batch of items: the same fields stacked as the default collate does, and `meta` the list of
the items' records, one per sample.
Arrays come from the feature cache (`lungsound.data.cache`); the dataset never writes into them; the metadata is
rebuilt from the corpus's own files.
"""

from __future__ import annotations

import copy
import warnings
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
from torch.utils.data import Dataset, default_collate

from lungsound.data.cache import load_or_build
from lungsound.data.cycles import CycleConfig
from lungsound.data.database import Database, Recording
from lungsound.data.labels import GENERATED_DOMAIN, domain_indices
from lungsound.data.sample_meta import SampleMeta
from lungsound.errors import LungsoundError
from lungsound.features.fbank import FbankConfig


class Sample(NamedTuple):
    """One item (or, from `collate_samples`, one batch: tensors stacked, `recording` and `meta` as lists)."""

    x: torch.Tensor
    label: int
    device: int
    patient: int
    recording: str
    index: int
    meta: SampleMeta | None = None


def collate_samples(items: list[Sample]) -> Sample:
    """A batch of items: `x`, `label`, `device`, `patient`, `index` stacked and `recording` listed exactly as torch's
    default collate does, and `meta` the list of the items' metadata records."""
    head = default_collate([tuple(item[:-1]) for item in items])
    return Sample(*head, meta=[item.meta for item in items])


class CycleDataset(Dataset):
    """Cycles of a list of recordings of `db`, cut per `cycle_cfg`, as fbank (`fbank_cfg`) or waveform (`fbank_cfg=None`)."""

    def __init__(self, db: Database, recordings: list[Recording], cycle_cfg: CycleConfig = CycleConfig(),
                 fbank_cfg: FbankConfig | None = FbankConfig(), *, cache_dir: str | Path | None = None,
                 workers: int | None = None, progress: bool = True, use_cache: bool = True,
                 allow_missing_audio: bool = False):
        missing = [r.stem for r in recordings if r.audio is None]
        if missing and not allow_missing_audio:
            raise LungsoundError(f"{len(missing)} of {len(recordings)} recordings have no audio file (first: "
                                 f"{missing[0]}); pass allow_missing_audio=True to use only those with audio", db.root)
        if missing:
            warnings.warn(f"{db.root}: leaving out {len(missing)} recordings without audio", stacklevel=2)
        self.db = db
        self.recordings = [r for r in recordings if r.audio is not None]
        self.cycle_cfg, self.fbank_cfg = cycle_cfg, fbank_cfg
        cached = load_or_build(db.root, self.recordings, cycle_cfg, fbank_cfg, cache_dir=cache_dir, workers=workers,
                               progress=progress, use_cache=use_cache)
        self.arrays = cached.arrays
        self.rows = np.arange(len(cached.arrays))  # dataset position -> row of `arrays`
        self.recording_index = cached.recording_index
        self.cycle_index = cached.cycle_index
        self.labels = np.array([self.recordings[r].cycles[c].label
                                for r, c in zip(self.recording_index, self.cycle_index)], dtype=np.int64)
        self.device_names = db.devices  # the vocabulary of `devices` (per-device scores are named by it)
        self.devices = self.domain_labels("device")
        self.patients = np.array([self.recordings[r].patient for r in self.recording_index], dtype=np.int64)

    @classmethod
    def from_split(cls, db: Database, split: str, **kwargs) -> "CycleDataset":
        """All cycles of the recordings that `db`'s split assigns to 'train' or 'test'."""
        recordings = db.select(split)
        if not recordings:
            raise LungsoundError(f"split '{db.split_name}' has no {split} recordings", db.root)
        return cls(db, recordings, **kwargs)

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> Sample:
        rec = self.recordings[self.recording_index[i]]
        x = torch.from_numpy(np.array(self.arrays[self.rows[i]], dtype=np.float32))  # a copy: the cache stays read-only
        return Sample(x, int(self.labels[i]), int(self.devices[i]), rec.patient, rec.stem, i, rec.meta)

    @property
    def metas(self) -> list[SampleMeta]:
        """Every item's metadata record, in item order."""
        return [self.recordings[r].meta for r in self.recording_index]

    def subset(self, patients: set[int] | None = None, exclude_patients: set[int] | None = None) -> "CycleDataset":
        """A view over the same cached arrays with only the cycles of `patients` (or all but `exclude_patients`)."""
        keep = np.ones(len(self), dtype=bool)
        if patients is not None:
            keep &= np.isin(self.patients, list(patients))
        if exclude_patients is not None:
            keep &= ~np.isin(self.patients, list(exclude_patients))
        view = copy.copy(self)
        for name in ("rows", "recording_index", "cycle_index", "labels", "devices", "patients"):
            setattr(view, name, getattr(self, name)[keep])
        return view

    def domain_labels(self, name: str, *, definitions: str = "clean") -> np.ndarray:
        """Per-item index into the vocabulary of domain `name` (device, age_group, sex, location; device and location
        vocabularies are the database's), read from each item's metadata record; -1 where unknown.

        `definitions` is "paper" (the reference code: adult at 19 and over, a missing age counted as a child; sex M 0,
        anything else 1; location from the patient's metadata column) or "clean" (child/adult/elderly, unknown ages
        and sexes -1, location from the recording's own name); see `lungsound.data.labels`. Training passes its
        `train.protocol`.
        """
        if name == GENERATED_DOMAIN:  # real cycles: the generated flag of [AFT] is 0 (see lungsound.data.generated)
            return np.zeros(len(self), dtype=np.int64)
        return np.array(domain_indices(name, self.metas, definitions, self.db), dtype=np.int64)

    def class_counts(self, n_classes: int = 4) -> np.ndarray:
        return np.bincount(self.labels, minlength=n_classes)
