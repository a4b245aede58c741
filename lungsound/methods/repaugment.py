"""RepAugment: representation-level augmentation for any backbone (docs/methods.md section 9).

[REPAUG] Kim, Toikkanen, Bae, Kim, Jung, "RepAugment: Input-Agnostic Representation-Level Augmentation for Respiratory
Sound Classification", EMBC 2024, arXiv 2405.02996.

Waveform speech models (wav2vec 2.0, HuBERT, WavLM) take raw audio, so SpecAugment has nothing to mask. RepAugment
augments the pooled representation ``z`` of shape ``(B, D)`` (the time mean of the last hidden state for speech models, the
pooled ``(cls + dist) / 2`` for the AST, before the head's LayerNorm) just before the classifier, in training only.

Rep-Mask (:func:`rep_mask`). With probability ``P(N(0,1) <= 1) = 0.841`` per batch (the SpecAugment gate), draw ``blocks``
(default 2) contiguous blocks over the feature dimensions, for block ``k``

    w_k = int(U(0, F)),   s_k ~ U{0, ..., D - w_k},
    M_j = 1  iff  s_k <= j < s_k + w_k  for some k      (the same M for every row; blocks may overlap)

and, with ``mu = mean(z)`` the scalar mean of the whole batch's representation,

    fill "paper":  z' = z (1 - M) + mu M          (the formula of the paper's text)
    fill "code":   z' = z (1 - M) + mu z M        (what the authors' code of the period computes; the default)
    fill "zero":   z' = z (1 - M)

The width bound ``F`` is an absolute number of dimensions, as in the authors' code (docs/methods.md section 9): ``F = 288``
(their AST policy; 192 for 512-d CNNs), the same for a 1,024-d large speech model, whose blocks are therefore at most 287
wide too. The option ``max_width_ratio = r`` gives ``F = r D`` instead (``r = 0.375``: 288 of 768, 384 of 1,024).
``F <= D`` is required.

On average, with the gate and F = 288, 28.0% of the 768 dimensions are masked (33.3% when the gate fires; see the
tests).

Rep-Gen (:func:`rep_gen`). Every step, without a gate, the rows of the minority classes (every abnormal class: crackle,
wheeze, both) are replaced by noisy copies, ``z'_i = z_i + eps_i``, ``eps_i ~ N(0, std^2 I)`` with ``std = 0.2``; normal
rows are unchanged and the batch does not grow. The variant ``minority="all"`` adds the noise to every row (the paper's
second setting, used with a sampler that oversamples every class: :class:`lungsound.data.sampler.BalancedOversampler`).

RepAugment = Rep-Mask, then Rep-Gen. It is never combined with SpecAugment in one run.
"""

from __future__ import annotations

import torch
from torch import nn

from lungsound.config import REP_FILLS, REP_MINORITIES, REPRESENTATIONS
from lungsound.data.labels import CLASSES
from lungsound.errors import LungsoundError

NORMAL = CLASSES.index("normal")
MODES = tuple(REPRESENTATIONS)  # none | rep_mask | rep_gen | repaugment, as the config file names them
MASKING = ("rep_mask", "repaugment")  # the modes that run Rep-Mask
GENERATING = ("rep_gen", "repaugment")  # the modes that run Rep-Gen
GATE_THRESHOLD = 1.0  # the mask is applied when N(0, 1) <= 1.0: probability 0.8413
MAX_WIDTH = 288  # the authors' absolute width bound F (their AST policy), docs/methods.md section 9


def _draw_device(generator: torch.Generator | None, fallback: torch.device) -> torch.device:
    return generator.device if generator is not None else fallback


def _check_z(z: torch.Tensor, what: str) -> None:
    if not isinstance(z, torch.Tensor) or z.dim() != 2:
        got = tuple(z.shape) if isinstance(z, torch.Tensor) else type(z).__name__
        raise LungsoundError(f"{what} expects a representation batch z of shape (B, D), got {got}")


