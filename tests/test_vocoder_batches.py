"""The vocoder's epoch batches ([AFT] reference: shuffled epochs without replacement, last partial batch dropped), their
torchrun shards, their exact resume, and the vocoder experiment file's batch and precision (methods.md section 10)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from lungsound.errors import LungsoundError
from lungsound.generation.batches import EpochBatcher
from lungsound.generation.train import crop_batch, load_vocoder_config, training_clips
from lungsound.training.checkpoint import read_weights_only, save_state
from lungsound.training.distributed import shard

VOCODER_FILE = Path(__file__).resolve().parents[1] / "experiments" / "vocoder_diffwave.yaml"


def draw(batcher: EpochBatcher, n: int) -> list[list[int]]:
    return [batcher.next().tolist() for _ in range(n)]


def test_one_epoch_holds_every_clip_exactly_once():
    batches = draw(EpochBatcher(12, 4, seed=3), 3)  # 12 clips, batch 4: three batches make the epoch
    flat = [i for b in batches for i in b]
    assert all(len(b) == 4 for b in batches) and sorted(flat) == list(range(12))


def test_the_last_partial_batch_is_dropped_and_each_epoch_reshuffles():
    b = EpochBatcher(10, 4, seed=0)  # 10 clips, batch 4: 2 batches of 4 per epoch, 2 clips sit the epoch out
    assert b.per_epoch == 2
    first = draw(b, 2)
    seen = {i for batch in first for i in batch}
    assert len(seen) == 8 and all(len(batch) == 4 for batch in first)
    assert set(b.epoch_order(0)[8:].tolist()) == set(range(10)) - seen  # the two left out are the permutation's tail
    third = b.next().tolist()  # the next epoch begins with the first 4 of a new permutation
    assert (b.epoch, b.position) == (1, 1) and third == b.epoch_order(1)[:4].tolist()
    assert b.epoch_order(1).tolist() != b.epoch_order(0).tolist()
    assert first == [b.epoch_order(0)[:4].tolist(), b.epoch_order(0)[4:8].tolist()]


def test_batches_depend_only_on_the_seed():
    assert draw(EpochBatcher(10, 3, seed=7), 7) == draw(EpochBatcher(10, 3, seed=7), 7)
    assert draw(EpochBatcher(10, 3, seed=7), 3) != draw(EpochBatcher(10, 3, seed=8), 3)


def test_shards_by_hand():
    assert shard(list(range(10)), 0, 2) == [0, 2, 4, 6, 8] and shard(list(range(10)), 1, 2) == [1, 3, 5, 7, 9]
    assert shard(list(range(11)), 1, 2) == [1, 3, 5, 7, 9]  # the 11th item does not divide evenly: dropped
    assert shard(list(range(5)), 0, 1) == list(range(5))


def test_two_processes_see_disjoint_clips_of_the_same_permutation():
    ranks = [EpochBatcher(11, 2, seed=4, rank=r, world=2) for r in range(2)]
    assert [r.per_epoch for r in ranks] == [2, 2]  # 11 clips -> shares of 5 -> 2 batches of 2 each
    epoch = [{i for batch in draw(r, 2) for i in batch} for r in ranks]
    assert len(epoch[0]) == len(epoch[1]) == 4 and not epoch[0] & epoch[1]
    order = ranks[0].epoch_order(0).tolist() + ranks[1].epoch_order(0).tolist()
    assert sorted(order) == sorted(np.random.default_rng([4, 0]).permutation(11)[:10].tolist())
    # Step by step the two shares together are the one-process batch of 2 x 2: torchrun changes no step's clips.
    ranks, single = [EpochBatcher(11, 2, seed=4, rank=r, world=2) for r in range(2)], EpochBatcher(11, 4, seed=4)
    for _ in range(5):
        assert sorted(ranks[0].next().tolist() + ranks[1].next().tolist()) == sorted(single.next().tolist())
    with pytest.raises(LungsoundError, match="rank 2 is not in 0..1"):
        EpochBatcher(11, 2, seed=4, rank=2, world=2)


def test_resume_mid_epoch_continues_with_the_uninterrupted_batches(tmp_path):
    whole = draw(EpochBatcher(10, 3, seed=2), 8)  # 3 batches per epoch: 8 batches cross two epoch boundaries
    first = EpochBatcher(10, 3, seed=2)
    head = draw(first, 4)  # stop in the middle of the second epoch
    save_state(tmp_path / "last.pt", {"batcher": first.state_dict()})
    again = EpochBatcher(10, 3, seed=2)
    again.load_state_dict(read_weights_only(tmp_path / "last.pt")["batcher"], "last.pt")
    assert head + draw(again, 4) == whole
    old = EpochBatcher(10, 3, seed=2)
    old.seek(4)  # a state saved before the batcher existed: placed by its step count
    assert draw(old, 4) == whole[4:]


def test_a_resume_with_other_data_or_processes_is_refused():
    state = EpochBatcher(10, 3, seed=2).state_dict()
    with pytest.raises(LungsoundError, match=r"last.pt: the run drew its batches with clips 10 \(now 12\)"):
        EpochBatcher(12, 3, seed=2).load_state_dict(state, "last.pt")
    with pytest.raises(LungsoundError, match=r"world 1 \(now 2\)"):
        EpochBatcher(10, 3, seed=2, world=2, rank=1).load_state_dict(state, "last.pt")
    with pytest.raises(LungsoundError, match="batch position is missing"):
        EpochBatcher(10, 3, seed=2).load_state_dict({"epoch": 0}, "last.pt")
    with pytest.raises(LungsoundError, match="bad batch position"):
        EpochBatcher(10, 3, seed=2).load_state_dict({**state, "position": 4}, "last.pt")


def test_too_few_clips_for_one_batch_is_refused():
    with pytest.raises(LungsoundError, match="train.batch_size 4 per process x 2 process.es. needs at least 8 training "
                                             "clips; the data has 7"):
        EpochBatcher(7, 4, seed=0, rank=0, world=2)


def test_the_vocoder_file_trains_on_batch_32_in_fp32():
    cfg = load_vocoder_config(VOCODER_FILE)  # the reference's effective global batch, its fp16: false
    assert cfg.train.batch_size == 32 and cfg.train.amp is False
    with pytest.raises(LungsoundError, match="train.seed is out of range"):
        load_vocoder_config(VOCODER_FILE, ["train.seed=-1"])


def test_crop_batch_takes_the_given_clips(small_icbhi):
    clips = training_clips(str(small_icbhi), "official", 4.0, "paper", progress=False)
    audio, mel, labels = crop_batch(clips, np.array([5, 0, 5]), 8, torch.Generator().manual_seed(0))
    assert audio.shape == (3, 8 * 256) and mel.shape == (3, 80, 8)
    assert labels.tolist() == [int(clips.labels[5]), int(clips.labels[0]), int(clips.labels[5])]
