"""The extra heads the AST methods train next to the model, and the domain labels they use.

- :class:`Projector` ``h(z) = Linear(D, D) -> BatchNorm1d(D) -> ReLU -> Linear(D, D_out)`` (``D_out = D`` by default) is
  the projection head of Patch-Mix contrastive learning ([PMCL] Bae et al., Interspeech 2023, arXiv 2305.14032,
  docs/methods.md section 7) and of stethoscope-guided supervised contrastive learning ([SGSCL] Kim et al., ICASSP 2024,
  arXiv 2312.09603, docs/methods.md section 8). One definition serves both.
- :class:`DomainHead` ``D(z) = Linear(D, n_domains)(LayerNorm(z))`` is the domain discriminator of the DAT baseline
  ([SGSCL], after DANN, Ganin & Lempitsky, ICML 2015) and of adversarial fine-tuning ([AFT] Kim et al., 2023,
  arXiv 2311.06480, real vs generated). It has the class head's layout, so it is that class under another name.
- :func:`domain_labels` picks the domain index of every sample of a batch: the stethoscope (``batch.device``, papers'
  default) or another metadata domain the trainer put in ``batch.domain`` (age group, sex, location, real/generated);
  ``-1`` marks an unknown domain.

None of these is used at inference, where only the model's own ``f`` and ``W`` run.
"""

from __future__ import annotations

import torch
from torch import nn

from lungsound.errors import LungsoundError
from lungsound.methods.base import Batch
from lungsound.models.base import ClassifierHead

DEVICE_DOMAIN = "device"


class Projector(nn.Module):
    """``Linear(D, D) - BatchNorm1d(D) - ReLU - Linear(D, out_dim)``; ``out_dim`` is ``D`` (768) by default."""

    def __init__(self, feature_dim: int, out_dim: int | None = None):
        super().__init__()
        if feature_dim < 1:
            raise LungsoundError(f"projector feature_dim must be at least 1, got {feature_dim}")
        out_dim = feature_dim if out_dim is None else out_dim
        self.net = nn.Sequential(
            nn.Linear(feature_dim, feature_dim),
            nn.BatchNorm1d(feature_dim),
            nn.ReLU(inplace=True),
            nn.Linear(feature_dim, out_dim),
        )

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(z)


class DomainHead(ClassifierHead):
    """``LayerNorm(D) + Linear(D, n_domains)``: a domain discriminator with the class head's layout."""

    def __init__(self, feature_dim: int, n_domains: int):
        if n_domains < 2:
            raise LungsoundError(f"a domain head needs at least 2 domains, got n_domains={n_domains}")
        super().__init__(feature_dim, n_domains)


def domain_labels(batch: Batch, domain: str = DEVICE_DOMAIN, method: str = "objective") -> torch.Tensor:
    """The ``(B,)`` domain index of each sample: ``batch.device`` for ``domain="device"``, else ``batch.domain``.

    ``method`` names the caller in the error raised when ``batch.domain`` was asked for but the batch carries none.
    """
    if domain == DEVICE_DOMAIN:
        return batch.device
    if batch.domain is None:
        raise LungsoundError(
            f"method {method!r} uses domain {domain!r}, but the batch carries no domain labels (batch.domain is None); "
            f"the experiment must ask the data loader for the {domain!r} domain"
        )
    return batch.domain