def mask_positions(dim: int, max_width: float, blocks: int = 2,
                   generator: torch.Generator | None = None) -> torch.Tensor:
    """The Rep-Mask mask ``M`` of shape ``(dim,)`` (bool): ``blocks`` blocks of width ``int(U(0, max_width))``."""
    if not 0 < max_width <= dim:
        raise LungsoundError(f"Rep-Mask max_width must be in (0, D={dim}], got {max_width}")
    if blocks < 1:  # as the config rule augment.rep_blocks >= 1: zero blocks would mask nothing
        raise LungsoundError(f"Rep-Mask blocks must be >= 1 (0 blocks mask nothing), got {blocks}")
    device = _draw_device(generator, torch.device("cpu"))
    mask = torch.zeros(dim, dtype=torch.bool)
    for _ in range(int(blocks)):
        width = int(torch.rand((), generator=generator, device=device).item() * max_width)
        start = int(torch.randint(0, dim - width + 1, (), generator=generator, device=device).item())
        mask[start:start + width] = True
    return mask


def rep_mask(z: torch.Tensor, fill: str = "code", max_width: float = MAX_WIDTH, blocks: int = 2, gate: bool = True,
             generator: torch.Generator | None = None) -> torch.Tensor:
    """Rep-Mask of [REPAUG]: mask ``blocks`` contiguous feature blocks of ``z`` (B, D), the same for every row.

    ``max_width`` is ``F`` in dimensions (default 288, at most ``D``); with ``gate`` the mask is applied only when
    ``N(0,1) <= 1`` (one draw per call); ``fill`` is ``"code"``, ``"paper"`` or ``"zero"`` (module docstring). Returns a
    new tensor (or ``z`` itself when the gate does not fire); gradients flow to the unmasked entries and, for code/paper
    fill, through the mean.
    """
    _check_z(z, "rep_mask")
    if fill not in REP_FILLS:
        raise LungsoundError(f"Rep-Mask fill must be one of {', '.join(REP_FILLS)}, got {fill!r}")
    dim = z.shape[1]
    if not 0 < max_width <= dim:  # before the gate's draw: a bound the representation cannot hold fails every call
        raise LungsoundError(f"Rep-Mask max_width must be in (0, D={dim}], got {max_width}")
    if gate:
        draw = torch.randn((), generator=generator, device=_draw_device(generator, torch.device("cpu")))
        if draw.item() > GATE_THRESHOLD:
            return z
    mask = mask_positions(dim, max_width, blocks, generator).to(z.device)
    if not mask.any():
        return z.clone()
    keep = (~mask).to(z.dtype)
    masked = mask.to(z.dtype)
    if fill == "zero":
        return z * keep
    mu = z.mean()
    if fill == "paper":
        return z * keep + mu * masked
    return z * keep + mu * z * masked


def rep_gen(z: torch.Tensor, labels: torch.Tensor, std: float = 0.2, minority: str = "abnormal",
            generator: torch.Generator | None = None) -> torch.Tensor:
    """Rep-Gen of [REPAUG]: ``z_i + N(0, std^2 I)`` for the rows whose label is not normal (every row for ``"all"``).

    Returns a new tensor of the same shape; normal rows are returned unchanged (``"abnormal"``).
    """
    _check_z(z, "rep_gen")
    if minority not in REP_MINORITIES:
        raise LungsoundError(f"Rep-Gen minority must be one of {', '.join(REP_MINORITIES)}, got {minority!r}")
    if not std >= 0:
        raise LungsoundError(f"Rep-Gen std must be >= 0, got {std}")
    if minority == "abnormal":
        if not isinstance(labels, torch.Tensor) or labels.shape != (z.shape[0],):
            got = tuple(labels.shape) if isinstance(labels, torch.Tensor) else type(labels).__name__
            raise LungsoundError(f"Rep-Gen needs one label per row of z ({z.shape[0]},), got {got}")
    device = _draw_device(generator, z.device)
    noise = torch.randn(z.shape, generator=generator, device=device, dtype=torch.float32).to(z.device, z.dtype) * std
    if minority == "abnormal":
        noise = noise * (labels.to(z.device) != NORMAL).to(z.dtype).unsqueeze(1)
    return z + noise


