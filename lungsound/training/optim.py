"""Optimiser pieces of the AST papers' recipe (docs/methods.md section 5).

Cosine schedule, set once at the start of epoch e = 1..E:
    lr_e = eta_min + (lr - eta_min) * (1 + cos(pi * e / E)) / 2,   eta_min = lr * 1e-3.
Moving-average update with beta = 0.5 after every optimiser step: every floating-point state_dict entry (weights and
BatchNorm running statistics of backbone, classifier and any projector/domain head) becomes
    theta <- beta * theta_before_step + (1 - beta) * theta_after_step;
integer buffers (BatchNorm's num_batches_tracked) keep the new value, optimiser moments are untouched.
The optimiser itself comes from `build_optimizer` (`train.optimizer`: adam, the papers'; adamw; sgd; or sam, which wraps
`train.sam_base` in sharpness-aware minimisation, lungsound.training.sam).

Exponential warm-up then linear ramp-down (`train.schedule: warmup_linear`), the EfficientAT fine-tuning schedule
([EFFAT], docs/methods.md section 12; the warm-up is the exponential ramp-up of Laine & Aila, "Temporal Ensembling for
Semi-Supervised Learning", ICLR 2017, arXiv 1610.02242), set once at the start of epoch e = 1..E with i = e - 1 (the
upstream's 0-based epoch), W warm-up and R ramp-down epochs and final ratio r:
    up(i)   = exp(-5 (1 - max(i, 0.5) / W)^2) for i < W, else 1;
    down(i) = 1 for i <= W;  r + (1 - r) (R - i + W) / R for W < i < W + R;  r after;
    lr_e = lr * up(i) * down(i).
With W = 10, R = 65, r = 0.01: 0.011 lr in epoch 1, 0.951 lr in epoch 10, lr in epoch 11, 0.985 lr in epoch 12,
0.025 lr in epoch 75 and 0.01 lr from epoch 76 on.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch
from torch import nn

from lungsound.config import BASE_OPTIMIZERS
from lungsound.training.sam import SAM


def _base_optimizer(name: str, params: list, train) -> torch.optim.Optimizer:
    if name == "adam":
        return torch.optim.Adam(params, lr=train.lr, weight_decay=train.weight_decay)
    if name == "adamw":  # decoupled weight decay (Loshchilov & Hutter, ICLR 2019)
        return torch.optim.AdamW(params, lr=train.lr, weight_decay=train.weight_decay)
    if name == "sgd":
        return torch.optim.SGD(params, lr=train.lr, momentum=train.momentum, weight_decay=train.weight_decay)
    raise ValueError(f"unknown base optimiser {name!r} (one of {', '.join(BASE_OPTIMIZERS)})")


def build_optimizer(params: Iterable[torch.Tensor], train) -> torch.optim.Optimizer | SAM:
    """The optimiser of `train` (a `TrainConfig`) over `params`: `train.optimizer` itself, or for `sam` the SAM update
    (radius `train.sam_rho`, ASAM when `train.sam_adaptive`) around `train.sam_base`."""
    params = list(params)
    if train.optimizer == "sam":
        return SAM(_base_optimizer(train.sam_base, params, train), rho=train.sam_rho, adaptive=train.sam_adaptive)
    return _base_optimizer(train.optimizer, params, train)


def cosine_lr(epoch: int, epochs: int, lr: float, eta_min_ratio: float = 1e-3) -> float:
    """Learning rate for 1-based `epoch` of `epochs`."""
    eta_min = lr * eta_min_ratio
    return eta_min + (lr - eta_min) * (1 + math.cos(math.pi * epoch / epochs)) / 2


def warmup_linear_lr(epoch: int, lr: float, warmup_epochs: int = 10, rampdown_epochs: int = 65,
                     final_ratio: float = 0.01) -> float:
    """Learning rate for 1-based `epoch` under the exponential warm-up and linear ramp-down (module docstring)."""
    i = epoch - 1
    up = math.exp(-5.0 * (1.0 - max(i, 0.5) / warmup_epochs) ** 2) if i < warmup_epochs else 1.0
    if i <= warmup_epochs:
        down = 1.0
    elif i - warmup_epochs < rampdown_epochs:
        down = final_ratio + (1.0 - final_ratio) * (rampdown_epochs - i + warmup_epochs) / rampdown_epochs
    else:
        down = final_ratio
    return lr * up * down


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = lr


class MovingAverageBlend:
    """Snapshot the state before a step with `snapshot()`, blend after the step with `blend()`."""

    def __init__(self, modules: Iterable[nn.Module], beta: float = 0.5):
        if not 0.0 <= beta < 1.0:
            raise ValueError(f"beta must be in [0, 1), got {beta}")
        self.beta = beta
        self.tensors = [t for m in modules for t in m.state_dict(keep_vars=True).values()
                        if torch.is_floating_point(t)]
        self._before: list[torch.Tensor] | None = None

    @torch.no_grad()
    def snapshot(self) -> None:
        self._before = [t.detach().clone() for t in self.tensors]

    @torch.no_grad()
    def blend(self) -> None:
        if self._before is None:
            raise RuntimeError("blend() called without snapshot()")
        for t, old in zip(self.tensors, self._before):
            t.data.mul_(1 - self.beta).add_(old, alpha=self.beta)
        self._before = None
