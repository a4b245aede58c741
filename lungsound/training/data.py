"""Datasets for a training run, per protocol (docs/methods.md section 5).

`paper`: train on the official training split, evaluate on the test split every epoch (the papers select the best test
epoch). `clean`: hold out whole training patients (about `val_fraction` of the training cycles, the same patients for
every seed and method) as a validation split, select the epoch on it, and report the test split at that epoch. Cycles
are cut at the model's own sample rate and featurised as its spec says (`lungsound.models.build.input_configs`).

What the data layer could not match (recordings without a split entry, which are left out of training and testing,
split entries without an annotation file, duplicates; `MatchReport.problems`) is reported with `warnings.warn`, one
warning per kind with its count and the first names, naming the data folder.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np

from lungsound.config import ExperimentConfig
from lungsound.data.database import Database, open_database
from lungsound.data.dataset import CycleDataset
from lungsound.data.default import resolve_root
from lungsound.data.generated import GeneratedCycles, MixedDataset, check_sources
from lungsound.data.wave_augment import AugmentedWaveforms, WaveAugment
from lungsound.errors import LungsoundError
from lungsound.models.build import input_configs


@dataclass
class RunData:
    db: Database
    train: CycleDataset
    test: CycleDataset
    val: CycleDataset | None  # clean protocol only


def validation_patients(dataset: CycleDataset, fraction: float, seed: int) -> set[int]:
    """Training patients, in a fixed random order, taken until they hold `fraction` of the training cycles."""
    if not 0 < fraction < 1:
        raise LungsoundError(f"data.val_fraction must be between 0 and 1, got {fraction}")
    patients, counts = np.unique(dataset.patients, return_counts=True)
    order = np.random.default_rng(seed).permutation(len(patients))
    chosen, total = set(), 0
    for i in order:
        if total >= fraction * len(dataset):
            break
        chosen.add(int(patients[i]))
        total += counts[i]
    if len(chosen) == len(patients):
        raise LungsoundError(f"too few training patients ({len(patients)}) for a patient-disjoint validation split")
    return chosen


def warn_unmatched(db: Database) -> None:
    """One warning per problem of `db.report` (counts and the first names), so nothing is left out without a word."""
    for line in db.report.problems():
        warnings.warn(f"{db.root}: {line}", stacklevel=3)


def build_run_data(cfg: ExperimentConfig, progress: bool = True) -> RunData:
    db = open_database(resolve_root(cfg.data.root), split=cfg.data.split, format=cfg.data.format)
    warn_unmatched(db)
    cycle_cfg, fbank_cfg = input_configs(cfg)  # cycles at the model's own sample rate
    kwargs = dict(cycle_cfg=cycle_cfg, fbank_cfg=fbank_cfg, progress=progress, use_cache=cfg.data.cache)
    train = CycleDataset.from_split(db, "train", **kwargs)
    test = CycleDataset.from_split(db, "test", **kwargs)
    val = None
    held_out: set[int] = set()
    if cfg.train.protocol == "clean":
        held_out = validation_patients(train, cfg.data.val_fraction, cfg.data.val_seed)
        val = train.subset(patients=held_out)
        train = train.subset(exclude_patients=held_out)
    if cfg.data.generated:
        train = _with_generated(cfg, db, train, held_out, cycle_cfg, fbank_cfg, progress)
    augment = wave_augment(cfg)
    if augment.active:  # the same training items, featurised each epoch from augmented waveforms
        waves = CycleDataset.from_split(db, "train", **{**kwargs, "fbank_cfg": None})
        train = AugmentedWaveforms(waves.subset(exclude_patients=held_out) if held_out else waves, fbank_cfg, augment)
    return RunData(db, train, test, val)


def wave_augment(cfg: ExperimentConfig) -> WaveAugment:
    """The training cycles' waveform augmentation of `cfg` (inactive when augment.wave_gain and wave_noise are 0)."""
    a = cfg.augment
    return WaveAugment(gain=a.wave_gain, gain_p=a.wave_gain_p, noise=a.wave_noise, noise_p=a.wave_noise_p,
                       seed=cfg.train.seed)


def _with_generated(cfg: ExperimentConfig, db: Database, train, held_out: set[int], cycle_cfg, fbank_cfg, progress):
    """The training split plus the generated set of `data.generated` ([AFT]); clips of validation patients are left
    out, and the paper protocol stretches a clip's fbank to the cycle's frame count (see lungsound.data.generated)."""
    generated = GeneratedCycles(cfg.data.generated, cycle_cfg, fbank_cfg, stretch=cfg.train.protocol == "paper",
                                progress=progress, use_cache=cfg.data.cache, devices=db.devices)
    check_sources(generated, db)
    if held_out:
        generated = generated.without_patients(held_out)
    return MixedDataset(train, generated)
