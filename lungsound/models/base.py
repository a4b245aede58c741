"""The contract every lungsound model follows, and the classifier head they share.

Input is an AST-normalised Kaldi fbank batch ``x`` of shape ``(B, T, 128)`` (time x frequency, docs/methods.md section 3).
Every model exposes

- ``forward_features(x, patch_hook=None) -> z`` of shape ``(B, feature_dim)``, the pooled representation that the
  contrastive objectives ([PMCL], [SGSCL]) and representation augmentations ([REPAUG]) work on;
- ``forward_head(z) -> logits`` of shape ``(B, num_classes)``;
- ``forward(x) = forward_head(forward_features(x))``.

The head is the AST papers' ``LayerNorm(D) + Linear(D, n_classes)`` (docs/methods.md section 4):
``logits = W LN(z) + b``. Models whose input is not cut into patch tokens set ``supports_patch_hook = False`` and refuse a
``patch_hook`` with a :class:`~lungsound.errors.LungsoundError`, so Patch-Mix ([PMCL]) fails loudly on them.
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import nn

from lungsound.errors import LungsoundError

PatchHook = Callable[[torch.Tensor], torch.Tensor]
"""Maps the patch tokens ``E`` of shape ``(B, N, D)`` to replacement tokens of the same shape."""


class ClassifierHead(nn.Module):
    """``LayerNorm(D)`` followed by ``Linear(D, num_classes)``; with ``norm=False`` and ``dropout`` p, the AST + SAM
    authors' ``Dropout(p)`` followed by ``Linear(D, num_classes)`` (docs/methods.md section 14)."""

    def __init__(self, feature_dim: int, num_classes: int, norm: bool = True, dropout: float = 0.0):
        super().__init__()
        self.norm = nn.LayerNorm(feature_dim) if norm else nn.Identity()
        self.drop = nn.Dropout(dropout) if dropout else nn.Identity()
        self.fc = nn.Linear(feature_dim, num_classes)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.fc(self.drop(self.norm(z)))


class FeatureClassifier(nn.Module):
    """Base class: a feature extractor (``forward_features``) followed by a :class:`ClassifierHead`.

    Subclasses set ``self.feature_dim`` and ``self.num_classes``, build their extractor, call :meth:`_build_head`, and
    implement :meth:`forward_features`.
    """

    supports_patch_hook: bool = False
    feature_dim: int
    num_classes: int

    def _build_head(self, feature_dim: int, num_classes: int, norm: bool = True, dropout: float = 0.0) -> None:
        if num_classes < 1:
            raise LungsoundError(f"num_classes must be at least 1, got {num_classes}")
        self.feature_dim = int(feature_dim)
        self.num_classes = int(num_classes)
        self.head = ClassifierHead(self.feature_dim, self.num_classes, norm=norm, dropout=dropout)

    def forward_features(self, x: torch.Tensor, patch_hook: PatchHook | None = None) -> torch.Tensor:
        raise NotImplementedError

    def forward_head(self, z: torch.Tensor) -> torch.Tensor:
        return self.head(z)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))

    def _check_input(self, x: torch.Tensor, frames: int | None, mel_bins: int) -> None:
        """Raise a one-line error unless ``x`` is ``(B, frames, mel_bins)`` (any ``frames`` when it is None)."""
        ok = x.dim() == 3 and x.shape[2] == mel_bins and (frames is None or x.shape[1] == frames)
        if not ok:
            want = f"(B, {'T' if frames is None else frames}, {mel_bins})"
            raise LungsoundError(
                f"{type(self).__name__} expects an fbank batch of shape {want} (time x frequency), got {tuple(x.shape)}"
            )

    def _refuse_patch_hook(self, patch_hook: PatchHook | None) -> None:
        if patch_hook is not None:
            raise LungsoundError(
                f"{type(self).__name__} has no patch tokens, so patch_hook (Patch-Mix) cannot be applied; "
                "use a transformer model such as 'ast'"
            )
