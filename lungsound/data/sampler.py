"""Class-balanced sampling: `BalancedOversampler` (every epoch holds the same number of items of every class) and
`ClassWeightedSampler` (draws with replacement weighted by 1 / class count, data.balance: weighted; see its docstring).

The second Rep-Gen setting of [REPAUG] (Kim et al., EMBC 2024, arXiv 2405.02996; docs/methods.md section 9) oversamples
every class and adds noise to every representation. The target count ``T`` (items per class and epoch) is ``per_class``
when given (``data.balance_per_class``), else the count of the largest class, so every class is brought up to the
majority class (normal on ICBHI). docs/methods.md says "topped up to the target count" without naming the count: the largest
class is our reading of that oversampling (not stated, our choice). Two ways to fill it:

- ``draw="once"`` (the authors' code, the default; docs/methods.md section 9: "builds its oversampled list once: each class
  list extended with shuffled copies of itself and topped up to the target count"). At construction, for each class c
  with ``n_c`` items in dataset order, its list is extended with shuffled copies of itself (a fresh shuffle per copy)
  until it holds at least ``T`` items, then cut to ``T``. So every item of c appears ``T // n_c`` times and
  ``T mod n_c`` of them, chosen at random, once more (a class larger than ``T`` keeps ``T`` items of one shuffled
  copy, our choice). The lists are joined and the same multiset is shuffled afresh every epoch (the data loader's
  shuffle).
- ``draw="epoch"``: every epoch draws ``T`` items per class uniformly with replacement, then shuffles all ``K T``.

The random draws are made by generators seeded with ``seed`` (the list) and ``seed + e`` (epoch ``e``), so every
process, and a resumed run, sees the same epochs. Under data parallelism the epoch's list is padded by repeating its
head up to a multiple of ``world_size`` and rank ``r`` takes positions ``r, r + world_size, ...`` (the layout of
``torch.utils.data.DistributedSampler``), so the ranks' shares are disjoint slices of the same list with equal lengths.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import torch
from torch.utils.data import Sampler

from lungsound.data.labels import CLASSES
from lungsound.errors import LungsoundError


DRAWS = ("once", "epoch")


class BalancedOversampler(Sampler[int]):
    """Exactly ``T`` dataset indices of every class per epoch (``per_class``, or the largest class's count when None),
    built once (``draw="once"``) or drawn each epoch (``"epoch"``), deterministic per ``(seed, epoch)``, sharded.

    ``labels[i]`` is the class index of dataset item ``i``, in ``0 .. num_classes - 1`` (``num_classes`` defaults to the
    four ICBHI classes). Call :meth:`set_epoch` before each epoch, as with ``DistributedSampler``.
    """

    def __init__(self, labels: Sequence[int] | torch.Tensor, per_class: int | None = None, seed: int = 0,
                 rank: int = 0, world_size: int = 1, num_classes: int | None = None, draw: str = "once"):
        labels = torch.as_tensor(labels, dtype=torch.long).flatten()
        num_classes = len(CLASSES) if num_classes is None else int(num_classes)
        if per_class is not None and (isinstance(per_class, bool) or not isinstance(per_class, int) or per_class < 1):
            raise LungsoundError(f"BalancedOversampler per_class must be null or a positive integer, got {per_class!r}")
        if draw not in DRAWS:
            raise LungsoundError(f"BalancedOversampler draw must be one of {', '.join(DRAWS)}, got {draw!r}")
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
        largest = max(idx.numel() for idx in self.class_indices)
        self.per_class = largest if per_class is None else per_class
        self.seed, self.rank, self.world_size = int(seed), int(rank), int(world_size)
        self.num_classes, self.draw = num_classes, draw
        self.epoch = 0
        self.fixed = self._topped_up() if draw == "once" else None

    def _topped_up(self) -> torch.Tensor:
        """The ``"once"`` list: each class's items extended with shuffled copies of themselves, cut to ``per_class``."""
        generator = torch.Generator().manual_seed(self.seed)
        lists = []
        for idx in self.class_indices:
            parts = [] if idx.numel() > self.per_class else [idx]  # a larger class: T items of one shuffled copy
            while sum(p.numel() for p in parts) < self.per_class:
                parts.append(idx[torch.randperm(idx.numel(), generator=generator)])
            lists.append(torch.cat(parts)[:self.per_class])
        return torch.cat(lists)

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
        if self.fixed is not None:
            order = self.fixed
        else:
            order = torch.cat([idx[torch.randint(0, idx.numel(), (self.per_class,), generator=generator)]
                               for idx in self.class_indices])
        return order[torch.randperm(order.numel(), generator=generator)].tolist()

    def __iter__(self) -> Iterator[int]:
        return iter(rank_share(self.epoch_indices(), self.total_size, self.rank, self.world_size))

    def __len__(self) -> int:
        return self.total_size // self.world_size


def rank_share(order: list[int], total_size: int, rank: int, world_size: int) -> list[int]:
    """Rank ``rank``'s positions ``rank, rank + world_size, ...`` of ``order`` padded by repeating its head up to
    ``total_size`` (a multiple of ``world_size``; more than one repeat only when the list is shorter)."""
    pad = total_size - len(order)
    while pad > 0:
        order = order + order[:pad]
        pad = total_size - len(order)
    return order[rank::world_size]


class ClassWeightedSampler(Sampler[int]):
    """``data.balance: weighted``: every epoch draws ``N`` = len(labels) items with replacement, item ``i`` with
    probability proportional to ``1 / n_{y_i}`` (its class's count), so each class is drawn with probability 1 / K per
    draw; the AST + SAM authors' ``WeightedRandomSampler(1 / class count, num_samples = len(train),
    replacement=True)`` (docs/methods.md section 14). Deterministic per ``(seed, epoch)``, sharded as above."""

    def __init__(self, labels: Sequence[int] | torch.Tensor, seed: int = 0, rank: int = 0, world_size: int = 1,
                 num_classes: int | None = None):
        labels = torch.as_tensor(labels, dtype=torch.long).flatten()
        if labels.numel() == 0:
            raise LungsoundError("ClassWeightedSampler needs at least one labelled item")
        if world_size < 1 or not 0 <= rank < world_size:
            raise LungsoundError(f"ClassWeightedSampler needs 0 <= rank < world_size, got rank {rank}, "
                                 f"world_size {world_size}")
        counts = torch.bincount(labels, minlength=num_classes or 0).double()
        self.weights = 1.0 / counts[labels]  # a class with no items has no item to weigh
        self.seed, self.rank, self.world_size, self.epoch = int(seed), int(rank), int(world_size), 0
        self.total_size = -(-labels.numel() // world_size) * world_size

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def epoch_indices(self, epoch: int | None = None) -> list[int]:
        generator = torch.Generator().manual_seed(self.seed + (self.epoch if epoch is None else int(epoch)))
        return torch.multinomial(self.weights, self.weights.numel(), replacement=True, generator=generator).tolist()

    def __iter__(self) -> Iterator[int]:
        return iter(rank_share(self.epoch_indices(), self.total_size, self.rank, self.world_size))

    def __len__(self) -> int:
        return self.total_size // self.world_size


def _class_name(index: int, num_classes: int) -> str:
    return f"{index} ({CLASSES[index]})" if num_classes == len(CLASSES) else str(index)
