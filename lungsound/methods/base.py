"""The seam between the trainer and a method: an `Objective` is the loss (plus any extra heads) of one training step.

The trainer owns the loop, the optimiser, the schedule, checkpoints and evaluation; it calls
`loss, logs = objective(model, batch, ctx)` once per step. An objective is an `nn.Module`, so the extra heads a method adds
(a projector, a domain discriminator) are trained with the model, blended by the moving-average update with it, and saved
with it. Inference never uses them: the model's own `forward` is the classifier.

`batch` is a `Batch` already on the training device; `ctx.augment` is the experiment's input augmentation (SpecAugment in
the chosen semantics, or the identity), which the objective applies to the views it builds; `ctx.progress` in [0, 1] is the
fraction of training done (for schedules such as DANN's gradient-reversal weight). `ctx.represent(z, labels)` is the
experiment's representation augmentation (RepAugment [REPAUG]: Rep-Mask and/or Rep-Gen, or the identity): every
objective applies it to the pooled representation z of its classification pass, between `forward_features` and
`forward_head`, so representation augmentation composes with every method without a copy of any.

Objectives are registered by name on `OBJECTIVES` (`register_objective`), each with what it is for a model card
(`ObjectiveSpec`): the words a card uses for it, the key of its paper in `lungsound.sharing.references.PAPERS`, and
whether it uses a metadata domain; `lungsound.sharing` reads these, never the objective's name.
"""

from __future__ import annotations

import importlib
import inspect
import pkgutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch import nn

from lungsound.errors import LungsoundError
from lungsound.registry import Registry


@dataclass
class Batch:
    x: torch.Tensor  # (B, T, F) fbank or (B, L) waveform
    label: torch.Tensor  # (B,) class index
    device: torch.Tensor  # (B,) stethoscope index
    domain: torch.Tensor | None = None  # (B,) another metadata domain when the experiment asks for one; -1 unknown
    index: torch.Tensor | None = None  # (B,) dataset item index
    meta: list | None = None  # the B items' metadata records (lungsound.data.sample_meta.SampleMeta), in batch order


@dataclass
class StepContext:
    augment: Callable[[torch.Tensor], torch.Tensor] = lambda x: x
    represent: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] = lambda z, labels: z
    progress: float = 0.0
    epoch: int = 0
    step: int = 0
    extra: dict[str, Any] = field(default_factory=dict)


class Objective(nn.Module):
    """Base class. Subclasses implement `forward(model, batch, ctx) -> (loss, logs)`; `logs` maps names to floats."""

    name = "objective"

    def __init__(self, feature_dim: int, num_classes: int, class_weights: torch.Tensor | None = None):
        super().__init__()
        self.feature_dim = feature_dim
        self.num_classes = num_classes
        self.register_buffer("class_weights", class_weights if class_weights is not None else None, persistent=False)

    def cross_entropy(self, logits: torch.Tensor, target: torch.Tensor, weighted: bool = True) -> torch.Tensor:
        """CE, weighted by the experiment's class weights when it asks for them and `weighted` is True."""
        weight = self.class_weights if weighted else None
        return F.cross_entropy(logits.float(), target, weight=None if weight is None else weight.to(logits.device))


class CrossEntropy(Objective):
    """Plain fine-tuning: L = CE(W rep(f(aug(x))), y), class-weighted when configured (the papers' CE baseline).

    ``label_smoothing`` eps (``method.params.label_smoothing``, 0 by default; 0.1 in the AST + SAM recipe of
    docs/methods.md section 14) trains against the target (1 - eps) one_hot(y) + eps / K (Szegedy et al., CVPR 2016),
    as ``torch.nn.functional.cross_entropy(label_smoothing=eps)``."""

    name = "ce"

    def __init__(self, feature_dim: int, num_classes: int, class_weights: torch.Tensor | None = None,
                 label_smoothing: float = 0.0):
        super().__init__(feature_dim, num_classes, class_weights)
        if isinstance(label_smoothing, bool) or not isinstance(label_smoothing, (int, float)) \
                or not 0.0 <= label_smoothing < 1.0:
            raise LungsoundError(f"method.params.label_smoothing must be a number in [0, 1), got {label_smoothing!r}")
        self.label_smoothing = float(label_smoothing)

    def forward(self, model: nn.Module, batch: Batch, ctx: StepContext):
        logits = model.forward_head(ctx.represent(model.forward_features(ctx.augment(batch.x)), batch.label))
        weight = None if self.class_weights is None else self.class_weights.to(logits.device)
        loss = F.cross_entropy(logits.float(), batch.label, weight=weight, label_smoothing=self.label_smoothing)
        return loss, {"loss_ce": float(loss.detach())}


