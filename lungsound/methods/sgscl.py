"""Stethoscope-guided supervised contrastive learning (SG-SCL).

[SGSCL] Kim, Bae, Cho, Lee, Jung, "Stethoscope-guided Supervised Contrastive Learning for Cross-domain Adaptation on
Respiratory Sound Classification", ICASSP 2024, arXiv 2312.09603; docs/methods.md section 8. The contrastive term is the
supervised contrastive loss of Khosla et al., "Supervised Contrastive Learning", NeurIPS 2020, with the *domain*
(stethoscope) as the label.

Per batch:

    view 1   x1 = aug(x),  z1 = f(x1),  L_CE = CE(W z1, y)
    view 2   x2 = aug(x1)  (``view2: paper``)  or  x2 = aug(x)  (``view2: clean``),  z2 = f(x2)
    p1 = P(z1) (with gradient),  p2 = stop-grad(P(z2)),  P = Linear(D,D) - BatchNorm1d - ReLU - Linear(D,D)
    F = [p1; p2] (2B rows, L2-normalised),  l_ab = F_a . F_b / tau,  tau = 0.06
    P(a) = {b != a : d_b = d_a}  (d = device by default, or another metadata domain)
    L_SG = -(1/|A|) sum_{a in A} (1/|P(a)|) sum_{b in P(a)} [ l_ab - log sum_{c != a} exp(l_ac) ]
    L = L_CE + alpha L_SG,  alpha = 1.0.   No gradient reversal.

A = anchors with at least one positive. Here every anchor has one (its other view shares its domain), so |A| = 2B and
this is docs/methods.md's formula; for other inputs an anchor without positives has an undefined term (0/0 in the reference
formula) and is left out of the mean rather than made NaN or counted as zero. Samples of unknown domain (d = -1) are
left out of the contrastive term (neither anchors nor contrast samples); they still count in L_CE.

View 2 in the paper protocol: the reference applies its per-batch SpecAugment in place to the batch tensor, so view 2
is the first view with a second set of masks added. Here x2 = aug(copy of x1): the same content, without modifying the
tensor the first pass saved for backward. ``view2: clean`` augments a fresh copy of the unmasked batch.

No gradient passes through view 2: z2 and p2 are computed under ``torch.no_grad()`` (also saving the memory of a second
backbone graph). The projector runs on view 2 in its current mode, as the reference does (it projects then detaches), so
in training the BatchNorm of P normalises p2 with view 2's batch statistics and its running statistics are updated by
both views. CE is plain by default (``weighted_ce=False``): the reference's SG-SCL script does not pass
``--weighted_loss``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from lungsound.errors import LungsoundError
from lungsound.methods.base import Batch, StepContext, register_objective
from lungsound.methods.compose import CleanPass, CleanPassObjective
from lungsound.methods.heads import DEVICE_DOMAIN, Projector, domain_labels

VIEW2 = ("paper", "clean")


def supcon_loss(features: torch.Tensor, labels: torch.Tensor, temperature: float = 0.06) -> torch.Tensor:
    """Supervised contrastive loss over the rows of ``features`` (N, D) with ``labels`` (N,); see the module docstring.

    Rows are L2-normalised here. Anchors without a positive are left out of the mean; with none left the loss is 0
    (still connected to ``features``, so backward runs and gives zero gradients).
    """
    if features.dim() != 2 or labels.shape != features.shape[:1]:
        raise LungsoundError(
            f"supcon_loss expects features (N, D) and labels (N,), "
            f"got {tuple(features.shape)} and {tuple(labels.shape)}"
        )
    if temperature <= 0:
        raise LungsoundError(f"supcon_loss temperature must be positive, got {temperature}")
    feats = F.normalize(features.float(), dim=1)
    n = feats.shape[0]
    self_pair = torch.eye(n, dtype=torch.bool, device=feats.device)
    logits = (feats @ feats.T / temperature).masked_fill(self_pair, float("-inf"))
    log_prob = logits - torch.logsumexp(logits, dim=1, keepdim=True)
    positive = (labels[:, None] == labels[None, :]) & ~self_pair
    n_pos = positive.sum(dim=1)
    has_pos = n_pos > 0
    if not bool(has_pos.any()):
        return feats.sum() * 0.0
    mean_pos = torch.where(positive, log_prob, torch.zeros_like(log_prob)).sum(dim=1)[has_pos] / n_pos[has_pos]
    return -mean_pos.mean()


@register_objective("sgscl", card="stethoscope-guided supervised contrastive learning, SG-SCL", paper="SGSCL",
                    uses_domain=True)
class SGSCL(CleanPassObjective):
    """L = CE(W z1, y) + alpha SupCon_domain([P(z1); stop-grad(P(z2))]); see the module docstring."""

    name = "sgscl"

    def __init__(self, feature_dim: int, num_classes: int, class_weights: torch.Tensor | None = None,
                 alpha: float = 1.0, temperature: float = 0.06, view2: str = "paper", domain: str = DEVICE_DOMAIN,
                 weighted_ce: bool = False):
        super().__init__(feature_dim, num_classes, class_weights=class_weights, weighted_ce=weighted_ce)
        if view2 not in VIEW2:
            raise LungsoundError(f"method 'sgscl': view2 must be one of {VIEW2}, got {view2!r}")
        if temperature <= 0:
            raise LungsoundError(f"method 'sgscl': temperature must be positive, got {temperature}")
        self.alpha = float(alpha)
        self.temperature = float(temperature)
        self.view2 = view2
        self.domain = domain
        self.projector = Projector(feature_dim)

    def second_view(self, batch: Batch, ctx: StepContext, clean: CleanPass) -> torch.Tensor:
        source = clean.x if self.view2 == "paper" else batch.x
        return ctx.augment(source.clone())

    def auxiliary(self, model: nn.Module, batch: Batch, ctx: StepContext, clean: CleanPass):
        d = domain_labels(batch, self.domain, self.name)
        p1 = self.projector(clean.z)
        with torch.no_grad():
            p2 = self.projector(model.forward_features(self.second_view(batch, ctx, clean)))
        known = d >= 0
        feats = torch.cat([p1[known], p2[known]])
        loss_sg = supcon_loss(feats, torch.cat([d[known], d[known]]), self.temperature)
        return self.alpha * loss_sg, {"loss_sg": float(loss_sg.detach())}
