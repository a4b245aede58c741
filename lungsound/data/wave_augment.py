"""Waveform augmentation of training cycles: random gain and Gaussian noise, before the features are computed.

The AST + SAM recipe (Isik et al. 2025, docs/methods.md section 14) augments each training cycle's 16-kHz waveform
x, independently per item and epoch:

    with probability gain_p:   x <- g x,          g ~ U(1 - gain, 1 + gain)      (recipe: gain 0.1, p 0.5)
    with probability noise_p:  x <- x + n,        n ~ N(0, noise^2) per sample   (recipe: noise 1e-4, p 0.5)

gain first, then noise (the order the recipe lists them; not stated which comes first, our reading). The fbank is
then computed from the augmented waveform (`lungsound.features.fbank.compute_features`), so a fbank model sees exactly
what the authors' pipeline feeds it; a waveform model gets the augmented waveform itself. Validation and test cycles
are never augmented.

The draws of item i in epoch e come from a generator seeded with (seed, e, i) only: the same for every process, data
loader worker and resumed run. Config keys: `augment.wave_gain`, `augment.wave_gain_p`, `augment.wave_noise`,
`augment.wave_noise_p` (0 = off).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import numpy as np
import torch
from torch.utils.data import Dataset

from lungsound.features.fbank import FbankConfig, compute_features


@dataclass(frozen=True)
class WaveAugment:
    gain: float = 0.0  # half-width of the gain's uniform range around 1
    gain_p: float = 0.5
    noise: float = 0.0  # standard deviation of the added noise
    noise_p: float = 0.5
    seed: int = 0

    @property
    def active(self) -> bool:
        return (self.gain > 0 and self.gain_p > 0) or (self.noise > 0 and self.noise_p > 0)

    def __call__(self, x: np.ndarray, epoch: int, index: int) -> np.ndarray:
        """The augmented copy of waveform `x` (1-D float32) for item `index` in `epoch`."""
        rng = np.random.default_rng([self.seed, epoch, index])
        use_gain, gain, use_noise = rng.random(), rng.uniform(1 - self.gain, 1 + self.gain), rng.random()
        out = np.asarray(x, dtype=np.float32).copy()
        if use_gain < self.gain_p:
            out *= np.float32(gain)
        if use_noise < self.noise_p:
            out += (rng.standard_normal(out.shape) * self.noise).astype(np.float32)
        return out


class AugmentedWaveforms(Dataset):
    """The items of `base` (a waveform `CycleDataset`, same items and order as the run's training split), their
    waveform augmented by `augment` for the current epoch (`set_epoch`), then featurised with `fbank_cfg` (None: a
    waveform model's input, left as the waveform). Every other attribute (labels, class counts, domains, metadata)
    is `base`'s."""

    def __init__(self, base, fbank_cfg: FbankConfig | None, augment: WaveAugment):
        self.base, self.fbank_cfg, self.augment, self.epoch = base, fbank_cfg, augment, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, i: int):
        sample = self.base[i]
        wave = self.augment(sample.x.numpy(), self.epoch, i)
        x = compute_features(wave, self.fbank_cfg) if self.fbank_cfg is not None else torch.from_numpy(wave)
        return sample._replace(x=x)

    def subset(self, **kwargs) -> "AugmentedWaveforms":
        view = copy.copy(self)
        view.base = self.base.subset(**kwargs)
        return view

    def __getattr__(self, name: str):
        if name == "base":  # not set yet (unpickling in a loader worker): no recursion
            raise AttributeError(name)
        return getattr(self.base, name)
