"""BalancedOversampler: exact per-class counts (the authors' list built once, or fresh draws per epoch), determinism per
(seed, epoch), and disjoint equal rank shards."""

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


@pytest.mark.parametrize("draw", ["once", "epoch"])
def test_exact_per_class_counts_drawn_from_each_class(draw):
    sampler = BalancedOversampler(LABELS, per_class=7, seed=0, draw=draw)
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
    with pytest.raises(LungsoundError, match="per_class must be null or a positive integer"):
        BalancedOversampler(LABELS, per_class=0)
    with pytest.raises(LungsoundError, match="draw must be one of once, epoch"):
        BalancedOversampler(LABELS, draw="replace")
    with pytest.raises(LungsoundError, match="rank < world_size"):
        BalancedOversampler(LABELS, rank=2, world_size=2)
    assert len(BalancedOversampler(torch.tensor([0, 1, 1]), per_class=4, num_classes=2)) == 8


def item_counts(indices: list[int], items: list[int]) -> list[int]:
    """How often each of `items` appears in `indices`, largest first."""
    counts = Counter(indices)
    return sorted((counts[i] for i in items), reverse=True)


def test_the_authors_list_is_topped_up_with_shuffled_copies_to_the_largest_class():
    # Histogram 5 / 2 / 2 / 1. Target T = 5 (the largest class). Class 0 (items 0 1 3 5 9): itself, each once. Class 1
    # (items 2, 7): 2 + 2 + 1 = 5, so one item 3 times and the other 2 (T // n = 2, T mod n = 1 item once more); the same
    # for class 2 (items 4, 8); class 3 (item 6): 5 times. 20 items an epoch, the same multiset every epoch.
    sampler = BalancedOversampler(LABELS, seed=0)
    first = sampler.epoch_indices(1)
    assert len(first) == len(sampler) == 20 and class_counts(first) == {0: 5, 1: 5, 2: 5, 3: 5}
    assert item_counts(first, [0, 1, 3, 5, 9]) == [1, 1, 1, 1, 1]
    assert item_counts(first, [2, 7]) == [3, 2] and item_counts(first, [4, 8]) == [3, 2]
    assert item_counts(first, [6]) == [5]
    second = sampler.epoch_indices(2)
    assert Counter(second) == Counter(first) and second != first  # built once; reshuffled each epoch
    # T = 7 given: class 0 is 5 + 2 (two items twice), classes 1 and 2 are 2 + 2 + 2 + 1 (4 and 3), class 3 7 times.
    seven = BalancedOversampler(LABELS, per_class=7, seed=3).epoch_indices(1)
    assert item_counts(seven, [0, 1, 3, 5, 9]) == [2, 2, 1, 1, 1]
    assert item_counts(seven, [2, 7]) == [4, 3] and item_counts(seven, [4, 8]) == [4, 3] and item_counts(seven, [6]) == [7]
    # T = 3 below class 0's 5: three distinct items of one shuffled copy.
    assert item_counts(BalancedOversampler(LABELS, per_class=3).epoch_indices(1), [0, 1, 3, 5, 9]) == [1, 1, 1, 0, 0]


def test_the_authors_counts_on_the_icbhi_training_histogram():
    # The official split's 4,142 training cycles: normal 2,063, crackle 1,215, wheeze 501, both 363 (methods.md
    # section 1). T = 2,063. Crackle: 2,063 = 1 x 1,215 + 848, so 848 cycles twice and 367 once. Wheeze: 2,063 =
    # 4 x 501 + 59: 59 cycles 5 times, 442 four times. Both: 2,063 = 5 x 363 + 248: 248 six times, 115 five times.
    histogram = {0: 2063, 1: 1215, 2: 501, 3: 363}
    labels = [c for c, n in histogram.items() for _ in range(n)]
    order = BalancedOversampler(labels, seed=1).epoch_indices(1)
    assert len(order) == 4 * 2063 == 8252
    counts = Counter(order)
    start = {0: 0, 1: 2063, 2: 3278, 3: 3779}
    per_item = {c: Counter(counts[i] for i in range(start[c], start[c] + n)) for c, n in histogram.items()}
    assert per_item == {0: {1: 2063}, 1: {2: 848, 1: 367}, 2: {5: 59, 4: 442}, 3: {6: 248, 5: 115}}


def test_fresh_draws_change_the_multiset_every_epoch():
    sampler = BalancedOversampler(LABELS, per_class=50, seed=2, draw="epoch")
    one, two = sampler.epoch_indices(1), sampler.epoch_indices(2)
    assert class_counts(one) == class_counts(two) == {0: 50, 1: 50, 2: 50, 3: 50}
    assert Counter(one) != Counter(two)  # with replacement: per-item counts vary (the built-once list's never do)
