"""Domain-adversarial training (DAT) with a gradient reversal layer.

The gradient reversal layer and schedule are from DANN: Ganin & Lempitsky, "Unsupervised Domain Adaptation by
Backpropagation", ICML 2015. DAT on the stethoscope domain is the baseline of [SGSCL] Kim, Bae, Cho, Lee, Jung,
"Stethoscope-guided Supervised Contrastive Learning for Cross-domain Adaptation on Respiratory Sound Classification",
ICASSP 2024, arXiv 2312.09603 (docs/methods.md section 8); the same objective with real/generated as the domain and
alpha = 0.2 is the adversarial fine-tuning of [AFT] Kim et al., 2023, arXiv 2311.06480 (docs/methods.md section 10).

    GRL_lambda(z) = z  in the forward pass,   d GRL_lambda / dz = -lambda I  in the backward pass;
    z = f(aug(x)),   L = CE(W z, y) + alpha CE(D(GRL_lambda(z)), d),   D = LayerNorm + Linear(D, n_domains).

So D learns to predict the domain d while the backbone f receives -alpha lambda times D's gradient and learns
features from which the domain cannot be told. lambda is ``grl_lambda`` (1.0, what the reference code effectively
uses) with ``grl_schedule: constant``, or the DANN ramp with ``grl_schedule: dann``:

    lambda(p) = 2 / (1 + exp(-gamma p)) - 1,   p = fraction of training done (``ctx.progress``),  gamma = 10.

The domain d is the stethoscope (``batch.device``, 4 devices) by default; ``domain`` names another metadata domain,
read from ``batch.domain`` (age group, sex, location, or real 0 / generated 1 for [AFT]); the reference trains DAT with
the age, sex, location and device domains. ``n_domains`` is the discriminator's output count: an experiment that does
not set it gets the number of values of its domain under the protocol's definitions
(``lungsound.training.trainer.objective_params``: 4 devices, 2 paper age groups or 3 clean ones, 2 sexes, 7 chest
locations, 2 for real/generated). Samples of unknown domain (-1) are ignored by the domain term. CE is plain by default
(``weighted_ce=False``): the reference's DAT script does not pass ``--weighted_loss``.
"""

from __future__ import annotations

import dataclasses
import math

import torch
import torch.nn.functional as F
from torch import nn

from lungsound.data.labels import GENERATED_DOMAIN
from lungsound.errors import LungsoundError
from lungsound.methods.base import Batch, ObjectiveSpec, StepContext, register_objective
from lungsound.methods.compose import CleanPass, CleanPassObjective
from lungsound.methods.heads import DEVICE_DOMAIN, DomainHead, domain_labels

SCHEDULES = ("constant", "dann")


class GradientReversal(torch.autograd.Function):
    """Identity forward; multiplies the incoming gradient by ``-lambd`` backward."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, lambd: float) -> torch.Tensor:
        ctx.lambd = float(lambd)
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad_output: torch.Tensor):
        return -ctx.lambd * grad_output, None


def grad_reverse(x: torch.Tensor, lambd: float = 1.0) -> torch.Tensor:
    """GRL_lambda(x): ``x`` forward, ``-lambd * grad`` backward."""
    return GradientReversal.apply(x, lambd)


def dann_lambda(progress: float, gamma: float = 10.0) -> float:
    """DANN's reversal weight ``2 / (1 + exp(-gamma p)) - 1``: 0 at p = 0, rising towards 1."""
    return 2.0 / (1.0 + math.exp(-gamma * float(progress))) - 1.0


def as_configured(spec: ObjectiveSpec, params: dict) -> ObjectiveSpec:
    """DAT with the real/generated flag as its domain (the domain defaults to the device) is [AFT]'s adversarial
    fine-tuning: a card names and cites it as such."""
    if params.get("domain", DEVICE_DOMAIN) != GENERATED_DOMAIN:
        return spec
    return dataclasses.replace(spec, card="adversarial fine-tuning on real and generated sounds, AFT", paper="AFT",
                               cited_for="adversarial fine-tuning with generated sounds", configured=None)


@register_objective("dat", card="domain-adversarial training, DAT", paper="SGSCL", uses_domain=True,
                    cited_for="the device-adversarial (DAT) baseline", configured=as_configured)
class DAT(CleanPassObjective):
    """L = CE(W z, y) + alpha CE(D(GRL(z)), d); see the module docstring."""

    name = "dat"

    def __init__(self, feature_dim: int, num_classes: int, class_weights: torch.Tensor | None = None,
                 alpha: float = 1.0, n_domains: int = 4, domain: str = DEVICE_DOMAIN, grl_schedule: str = "constant",
                 grl_lambda: float = 1.0, gamma: float = 10.0, weighted_ce: bool = False):
        super().__init__(feature_dim, num_classes, class_weights=class_weights, weighted_ce=weighted_ce)
        if grl_schedule not in SCHEDULES:
            raise LungsoundError(f"method 'dat': grl_schedule must be one of {SCHEDULES}, got {grl_schedule!r}")
        self.alpha = float(alpha)
        self.n_domains = int(n_domains)
        self.domain = domain
        self.grl_schedule = grl_schedule
        self.grl_lambda = float(grl_lambda)
        self.gamma = float(gamma)
        self.domain_head = DomainHead(feature_dim, self.n_domains)

    def reversal_weight(self, ctx: StepContext) -> float:
        return self.grl_lambda if self.grl_schedule == "constant" else dann_lambda(ctx.progress, self.gamma)

    def auxiliary(self, model: nn.Module, batch: Batch, ctx: StepContext, clean: CleanPass):
        d = domain_labels(batch, self.domain, self.name)
        if bool((d >= self.n_domains).any()):
            raise LungsoundError(
                f"method 'dat': domain {self.domain!r} has label {int(d.max())} but n_domains is {self.n_domains}"
            )
        lam = self.reversal_weight(ctx)
        logits = self.domain_head(grad_reverse(clean.z, lam)).float()
        known = d >= 0
        if bool(known.any()):
            loss_domain = F.cross_entropy(logits[known], d[known])
            accuracy = float((logits[known].argmax(dim=1) == d[known]).float().mean())
        else:
            loss_domain, accuracy = logits.sum() * 0.0, float("nan")
        logs = {"loss_domain": float(loss_domain.detach()), "grl_lambda": lam, "domain_acc": accuracy}
        return self.alpha * loss_domain, logs
