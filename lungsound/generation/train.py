"""Training the DiffWave vocoder of [AFT] on the training split (docs/methods.md section 10; Kong et al., ICLR 2021).

Data: every training cycle cut as section 2 with desired length 4 s (repeat padding), at 16 kHz; under the clean
protocol the classifier's validation patients (`data.val_fraction`, `data.val_seed`, the same patients the classifier
holds out) are left out, so generated clips never carry information about them. Each step takes the next batch of
`batch_size` cycles from shuffled epochs without replacement, the last partial batch of an epoch dropped, as the
reference's data loader (`lungsound.generation.batches.EpochBatcher`), computes each cycle's vocoder mel, crops 62
random consecutive frames and the matching 62 x 256 samples (from a generator seeded by (seed, step, rank)), and
minimises

    L = | eps - eps_hat(sqrt(a_t) x_0 + sqrt(1 - a_t) eps, t, mel) |_1,   t ~ U{0..49},  eps ~ N(0, I)

with Adam (2e-4), in full fp32 as the reference (`train.amp: true` turns on mixed precision on CUDA), data parallel
under torchrun. `train.batch_size` is per process, as the classifier's under torchrun: with N processes every step
trains on N x batch_size clips, each process on its own disjoint share of the epoch. The reference's global batch was
32 (its script asks for 16 and exposes two GPUs; it halves one variable, but its data loader reads a copy made before
the halving, so each GPU took 16): `batch_size: 32` on one process reproduces it, as does `batch_size: 16` under
torchrun with two. The run is step-based: MLflow gets the loss every
`log_every` steps, vocoded examples (audio and a real-vs-generated mel picture) every `sample_every`, and an atomic
checkpoint (`last.pt`, weights-only loadable, plus the usable `vocoder/` folder) every `checkpoint_every`. `resume`
continues exactly: `last.pt` holds the batcher's epoch and position, epoch e's order depends only on (seed, e), and the
crops and noise of step s only on (seed, s, rank), never on what ran before.

This module is what is trained: the experiment's config and its checks, the training clips, the crop of a step and the
network; `lungsound.generation.loop.train_vocoder` runs it (the loop imports this module, never the other way round).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from lungsound.config import RULES, TrackingConfig, load_typed
from lungsound.data.cycles import CycleConfig
from lungsound.data.database import open_database
from lungsound.data.dataset import CycleDataset
from lungsound.data.default import resolve_root
from lungsound.data.labels import CLASSES
from lungsound.errors import LungsoundError
from lungsound.generation.diffusion import random_crop
from lungsound.generation.diffwave import SIZE_BOUNDS, DiffWave, DiffWaveConfig
from lungsound.generation.mel import SAMPLE_RATE, vocoder_mel
from lungsound.training.data import validation_patients


@dataclass
class VocoderData:
    root: str | None = None  # an ICBHI-format folder; None = the built-in synthetic set
    split: str = "official"
    duration: float = 4.0  # seconds per training cycle (section 10)
    crop_frames: int = 62
    val_fraction: float = 0.2  # clean protocol: the classifier's validation patients are left out
    val_seed: int = 0
    cache: bool = True


@dataclass
class VocoderModel:
    residual_layers: int = 30
    residual_channels: int = 64
    dilation_cycle_length: int = 10
    class_conditional: bool = False  # a class embedding added to the step embedding (off in the paper)


@dataclass
class VocoderTrain:
    steps: int = 1_000_000
    batch_size: int = 32  # per process (N processes train on N x batch_size per step); 32 = the reference's batch
    lr: float = 2e-4
    amp: bool = False  # the reference trains in full fp32 (fp16: false); true = mixed precision on CUDA
    protocol: str = "paper"  # paper | clean (validation patients left out of the vocoder's data)
    seed: int = 1
    device: str = "auto"
    log_every: int = 100
    sample_every: int = 5000
    checkpoint_every: int = 5000
    threads: int | None = None


@dataclass
class VocoderTracking(TrackingConfig):
    experiment: str = "vocoder"  # the classifier's tracking section, with the vocoder's own MLflow experiment


@dataclass
class VocoderExperiment:
    name: str = "vocoder"
    description: str = ""
    data: VocoderData = field(default_factory=VocoderData)
    model: VocoderModel = field(default_factory=VocoderModel)
    train: VocoderTrain = field(default_factory=VocoderTrain)
    tracking: VocoderTracking = field(default_factory=VocoderTracking)


def load_vocoder_config(path: str | Path | None = None, overrides=()) -> VocoderExperiment:
    """A vocoder experiment file (e.g. experiments/vocoder_diffwave.yaml) with overrides, range-checked."""
    return check_vocoder_config(load_typed(VocoderExperiment, path, overrides), str(path or "<defaults>"))


def check_vocoder_config(cfg: VocoderExperiment, source: str) -> VocoderExperiment:
    """Range checks: the first problem is a one-line error naming `source` and the key."""
    checks = [("train.steps", cfg.train.steps >= 1), ("train.batch_size", cfg.train.batch_size >= 1),
              ("train.seed", cfg.train.seed >= 0),
              ("train.lr", cfg.train.lr > 0), ("train.log_every", cfg.train.log_every >= 1),
              ("train.sample_every", cfg.train.sample_every >= 1),
              ("train.checkpoint_every", cfg.train.checkpoint_every >= 1),
              ("train.protocol", cfg.train.protocol in ("paper", "clean")), ("data.duration", cfg.data.duration > 0),
              ("data.crop_frames", cfg.data.crop_frames >= 1), ("data.val_fraction", 0 < cfg.data.val_fraction < 1),
              ("model.residual_layers", cfg.model.residual_layers >= 1),
              ("model.residual_channels", cfg.model.residual_channels >= 1),
              ("model.dilation_cycle_length", cfg.model.dilation_cycle_length >= 1),
              ("tracking.output_dir", bool(cfg.tracking.output_dir.strip()))]
    for key, ok in checks:
        if not ok:
            raise LungsoundError(f"{key} is out of range", source)
    for key in ("residual_layers", "residual_channels", "dilation_cycle_length"):  # the DiffWave's own size bounds
        problem = SIZE_BOUNDS[key].problem(getattr(cfg.model, key))
        if problem:
            raise LungsoundError(f"model.{key} {problem}", source)
    names = {"name": cfg.name, "tracking.experiment": cfg.tracking.experiment,
             "tracking.run_name": cfg.tracking.run_name}
    for key, value in names.items():  # the classifier's rules: names of folders and MLflow experiments, not paths
        problem = RULES[key](value)
        if problem:
            raise LungsoundError(f"{key} {problem}, got {value!r}", source)
    return cfg


@dataclass
class TrainingClips:
    """The vocoder's training cycles: clip i is `waves[rows[i]]` (memory-mapped from the cycle cache), with its label."""

    waves: np.ndarray
    rows: np.ndarray
    labels: np.ndarray
    patients: np.ndarray
    source: list[tuple[str, int, str]]  # (recording stem, cycle index, device) of each clip
    root: str