class RepAugment(nn.Module):
    """The representation augmentation of one experiment: ``mode`` none | rep_mask | rep_gen | repaugment.

    ``aug(z, labels, generator=None)`` applies Rep-Mask (``fill``, ``F = max_width`` dimensions, or
    ``F = max_width_ratio * D`` when a ratio is given, ``blocks``, ``gate``) and/or Rep-Gen (``std``, ``minority``) in
    training mode and returns ``z`` unchanged in eval mode.
    """

    def __init__(self, mode: str = "repaugment", fill: str = "code",
                 max_width: int = MAX_WIDTH, max_width_ratio: float | None = None, blocks: int = 2, std: float = 0.2,
                 minority: str = "abnormal", gate: bool = True):
        super().__init__()
        if mode not in MODES:
            raise LungsoundError(f"RepAugment mode must be one of {', '.join(MODES)}, got {mode!r}")
        if fill not in REP_FILLS:
            raise LungsoundError(f"RepAugment fill must be one of {', '.join(REP_FILLS)}, got {fill!r}")
        if isinstance(max_width, bool) or not isinstance(max_width, int) or max_width < 1:
            raise LungsoundError(f"RepAugment max_width must be an integer >= 1 (dimensions), got {max_width!r}")
        if max_width_ratio is not None and not 0 < max_width_ratio <= 1:
            raise LungsoundError(f"RepAugment max_width_ratio must be null or in (0, 1], got {max_width_ratio}")
        if isinstance(blocks, bool) or not isinstance(blocks, int) or blocks < 1:  # augment.rep_blocks >= 1 too
            raise LungsoundError(f"RepAugment blocks must be an integer >= 1 (0 blocks mask nothing), got {blocks!r}")
        if not std >= 0:
            raise LungsoundError(f"RepAugment std must be >= 0, got {std}")
        if minority not in REP_MINORITIES:
            raise LungsoundError(f"RepAugment minority must be one of {', '.join(REP_MINORITIES)}, got {minority!r}")
        self.mode, self.fill, self.max_width, self.blocks = mode, fill, max_width, blocks
        self.max_width_ratio = None if max_width_ratio is None else float(max_width_ratio)
        self.std, self.minority, self.gate = float(std), minority, bool(gate)

    @property
    def masks(self) -> bool:
        return self.mode in MASKING

    @property
    def generates(self) -> bool:
        return self.mode in GENERATING

    def width(self, dim: int) -> float:
        """The Rep-Mask width bound ``F`` for a ``dim``-dimensional representation."""
        return self.max_width if self.max_width_ratio is None else self.max_width_ratio * dim

    def params(self) -> dict[str, object]:
        """The settings, flat, for experiment tracking."""
        return {"mode": self.mode, "fill": self.fill, "max_width": self.max_width,
                "max_width_ratio": self.max_width_ratio, "blocks": self.blocks, "std": self.std,
                "minority": self.minority, "gate": self.gate}

    def forward(self, z: torch.Tensor, labels: torch.Tensor | None = None,
                generator: torch.Generator | None = None) -> torch.Tensor:
        if not self.training or self.mode == "none":
            return z
        if self.masks:
            _check_z(z, "RepAugment")
            z = rep_mask(z, fill=self.fill, max_width=self.width(z.shape[1]), blocks=self.blocks, gate=self.gate,
                         generator=generator)
        if self.generates:
            if labels is None and self.minority == "abnormal":
                raise LungsoundError("RepAugment with Rep-Gen on the abnormal classes needs the batch labels")
            z = rep_gen(z, labels, std=self.std, minority=self.minority, generator=generator)
        return z

    def extra_repr(self) -> str:
        return ", ".join(f"{k}={v!r}" for k, v in self.params().items())