@dataclass(frozen=True)
class ObjectiveSpec:
    """What a registered objective is, read by model cards and their citations instead of its name.

    ``card``: the words a model card uses for it; ``paper``: the key of the paper it comes from in
    ``lungsound.sharing.references.PAPERS`` (None for plain fine-tuning and compositions); ``uses_domain``: whether it
    reads a metadata domain (the stethoscope ``batch.device``, or ``batch.domain``); ``cited_for``: what its paper is
    cited for (default ``card``); ``fine_tuning``: plain fine-tuning, which a card credits to the paper whose recipe it
    follows for the model's backbone (``lungsound.sharing.references.RECIPES``); ``configured(spec, params)``: the
    spec as the objective's params make it (DAT on the real/generated domain is [AFT]'s adversarial fine-tuning);
    ``parts(params)``: the ``(name, params)`` of a composition's parts.
    """

    name: str
    factory: Callable[..., Objective]
    card: str
    paper: str | None = None
    uses_domain: bool = False
    cited_for: str | None = None
    fine_tuning: bool = False
    configured: Callable[["ObjectiveSpec", dict], "ObjectiveSpec"] | None = None
    parts: Callable[[dict], list[tuple[str, dict]]] | None = None

    def __post_init__(self):
        if not isinstance(self.card, str) or not self.card.strip():
            raise ValueError(f"objective {self.name!r}: card words must be a non-empty string, got {self.card!r}")

    def as_configured(self, params: dict) -> "ObjectiveSpec":
        """The spec of this objective run with ``params`` (itself unless a hook says otherwise)."""
        return self if self.configured is None else self.configured(self, params)

    @property
    def reason(self) -> str:
        """What its paper is cited for on a model card."""
        return self.cited_for or self.card


OBJECTIVES: Registry[ObjectiveSpec] = Registry("method")  # the config's method.name


def register_objective(name: str, *, card: str, paper: str | None = None, uses_domain: bool = False,
                       cited_for: str | None = None, fine_tuning: bool = False,
                       configured: Callable[[ObjectiveSpec, dict], ObjectiveSpec] | None = None,
                       parts: Callable[[dict], list[tuple[str, dict]]] | None = None):
    """Decorator registering an objective class (or factory) under ``name`` with what it is (:class:`ObjectiveSpec`);
    a name can be registered once."""

    def decorate(cls):
        OBJECTIVES.add(name, ObjectiveSpec(name, cls, card=card, paper=paper, uses_domain=uses_domain,
                                           cited_for=cited_for, fine_tuning=fine_tuning, configured=configured,
                                           parts=parts))
        return cls

    return decorate


register_objective("ce", card="cross-entropy fine-tuning", fine_tuning=True)(CrossEntropy)


def list_objectives() -> list[str]:
    _import_methods()
    return OBJECTIVES.names()


def objective_spec(name: str) -> ObjectiveSpec:
    """The registration of ``name``; an unknown name is a one-line error listing the known ones."""
    _import_methods()
    return OBJECTIVES.get(name)


def create_objective(name: str, feature_dim: int, num_classes: int, class_weights: torch.Tensor | None = None,
                     **params) -> Objective:
    """Build the objective registered as `name` with its method parameters (e.g. alpha, temperature)."""
    factory = objective_spec(name).factory
    # Bind first: a keyword the constructor does not take (or a missing one) is the user's mistake and gets one line;
    # a TypeError raised inside the constructor's body is a bug and propagates with its traceback.
    try:
        signature = inspect.signature(factory)
    except (TypeError, ValueError):  # no introspectable signature: nothing to check before the call
        signature = None
    if signature is not None:
        try:
            signature.bind(feature_dim, num_classes, class_weights=class_weights, **params)
        except TypeError as exc:
            raise LungsoundError(f"method {name!r}: bad parameters {params}: {exc}") from None
    return factory(feature_dim, num_classes, class_weights=class_weights, **params)


def class_weights_from_counts(counts) -> torch.Tensor:
    """The reference code's CE weights: w_c = (N / n_c) / sum_k (N / n_k), i.e. inverse frequency summing to 1.

    (With PyTorch's weighted mean reduction only the ratios matter.) Classes with no samples get weight 0.
    """
    counts = torch.as_tensor(counts, dtype=torch.float64)
    inverse = torch.where(counts > 0, counts.sum() / counts.clamp(min=1), torch.zeros_like(counts))
    return (inverse / inverse.sum()).float()


def _import_methods() -> None:
    """Importing the method modules registers their objectives: every module of this folder (a new method is one new
    file), found by name, so this module imports none of them (they import it)."""
    for info in pkgutil.iter_modules([str(Path(__file__).parent)]):
        if info.name != "base":
            importlib.import_module(f"{__package__}.{info.name}")
