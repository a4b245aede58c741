"""Objectives made of fine-tuning on one augmented view plus an auxiliary term, and their composition.

Patch-Mix CL ([PMCL] Bae et al., Interspeech 2023, arXiv 2305.14032), SG-SCL and the DAT baseline ([SGSCL] Kim et al.,
ICASSP 2024, arXiv 2312.09603) and adversarial fine-tuning ([AFT] Kim et al., 2023, arXiv 2311.06480) all have the form

    x1 = aug(x),  z = f(x1),  L = CE(W z, y) + L_aux(z, x1, batch)

(docs/methods.md sections 7, 8, 10): a *clean pass* through the augmented input, its cross-entropy, and a method-specific
term that reuses ``z`` (as a contrastive target, an anchor view, or the input of a domain discriminator) and may run
further passes. :class:`CleanPassObjective` is that shape; a method implements only
:meth:`~CleanPassObjective.auxiliary`, returning ``alpha * L_aux`` and its logs.

Because the clean pass is shared, methods combine by summing their auxiliary terms over ONE clean pass:

    L = CE(W z, y) + sum_k L_aux_k(z, x1, batch)

which is the ``compose`` objective, e.g. ``create_objective("compose", D, C, parts=["patchmix_cl", "sgscl"])``
(Patch-Mix CL with the device-guided SupCon term). A part is a registered name or ``{"name": ..., **params}``. The
composition's own ``weighted_ce`` decides the shared CE; the parts' ``weighted_ce`` is not used.

CE weighting: ``weighted_ce=False`` (the default of every method here) means plain CE even when the experiment
configured class weights; ``True`` uses the experiment's class weights. The reference scripts pass ``--weighted_loss``
only to the CE baseline, never to Patch-Mix, Patch-Mix CL, DAT or SG-SCL, and docs/methods.md section 7 states L_CE
unweighted for Patch-Mix CL.

The clean pass augments a copy of ``batch.x``: with the paper's per-batch SpecAugment, which writes in place, the
batch stays unmasked (SG-SCL's ``view2: clean`` needs it) and a later in-place augmentation cannot modify a tensor the
clean pass saved for backward.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from lungsound.errors import LungsoundError
from lungsound.methods.base import Batch, Objective, StepContext, create_objective, register_objective


@dataclass
class CleanPass:
    """What the clean pass computed: its augmented input ``x``, ``z = f(x)`` (with gradient), ``logits = W z``."""

    x: torch.Tensor
    z: torch.Tensor
    logits: torch.Tensor


class CleanPassObjective(Objective):
    """``L = CE(W f(aug(x)), y) + auxiliary``; subclasses implement :meth:`auxiliary`."""

    def __init__(self, feature_dim: int, num_classes: int, class_weights: torch.Tensor | None = None,
                 weighted_ce: bool = False):
        super().__init__(feature_dim, num_classes, class_weights=class_weights)
        self.weighted_ce = bool(weighted_ce)

    def clean_pass(self, model: nn.Module, batch: Batch, ctx: StepContext) -> CleanPass:
        x = ctx.augment(batch.x.clone())
        z = model.forward_features(x)
        return CleanPass(x=x, z=z, logits=model.forward_head(ctx.represent(z, batch.label)))

    def auxiliary(self, model: nn.Module, batch: Batch, ctx: StepContext,
                  clean: CleanPass) -> tuple[torch.Tensor, dict[str, float]]:
        """The method's term, already multiplied by its weight alpha, and its logs."""
        raise NotImplementedError

    def forward(self, model: nn.Module, batch: Batch, ctx: StepContext):
        clean = self.clean_pass(model, batch, ctx)
        loss_ce = self.cross_entropy(clean.logits, batch.label, weighted=self.weighted_ce)
        extra, logs = self.auxiliary(model, batch, ctx, clean)
        return loss_ce + extra, {"loss_ce": float(loss_ce.detach()), **logs}


def composed_parts(params: dict) -> list[tuple[str, dict]]:
    """``(name, params)`` of each well-formed part in a composition's ``params`` (what a model card describes; a
    malformed part is the constructor's to refuse)."""
    parts = params.get("parts")
    if not isinstance(parts, (list, tuple)):
        return []
    out = []
    for spec in parts:
        if isinstance(spec, str) or (isinstance(spec, dict) and isinstance(spec.get("name"), str)):
            out.append(_part_spec(spec))
    return out


# A composition reads the batch's domain when one of its parts does, so it is declared as using one.
@register_objective("compose", card="a sum of several methods' auxiliary terms", uses_domain=True,
                    parts=composed_parts)
class ComposedObjective(CleanPassObjective):
    """The sum of several clean-pass methods' auxiliary terms over one shared clean pass (see the module docstring)."""

    name = "compose"

    def __init__(self, feature_dim: int, num_classes: int, class_weights: torch.Tensor | None = None,
                 parts: list[str | dict[str, Any]] = (), weighted_ce: bool = False):
        super().__init__(feature_dim, num_classes, class_weights=class_weights, weighted_ce=weighted_ce)
        if isinstance(parts, (str, dict)) or not parts:
            raise LungsoundError(f"method 'compose' needs a non-empty list of parts, got {parts!r}")
        built = []
        for spec in parts:
            name, params = _part_spec(spec)
            part = create_objective(name, feature_dim, num_classes, class_weights=class_weights, **params)
            if not isinstance(part, CleanPassObjective):
                raise LungsoundError(
                    f"method 'compose': part {name!r} does not share a clean pass, so it cannot be composed"
                )
            built.append(part)
        self.parts = nn.ModuleList(built)
        self.part_names = [_part_spec(spec)[0] for spec in parts]

    def auxiliary(self, model, batch, ctx, clean):
        total = clean.z.new_zeros(())
        logs: dict[str, float] = {}
        for name, part in zip(self.part_names, self.parts):
            extra, part_logs = part.auxiliary(model, batch, ctx, clean)
            total = total + extra
            for key, value in part_logs.items():
                logs[key if key not in logs else f"{name}.{key}"] = value
        return total, logs


def _part_spec(spec: str | dict[str, Any]) -> tuple[str, dict[str, Any]]:
    if isinstance(spec, str):
        return spec, {}
    if isinstance(spec, dict) and isinstance(spec.get("name"), str):
        return spec["name"], {k: v for k, v in spec.items() if k != "name"}
    raise LungsoundError(f"method 'compose': a part is a method name or {{'name': ..., params}}, got {spec!r}")
