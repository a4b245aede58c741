"""Spectrogram mixup: the fine-tuning objective of the EfficientAT recipe ([EFFAT] Schmid, Koutini, Widmer, ICASSP
2023; docs/methods.md section 12), mixup of [MIXUP] Zhang, Cisse, Dauphin, Lopez-Paz, ICLR 2018 (arXiv 1710.09412)
on the log-mel spectrogram.

For a batch of B spectrograms ``s_i`` with labels ``y_i``, a random permutation ``pi`` of the batch and, per sample,
``l_i ~ Beta(alpha, alpha)`` folded to ``lambda_i = max(l_i, 1 - l_i)`` (so each mixed sample is mostly its own):

    s'_i = lambda_i s_i + (1 - lambda_i) s_pi(i),
    L = (1 / B) sum_i [lambda_i CE(W rep(f(s'_i)), y_i) + (1 - lambda_i) CE(W rep(f(s'_i)), y_pi(i))].

``alpha`` is 0.3 in the upstream fine-tuning recipe. Where the spectrogram is depends on the model: a model with a
front end of its own (EfficientAT: waveform in) mixes its log-mel through its ``spectrogram_hook``; an fbank model's
input is the spectrogram itself and is mixed as it comes (after ``ctx.augment``). A waveform model without a spectrogram
(the speech models) is refused in one line: mixing waveforms would be another method. The draws use the global torch
generator, which the trainer seeds per (seed, epoch), so a resumed run draws the same mixes. The representation
augmentation ``ctx.represent`` sees the sample's own label ``y_i``. CE is unweighted unless ``weighted_ce``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from lungsound.errors import LungsoundError
from lungsound.methods.base import Batch, Objective, StepContext, register_objective


def mixup_draw(batch_size: int, alpha: float, device: torch.device | str = "cpu") -> tuple[torch.Tensor, torch.Tensor]:
    """``(pi, lambda)``: a permutation of the batch and per-sample weights ``max(l, 1 - l)``, ``l ~ Beta(alpha, alpha)``."""
    l = torch.distributions.Beta(alpha, alpha).sample((batch_size,))
    return torch.randperm(batch_size).to(device), torch.maximum(l, 1 - l).to(device)


def mix(s: torch.Tensor, perm: torch.Tensor, lam: torch.Tensor) -> torch.Tensor:
    """``lambda_i s_i + (1 - lambda_i) s_pi(i)`` over the first axis, whatever the other axes are."""
    w = lam.reshape(-1, *([1] * (s.dim() - 1))).to(s.dtype)
    return w * s + (1 - w) * s[perm]


@register_objective("mixup", card="spectrogram mixup fine-tuning", paper="MIXUP", cited_for="spectrogram mixup",
                    fine_tuning=True)
class SpectrogramMixup(Objective):
    """Cross-entropy on mixed spectrograms with the two labels' CE mixed by the same weights (see the module
    docstring)."""

    name = "mixup"

    def __init__(self, feature_dim: int, num_classes: int, class_weights: torch.Tensor | None = None,
                 alpha: float = 0.3, weighted_ce: bool = False):
        super().__init__(feature_dim, num_classes, class_weights=class_weights)
        if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not alpha > 0:
            raise LungsoundError(f"method 'mixup': alpha must be a positive number, got {alpha!r}")
        self.alpha, self.weighted_ce = float(alpha), bool(weighted_ce)

    def forward(self, model: nn.Module, batch: Batch, ctx: StepContext):
        x = ctx.augment(batch.x.clone())
        perm, lam = mixup_draw(len(x), self.alpha, x.device)
        if getattr(model, "front_end", None) is not None:
            z = model.forward_features(x, spectrogram_hook=lambda s: mix(s, perm, lam))
        elif x.dim() == 3:  # an fbank (B, T, F): the input is the spectrogram
            z = model.forward_features(mix(x, perm, lam))
        else:
            raise LungsoundError(f"method 'mixup' mixes spectrograms, but {type(model).__name__} takes a waveform "
                                 "without a spectrogram of its own (use an fbank model or EfficientAT)")
        logits = model.forward_head(ctx.represent(z, batch.label)).float()
        weight = self.class_weights.to(logits.device) if self.weighted_ce and self.class_weights is not None else None
        own = F.cross_entropy(logits, batch.label, weight=weight, reduction="none")
        other = F.cross_entropy(logits, batch.label[perm], weight=weight, reduction="none")
        loss = (lam * own + (1 - lam) * other).mean()
        return loss, {"loss_mixup": float(loss.detach()), "mixup_lambda": float(lam.mean())}
