"""BalancedOversampler: exact per-class counts, determinism per (seed, epoch), and disjoint equal rank shards."""

from __future__ import annotations

from collections import Counter

import pytest
import torch

from lungsound.data.sampler import BalancedOversampler
from lungsound.errors import LungsoundError

# 10 items: class 0 (normal) x5, class 1 x2, class 2 x2, class 3 x1.
LABELS = [0, 0, 1, 0, 2, 0, 3, 1, 2, 0]


def class_counts(indices: list[int]) -> Counter:
    return Counter(LABELS[i] for i in indices)


def test_exact_per_class_counts_drawn_from_each_class():
    sampler = BalancedOversampler(LABELS, per_class=7, seed=0)
    indices = list(sampler)
    assert len(indices) == len(sampler) == 28
    assert class_counts(indices) == {0: 7, 1: 7, 2: 7, 3: 7}
    assert Counter(indices)[6] == 7  # the only class-3 item is drawn 7 times (with replacement)
    assert set(indices) <= set(range(len(LABELS)))


def test_classes_are_shuffled_together():
    indices = list(BalancedOversampler(LABELS, per_class=50, seed=1))
    labels = [LABELS[i] for i in indices]
    assert labels != sorted(labels)
    assert len(set(labels[:20])) > 1


def test_same_seed_and_epoch_repeat_and_epochs_differ():
    a, b = BalancedOversampler(LABELS, per_class=20, seed=3), BalancedOversampler(LABELS, per_class=20, seed=3)
    a.set_epoch(2)
    b.set_epoch(2)
    assert list(a) == list(b)
    assert list(a) == list(a)  # iterating again gives the same epoch
    first = list(a)
    a.set_epoch(3)
    assert list(a) != first
    assert class_counts(list(a)) == class_counts(first)  # still exactly balanced
    c = BalancedOversampler(LABELS, per_class=20, seed=4)
    c.set_epoch(2)
    assert list(c) != first


@pytest.mark.parametrize("world_size, per_class", [(2, 5), (3, 5), (4, 3)])
def test_ranks_are_disjoint_equal_slices_covering_the_epoch(world_size, per_class):
    shards = []
    for rank in range(world_size):
        sampler = BalancedOversampler(LABELS, per_class=per_class, seed=9, rank=rank, world_size=world_size)
        sampler.set_epoch(1)
        shards.append(list(sampler))
    full = BalancedOversampler(LABELS, per_class=per_class, seed=9).epoch_indices(1)
    n = 4 * per_class  # 20 or 12 items before padding
    padded_len = -(-n // world_size) * world_size  # 20 -> 20 / 21 ; 12 -> 12
    padded = full + full[: padded_len - n]
    assert all(len(s) == padded_len // world_size for s in shards)  # equal lengths
    # Position p of the padded list goes to rank p % world_size: disjoint positions whose union is the whole list.
    for rank, shard in enumerate(shards):
        assert shard == padded[rank::world_size]
    interleaved = [shards[p % world_size][p // world_size] for p in range(padded_len)]
    assert interleaved == padded
    assert Counter(sum(shards, [])) == Counter(full) + Counter(full[: padded_len - n])


def test_length_reports_the_rank_share():
    sampler = BalancedOversampler(LABELS, per_class=5, rank=1, world_size=3)
    assert len(sampler) == 7 and len(list(sampler)) == 7  # ceil(20 / 3)


def test_errors():
    with pytest.raises(LungsoundError, match=r"no samples: 3 \(both\)"):
        BalancedOversampler([0, 1, 2, 1])
    with pytest.raises(LungsoundError, match="label 4 is outside 0..3"):
        BalancedOversampler([0, 1, 2, 3, 4])
    with pytest.raises(LungsoundError, match="per_class must be a positive integer"):
        BalancedOversampler(LABELS, per_class=0)
    with pytest.raises(LungsoundError, match="rank < world_size"):
        BalancedOversampler(LABELS, rank=2, world_size=2)
    assert len(BalancedOversampler(torch.tensor([0, 1, 1]), per_class=4, num_classes=2)) == 8
