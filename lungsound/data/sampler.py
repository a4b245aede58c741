"""Class-balanced oversampling: every epoch draws the same number of items from every class.

The second Rep-Gen setting of [REPAUG] (Kim et al., EMBC 2024, arXiv 2405.02996; methods.md section 9) oversamples every
class and adds noise to every representation. An epoch of :class:`BalancedOversampler` is

    for each class c:  per_class indices drawn uniformly with replacement from the items labelled c,
    all K * per_class indices shuffled together,

with the random draws of epoch ``e`` made by a generator seeded with ``seed + e`` (so every process, and a resumed run,
draws the same list). Under data parallelism the list is padded by repeating its head up to a multiple of ``world_size``
and rank ``r`` takes positions ``r, r + world_size, ...`` (the layout of ``torch.utils.data.DistributedSampler``), so the
ranks' shares are disjoint slices of the same list with equal lengths.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import torch
from torch.utils.data import Sampler

from lungsound.data.labels import CLASSES
from lungsound.errors import LungsoundError


class BalancedOversampler(Sampler[int]):
    """Exactly ``per_class`` dataset indices of every class per epoch, deterministic per ``(seed, epoch)``, sharded.

    ``labels[i]`` is the class index of dataset item ``i``, in ``0 .. num_classes - 1`` (``num_classes`` defaults to the
    four ICBHI classes). Call :meth:`set_epoch` before each epoch, as with ``DistributedSampler``.
    """

    def __init__(self, labels: Sequence[int] | torch.Tensor, per_class: int = 10000, seed: int = 0, rank: int = 0,
                 world_size: int = 1, num_classes: int | None = None):
        labels = torch.as_tensor(labels, dtype=torch.long).flatten()
        num_classes = len(CLASSES) if num_classes is None else int(num_classes)
        if isinstance(per_class, bool) or not isinstance(per_class, int) or per_class < 1:
            raise LungsoundError(f"BalancedOversampler per_class must be a positive integer, got {per_class!r}")
        if world_size < 1 or not 0 <= rank < world_size:
            raise LungsoundError(f"BalancedOversampler needs 0 <= rank < world_size, got rank {rank}, "
                                 f"world_size {world_size}")
        if labels.numel() and (labels.min() < 0 or labels.max() >= num_classes):
            bad = labels[(labels < 0) | (labels >= num_classes)][0].item()
            raise LungsoundError(f"BalancedOversampler: label {bad} is outside 0..{num_classes - 1}")
        self.class_indices = [torch.nonzero(labels == c).flatten() for c in range(num_classes)]
        empty = [_class_name(c, num_classes) for c, idx in enumerate(self.class_indices) if idx.numel() == 0]
        if empty:
            raise LungsoundError(f"BalancedOversampler cannot oversample class(es) with no samples: {', '.join(empty)}")
        self.per_class, self.seed, self.rank, self.world_size = per_class, int(seed), int(rank), int(world_size)
        self.num_classes = num_classes
        self.epoch = 0

    @property
    def total_size(self) -> int:
        """Length of one epoch's padded list (a multiple of ``world_size``)."""
        n = self.per_class * self.num_classes
        return -(-n // self.world_size) * self.world_size

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def epoch_indices(self, epoch: int | None = None) -> list[int]:
        """The whole epoch's list (every rank's share together, before padding)."""
        generator = torch.Generator().manual_seed(self.seed + (self.epoch if epoch is None else int(epoch)))
        drawn = [idx[torch.randint(0, idx.numel(), (self.per_class,), generator=generator)]
                 for idx in self.class_indices]
        order = torch.cat(drawn)
        return order[torch.randperm(order.numel(), generator=generator)].tolist()

    def __iter__(self) -> Iterator[int]:
        order = self.epoch_indices()
        pad = self.total_size - len(order)
        while pad > 0:  # repeat the head (more than once only when the list is shorter than world_size)
            order += order[:pad]
            pad = self.total_size - len(order)
        return iter(order[self.rank::self.world_size])

    def __len__(self) -> int:
        return self.total_size // self.world_size


def _class_name(index: int, num_classes: int) -> str:
    return f"{index} ({CLASSES[index]})" if num_classes == len(CLASSES) else str(index)