def training_clips(root: str | None, split: str, duration: float, protocol: str, val_fraction: float = 0.2,
                   val_seed: int = 0, progress: bool = True, use_cache: bool = True) -> TrainingClips:
    """Training-split cycles cut to `duration` seconds at the vocoder's rate; under `clean`, without the classifier's
    validation patients."""
    db = open_database(resolve_root(root), split=split)
    ds = CycleDataset.from_split(db, "train", cycle_cfg=CycleConfig(SAMPLE_RATE, duration), fbank_cfg=None,
                                 progress=progress, use_cache=use_cache)
    if protocol == "clean":
        ds = ds.subset(exclude_patients=validation_patients(ds, val_fraction, val_seed))
    source = [(ds.recordings[r].stem, int(c), ds.recordings[r].device)
              for r, c in zip(ds.recording_index, ds.cycle_index)]
    return TrainingClips(ds.arrays, ds.rows, ds.labels, ds.patients, source, str(db.root))


def crop_batch(clips: TrainingClips, idx, crop_frames: int, generator: torch.Generator):
    """(audio (B, crop*256), mel (B, 80, crop), labels (B,)) of one training step: clips `idx`, randomly cropped."""
    idx = [int(i) for i in idx]
    audio, mels = [], []
    for i in idx:
        wave = torch.from_numpy(np.array(clips.waves[clips.rows[i]], dtype=np.float32))
        a, m = random_crop(wave, vocoder_mel(wave), frames=crop_frames, generator=generator)
        audio.append(a)
        mels.append(m)
    return torch.stack(audio), torch.stack(mels), torch.from_numpy(clips.labels[idx])


def build_vocoder(cfg: VocoderExperiment):
    m = cfg.model
    config = DiffWaveConfig(residual_layers=m.residual_layers, residual_channels=m.residual_channels,
                            dilation_cycle_length=m.dilation_cycle_length,
                            num_classes=len(CLASSES) if m.class_conditional else None)
    return DiffWave(config), config
