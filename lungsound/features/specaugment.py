"""SpecAugment masking as used by the AST respiratory-sound papers (docs/methods.md section 3).

SpecAugment (Park et al., Interspeech 2019) without time warping, with the policy of [PMCL] (Bae et al., Interspeech
2023), [SGSCL] (Kim et al., ICASSP 2024) and [AFT] (Kim et al., 2023), on spectrograms laid out (time, freq):

- Gate: the masks are applied only when  g >= z,  z ~ N(0, 1), g = 1.0, i.e. with probability Phi(1) = 0.841.
- Two frequency masks, then two time masks. Each mask draws its width w = int(u), u ~ U(0, W) (W = 48 bins for
  frequency, 160 frames for time, so w in [0, W - 1]; clipped to D = the axis length), then its start s uniformly over
  every valid start, the integers 0 .. D - w INCLUDED (the reference's ``randint(0, D - w)``, whose upper end is
  inclusive; s = 0 when w = D), and sets positions [s, s + w) to the fill value. So a mask can end on the last frame
  or bin. Both semantics draw starts this way: an exclusive upper end (start < D - w, which never masks the last
  frame or bin) is an off-by-one, not a corrected definition, so ``clean`` does not keep it.
- Fill value: the mean of the current spectrogram, computed once before the frequency masks and recomputed (over the
  partly masked spectrogram) before the time masks. Masks may overlap.

Two semantics:

- ``paper`` reproduces the reference code. ``per="sample"`` ([PMCL]) draws gate and masks for each sample
  separately and works on a copy (the caller's tensor, possibly a cached array, is left alone). ``per="batch"``
  ([SGSCL], [AFT]) draws one gate and one set of masks for the whole batch, takes the mean over the whole batch, and
  writes IN PLACE into the tensor it is given; so [SGSCL]'s second view, built from the same tensor, carries the
  first view's masks as well.
- ``clean`` draws fresh masks for every sample with probability 1 (no gate) and always works on a copy, so cached
  features are never modified.

All random draws come from one CPU `torch.Generator` (the global one when none is given), in this order per
spectrogram: gate (paper only), then (width, start) for each frequency mask, then for each time mask.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from lungsound.errors import LungsoundError

SEMANTICS = ("paper", "clean")
PER = ("sample", "batch")


@dataclass
class SpecAugConfig:
    """SpecAugment policy; the defaults are the AST papers' 2 x 48 frequency and 2 x 160 time masks."""

    freq_masks: int = 2
    freq_width: int = 48
    time_masks: int = 2
    time_width: int = 160
    semantics: str = "paper"  # "paper" (reference behaviour) or "clean"
    per: str = "sample"  # "sample" ([PMCL]) or "batch" ([SGSCL]/[AFT]); "clean" requires "sample"
    gate_threshold: float = 1.0  # paper gate: apply when gate_threshold >= N(0, 1)

    def __post_init__(self) -> None:
        if self.semantics not in SEMANTICS:
            raise LungsoundError(f"specaugment semantics must be one of {SEMANTICS}, got {self.semantics!r}")
        if self.per not in PER:
            raise LungsoundError(f"specaugment per must be one of {PER}, got {self.per!r}")
        if self.semantics == "clean" and self.per == "batch":
            raise LungsoundError("specaugment semantics 'clean' draws masks per sample; per='batch' is a paper quirk")
        for name in ("freq_masks", "freq_width", "time_masks", "time_width"):
            if getattr(self, name) < 0:
                raise LungsoundError(f"specaugment {name} must be >= 0, got {getattr(self, name)}")


@dataclass(frozen=True)
class MaskPlan:
    """The random draws for one spectrogram: whether it is masked, and (start, width) of each mask."""

    applied: bool
    freq: tuple[tuple[int, int], ...]
    time: tuple[tuple[int, int], ...]


def _draw_mask(max_width: int, dim: int, generator: torch.Generator | None) -> tuple[int, int]:
    """(start, width): width = int(U(0, max_width)) clipped to dim, start uniform over 0 .. dim - width inclusive."""
    width = min(int(torch.rand((), generator=generator).item() * max_width), dim)
    # torch.randint's `high` is exclusive: high = dim - width + 1 makes dim - width itself a possible start.
    start = int(torch.randint(0, dim - width + 1, (), generator=generator).item()) if dim > width else 0
    return start, width


class SpecAugment:
    """Frequency and time masking of a (B, T, F) batch (or one (T, F) spectrogram); see the module docstring."""

    def __init__(self, cfg: SpecAugConfig | None = None, generator: torch.Generator | None = None):
        self.cfg = cfg if cfg is not None else SpecAugConfig()
        self.generator = generator

    @property
    def in_place(self) -> bool:
        """True when calls write into the tensor given (paper semantics, one draw per batch)."""
        return self.cfg.semantics == "paper" and self.cfg.per == "batch"

    def plan(self, n_time: int, n_freq: int, generator: torch.Generator | None = None) -> MaskPlan:
        """Draw the gate and masks for one spectrogram of n_time frames and n_freq bins."""
        g = generator if generator is not None else self.generator
        cfg = self.cfg
        if cfg.semantics == "paper" and not cfg.gate_threshold >= torch.randn((), generator=g).item():
            return MaskPlan(applied=False, freq=(), time=())
        freq = tuple(_draw_mask(cfg.freq_width, n_freq, g) for _ in range(cfg.freq_masks))
        time = tuple(_draw_mask(cfg.time_width, n_time, g) for _ in range(cfg.time_masks))
        return MaskPlan(applied=True, freq=freq, time=time)

    @staticmethod
    def apply(spec: torch.Tensor, plan: MaskPlan) -> torch.Tensor:
        """Write the masks of ``plan`` into ``spec`` (..., T, F) in place, filling with the current mean."""
        if not plan.applied:
            return spec
        fill = spec.mean()
        for start, width in plan.freq:
            spec[..., start : start + width] = fill
        fill = spec.mean()
        for start, width in plan.time:
            spec[..., start : start + width, :] = fill
        return spec

    def __call__(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """Masked spectrogram(s): the input itself when `in_place`, otherwise a masked copy."""
        if not isinstance(x, torch.Tensor) or x.dim() not in (2, 3) or not x.is_floating_point():
            shape = tuple(x.shape) if hasattr(x, "shape") else type(x).__name__
            raise LungsoundError(f"SpecAugment expects a float tensor (B, T, F) or (T, F), got {shape}")
        n_time, n_freq = x.shape[-2], x.shape[-1]
        if self.in_place:
            return self.apply(x, self.plan(n_time, n_freq, generator))
        out = x.clone()
        for spec in out if out.dim() == 3 else [out]:
            self.apply(spec, self.plan(n_time, n_freq, generator))
        return out
