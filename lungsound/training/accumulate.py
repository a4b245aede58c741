"""Gradient accumulation (`train.grad_accum`) and the replayed input augmentation of a step's passes.

A batch of `train.batch_size` items is split into k = `train.grad_accum` equal micro-batches (`split_batch`); each
micro-batch's loss is divided by k before its backward pass (`backward_chunks`), so the accumulated gradient is that
of the whole batch's mean loss and the step, its size and the number of steps per epoch are the same as with k = 1;
only the memory of one forward pass shrinks. This is exact for objectives whose loss is a mean over items; objectives
that look across the batch (Patch-Mix's permutation, the contrastive losses, BatchNorm in a projector) see micro-batches
instead, which changes them (not stated in any paper, our choice: leave k = 1 for those).

`Replay` makes every pass over a micro-batch see the same augmented input: SAM (lungsound.training.sam) takes two
forward-backward passes over one micro-batch, and the gradient at w + e must be that of the same augmented batch as the
gradient at w. The i-th augmentation call of an objective call returns, in later calls, what it returned the first
time.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import Any

import torch


def split_batch(batch, k: int) -> list:
    """`batch` (a dataclass of (B, ...) tensors, lists and Nones, such as lungsound.methods.Batch) as `k` consecutive
    micro-batches of B / k items; [batch] itself for k = 1."""
    if k == 1:
        return [batch]
    size = batch.x.shape[0]
    if size % k:
        raise ValueError(f"a batch of {size} items does not split into {k} equal micro-batches")
    step = size // k

    def part(value, i: int):
        return None if value is None else value[i * step:(i + 1) * step]

    return [dataclasses.replace(batch, **{f.name: part(getattr(batch, f.name), i) for f in dataclasses.fields(batch)})
            for i in range(k)]


class Replay:
    """Wrap an augmentation so that the calls of every later pass repeat the first pass's outputs in order; call
    `rewind()` at the start of each pass."""

    def __init__(self, augment: Callable[[torch.Tensor], torch.Tensor]):
        self.augment, self.outputs, self.calls = augment, [], 0

    def rewind(self) -> None:
        self.calls = 0

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if self.calls == len(self.outputs):
            self.outputs.append(self.augment(x))
        out = self.outputs[self.calls]
        self.calls += 1
        return out


def backward_chunks(loss_of: Callable[[Any], tuple[torch.Tensor, dict]], chunks: Sequence[Any],
                    scaler: torch.amp.GradScaler | None = None) -> tuple[float, dict[str, float]]:
    """Backward of every micro-batch's loss / k (scaled by `scaler` when given); gradients add up in `.grad`. Returns
    the mean loss and the mean of each log over the chunks."""
    total, logs = 0.0, {}
    for chunk in chunks:
        loss, chunk_logs = loss_of(chunk)
        part = loss / len(chunks)
        (scaler.scale(part) if scaler is not None else part).backward()
        total += float(loss.detach()) / len(chunks)
        for key, value in chunk_logs.items():
            logs[key] = logs.get(key, 0.0) + value / len(chunks)
    return total, logs
