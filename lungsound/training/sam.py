"""Sharpness-aware minimisation around any base optimiser (`train.optimizer: sam`, docs/methods.md section 14).

SAM: P. Foret, A. Kleiner, H. Mobahi, B. Neyshabur, "Sharpness-Aware Minimization for Efficiently Improving
Generalization", ICLR 2021. ASAM (`train.sam_adaptive: true`): J. Kwon, J. Kim, H. Park, I. K. Choi, "ASAM: Adaptive
Sharpness-Aware Minimization for Scale-Invariant Learning of Deep Neural Networks", ICML 2021.

One SAM step from weights w, loss L and radius rho (`train.sam_rho`, 0.05) takes two forward-backward passes:

    g     = grad L(w)                                       first pass
    e     = rho * g / ||g||                                 SAM: the ascent to the worst point of the rho-ball
    e     = rho * T_w^2 g / ||T_w g||,  T_w = diag(|w|)     ASAM: the ball scaled elementwise by |w|
    g_sam = grad L(w + e)                                   second pass, from the perturbed weights
    w    <- base_step(w, g_sam)                             weights restored to w, then the base optimiser's step

||.|| is the 2-norm over every trainable tensor together (one global norm, computed in float32; e = 0 when the norm is
0). Kwon et al. add an optional offset eta to T_w; it is not used here (eta = 0, our choice). The base optimiser (Adam,
AdamW or SGD, `train.sam_base`) sees only g_sam, so its moments and weight decay are those of a plain step taken with
the gradient of the perturbed point.

How the pieces of the trainer fit (`sam_update`):
- Mixed precision: the first pass's gradients are scaled by the GradScaler's factor S; the ascent uses g / S (unscaled
  before the norm). Should g hold an inf or NaN, the ascent is skipped (e = 0) and the second pass is the ordinary
  step, whose own inf/NaN check and scale update the scaler does as always.
- Gradient accumulation (`train.grad_accum` = k): each pass runs over the same k micro-batches, the loss of each
  divided by k, so g and g_sam are the gradients of the whole batch's mean loss.
- Data parallelism (torchrun): `sync()` averages the gradients over processes after each pass (before the norm), so
  ||g|| is the norm of the all-process gradient, e is the same on every process and the weights stay identical.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch

from lungsound.training.accumulate import backward_chunks

EPS = 1e-12  # added to ||g|| (the authors' and Foret et al.'s guard against dividing by zero)


class SAM:
    """The SAM (or ASAM) update around ``base``, a ``torch.optim.Optimizer`` over the trainable weights.

    It shares the base's ``param_groups`` (so the learning-rate schedule and the gradient all-reduce see the same
    groups) and its ``state_dict`` is the base's (a checkpoint holds the base's moments; the ascent keeps no state
    between steps). Call :meth:`ascend` after the first pass's backward and :meth:`descend` after the second's.
    """

    def __init__(self, base: torch.optim.Optimizer, rho: float = 0.05, adaptive: bool = False):
        if not rho > 0:
            raise ValueError(f"SAM rho must be > 0, got {rho}")
        self.base, self.rho, self.adaptive = base, float(rho), bool(adaptive)
        self._ascent: list[tuple[torch.Tensor, torch.Tensor]] = []  # (weight, e) of the pending step

    @property
    def param_groups(self) -> list[dict[str, Any]]:
        return self.base.param_groups

    def params(self) -> list[torch.Tensor]:
        return [p for group in self.param_groups for p in group["params"] if p.grad is not None]

    def zero_grad(self, set_to_none: bool = True) -> None:
        self.base.zero_grad(set_to_none=set_to_none)

    def state_dict(self) -> dict:
        return self.base.state_dict()

    def load_state_dict(self, state: dict) -> None:
        self.base.load_state_dict(state)

    @torch.no_grad()
    def ascent(self, grad_scale: float = 1.0) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """The perturbation e of every weight with a gradient, from the gradients divided by ``grad_scale``; an
        empty list when they are not finite (the step then goes ahead without an ascent)."""
        params = self.params()
        if not params:
            return []
        grads = [p.grad.detach().float() / grad_scale for p in params]
        scaled = [g * p.detach().float().abs() for g, p in zip(grads, params)] if self.adaptive else grads
        norm = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(s) for s in scaled]))
        if not torch.isfinite(norm):
            return []
        factor = self.rho / (norm + EPS)
        if self.adaptive:  # T_w^2 g = |w| (|w| g)
            return [(p, (s * p.detach().float().abs() * factor).to(p.dtype)) for p, s in zip(params, scaled)]
        return [(p, (g * factor).to(p.dtype)) for p, g in zip(params, grads)]

    @torch.no_grad()
    def ascend(self, grad_scale: float = 1.0) -> None:
        """Move to w + e (the first pass's gradients must be in ``.grad``) and clear the gradients."""
        if self._ascent:
            raise RuntimeError("SAM.ascend() called twice without descend()")
        self._ascent = self.ascent(grad_scale)
        for p, e in self._ascent:
            p.add_(e)
        self.zero_grad(set_to_none=True)

    @torch.no_grad()
    def restore(self) -> None:
        """Back to w (the second pass's gradients stay in ``.grad``)."""
        for p, e in self._ascent:
            p.sub_(e)
        self._ascent = []

    def descend(self, scaler: torch.amp.GradScaler | None = None) -> None:
        """Restore w and take the base optimiser's step with the gradient of the perturbed point."""
        self.restore()
        if scaler is None:
            self.base.step()
        else:
            scaler.step(self.base)
            scaler.update()


def _scale_of(scaler: torch.amp.GradScaler | None) -> float:
    return float(scaler.get_scale()) if scaler is not None and scaler.is_enabled() else 1.0


def sam_update(sam: SAM, loss_of: Callable[[Any], tuple[torch.Tensor, dict]], chunks: Sequence[Any],
               scaler: torch.amp.GradScaler | None = None,
               sync: Callable[[], None] = lambda: None) -> tuple[float, dict[str, float]]:
    """One SAM step over the micro-batches ``chunks`` (one for no accumulation): ``loss_of(chunk)`` gives the loss of
    a micro-batch (and its logs) at the current weights; ``sync()`` averages the gradients over processes.

    Returns the first pass's loss (the loss at w, the one a plain step would report) and logs, averaged over the
    chunks."""
    sam.zero_grad(set_to_none=True)
    loss, logs = backward_chunks(loss_of, chunks, scaler)
    sync()
    sam.ascend(_scale_of(scaler))
    backward_chunks(loss_of, chunks, scaler)
    sync()
    sam.descend(scaler)
    return loss, logs
