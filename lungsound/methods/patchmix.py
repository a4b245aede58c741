"""Patch-Mix and Patch-Mix contrastive learning.

[PMCL] Bae et al., "Patch-Mix Contrastive Learning with Audio Spectrogram Transformer on Respiratory
Sound Classification", Interspeech 2023, arXiv 2305.14032; docs/methods.md section 7.

Patch-Mix, inside the AST forward, on the patch tokens E (B, N, D) before the cls/dist tokens and position embeddings:

    lambda ~ Beta(a, a),  pi = random permutation of the batch,  num_mask = int(N (1 - lambda)),
    S = num_mask patch indices drawn at random, ONE set for the whole batch,
    E~[:, S] = E[pi][:, S],  E~[:, not S] = E[:, not S],       lambda' = 1 - num_mask / N   (the fraction kept).

Patch-Mix CE (``patchmix_ce``):  L = lambda' CE(W z~, y) + (1 - lambda') CE(W z~, y[pi]),  z~ = f(E~).

Patch-Mix CL (``patchmix_cl``, the paper's method):

    clean pass  z = f(aug(x)),  L_CE = CE(W z, y);   target v = stop-grad(z) (no projector on the target side);
    mixed pass  z~ with fresh lambda, pi, S;   u = h(z~),  h = Linear(D,D) - BatchNorm1d - ReLU - Linear(D,D);
    s_ij = <u_i / |u_i|, v_j / |v_j|> / tau   over all j of the batch,  tau = 0.06;
    M = lambda' I + (1 - lambda') P_pi,  P_pi[i, pi(i)] = 1   (a fixed point pi(i) = i puts 1 on the diagonal);
    L_CL = -(1/B) sum_i sum_j M_ij log softmax_j(s_ij);     L = L_CE + alpha L_CL,  alpha = 1.0.

The mixed pass reuses the clean pass's augmented input aug(x) (the reference feeds the same, once-augmented batch to
both passes): the mixture u_i is then built from exactly the inputs whose features v_i and v_pi(i) are its targets, so
M is the true share of each target's patches in u_i. Inference uses f and W only.

Both objectives use plain CE by default (``weighted_ce=False``): the reference scripts for Patch-Mix and Patch-Mix CL do
not pass ``--weighted_loss`` (only the CE baseline does), so the published runs are unweighted; ``weighted_ce=True``
uses the experiment's class weights for every CE term.

Random draws: lambda comes from a NumPy Beta sampler seeded by one draw of the torch generator (the global one when
none is given), pi and S from torch, so a seeded torch generator makes the whole mix reproducible.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from lungsound.errors import LungsoundError
from lungsound.methods.base import Batch, Objective, StepContext, register_objective
from lungsound.methods.compose import CleanPass, CleanPassObjective
from lungsound.methods.heads import Projector


def sample_beta(a: float, generator: torch.Generator | None = None) -> float:
    """lambda ~ Beta(a, a); ``a <= 0`` means no mixing (lambda = 1), as in the reference."""
    if a <= 0:
        return 1.0
    seed = int(torch.randint(0, 2**62, (1,), generator=generator).item())
    return float(np.random.default_rng(seed).beta(a, a))


def patch_mix(E: torch.Tensor, lam: float | None = None, alpha: float = 1.0,
              generator: torch.Generator | None = None) -> tuple[torch.Tensor, float, torch.Tensor, torch.Tensor]:
    """Mix the patch tokens ``E`` (B, N, D) across the batch; returns ``(E_mixed, lambda', perm, mask_idx)``.

    ``lam`` (drawn from Beta(alpha, alpha) when None) sets ``num_mask = int(N (1 - lam))``; the patches ``mask_idx``
    of row i come from row ``perm[i]``. ``E`` itself is not modified; gradients reach both sources.
    """
    if E.dim() != 3:
        raise LungsoundError(f"patch_mix expects patch tokens of shape (B, N, D), got {tuple(E.shape)}")
    if lam is None:
        lam = sample_beta(alpha, generator)
    if not 0.0 <= lam <= 1.0:
        raise LungsoundError(f"patch_mix lambda must lie in [0, 1], got {lam}")
    batch, n_patches = E.shape[0], E.shape[1]
    perm = torch.randperm(batch, generator=generator).to(E.device)
    num_mask = int(n_patches * (1.0 - lam))
    mask_idx = torch.randperm(n_patches, generator=generator)[:num_mask].to(E.device)
    replaced = torch.zeros(n_patches, dtype=torch.bool, device=E.device)
    replaced[mask_idx] = True
    mixed = torch.where(replaced[None, :, None], E[perm], E)
    return mixed, 1.0 - num_mask / n_patches, perm, mask_idx


def patchmix_contrastive_loss(mixed_proj: torch.Tensor, clean_feat: torch.Tensor, lam: float, perm: torch.Tensor,
                              temperature: float = 0.06) -> torch.Tensor:
    """L_CL = -(1/B) sum_ij M_ij log softmax_j(s_ij), s_ij = cos(u_i, v_j) / tau, M = lam I + (1 - lam) P_perm.

    ``mixed_proj`` is u = h(z~) (B, D'), ``clean_feat`` the clean features z (B, D'); no gradient flows into
    ``clean_feat`` (v = stop-grad(z)).
    """
    if mixed_proj.dim() != 2 or mixed_proj.shape != clean_feat.shape:
        raise LungsoundError(
            f"patchmix_contrastive_loss expects two (B, D) tensors of one shape, got {tuple(mixed_proj.shape)} "
            f"and {tuple(clean_feat.shape)}"
        )
    batch = mixed_proj.shape[0]
    u = F.normalize(mixed_proj.float(), dim=1)
    v = F.normalize(clean_feat.detach().float(), dim=1)
    log_prob = torch.log_softmax(u @ v.T / temperature, dim=1)
    target = lam * torch.eye(batch, device=u.device)
    target = target.index_put((torch.arange(batch, device=u.device), perm.to(u.device)),
                              torch.full((batch,), 1.0 - lam, device=u.device), accumulate=True)
    return -(target * log_prob).sum(dim=1).mean()


def mixed_features(model: nn.Module, x: torch.Tensor, mix_beta: float,
                   generator: torch.Generator | None = None) -> tuple[torch.Tensor, float, torch.Tensor]:
    """``z~ = f(x)`` with Patch-Mix applied to the patch tokens; returns ``(z~, lambda', perm)``."""
    draw: dict = {}

    def hook(tokens: torch.Tensor) -> torch.Tensor:
        mixed, lam, perm, _ = patch_mix(tokens, alpha=mix_beta, generator=generator)
        draw.update(lam=lam, perm=perm)
        return mixed

    z = model.forward_features(x, patch_hook=hook)
    if not draw:
        raise LungsoundError(f"{type(model).__name__}.forward_features never called the Patch-Mix hook")
    return z, draw["lam"], draw["perm"]


@register_objective("patchmix_ce", card="Patch-Mix with mixed-label cross-entropy", paper="PMCL")
class PatchMixCE(Objective):
    """L = lambda' CE(W z~, y) + (1 - lambda') CE(W z~, y[pi]) on the Patch-Mix of aug(x)."""

    name = "patchmix_ce"

    def __init__(self, feature_dim: int, num_classes: int, class_weights: torch.Tensor | None = None,
                 mix_beta: float = 1.0, weighted_ce: bool = False):
        super().__init__(feature_dim, num_classes, class_weights=class_weights)
        self.mix_beta = float(mix_beta)
        self.weighted_ce = bool(weighted_ce)

    def forward(self, model: nn.Module, batch: Batch, ctx: StepContext):
        z, lam, perm = mixed_features(model, ctx.augment(batch.x.clone()), self.mix_beta)
        logits = model.forward_head(ctx.represent(z, batch.label))
        loss = (lam * self.cross_entropy(logits, batch.label, weighted=self.weighted_ce)
                + (1.0 - lam) * self.cross_entropy(logits, batch.label[perm], weighted=self.weighted_ce))
        return loss, {"loss_ce": float(loss.detach()), "lam": lam}


@register_objective("patchmix_cl", card="Patch-Mix contrastive learning", paper="PMCL")
class PatchMixCL(CleanPassObjective):
    """L = CE(W z, y) + alpha L_CL(h(z~), stop-grad(z)); see the module docstring."""

    name = "patchmix_cl"

    def __init__(self, feature_dim: int, num_classes: int, class_weights: torch.Tensor | None = None,
                 alpha: float = 1.0, temperature: float = 0.06, mix_beta: float = 1.0, weighted_ce: bool = False):
        super().__init__(feature_dim, num_classes, class_weights=class_weights, weighted_ce=weighted_ce)
        if temperature <= 0:
            raise LungsoundError(f"method 'patchmix_cl': temperature must be positive, got {temperature}")
        self.alpha = float(alpha)
        self.temperature = float(temperature)
        self.mix_beta = float(mix_beta)
        self.projector = Projector(feature_dim)

    def auxiliary(self, model: nn.Module, batch: Batch, ctx: StepContext, clean: CleanPass):
        z_mixed, lam, perm = mixed_features(model, clean.x, self.mix_beta)
        loss_cl = patchmix_contrastive_loss(self.projector(z_mixed), clean.z, lam, perm, self.temperature)
        return self.alpha * loss_cl, {"loss_cl": float(loss_cl.detach()), "lam": lam}
