"""The vocoder's batches: shuffled epochs without replacement, the last partial batch dropped (docs/methods.md section 10).

The reference DiffWave trainer feeds a PyTorch `DataLoader(shuffle=True, drop_last=True)` (a `DistributedSampler` on
several GPUs): every epoch is a fresh permutation of the training clips, cut into batches of `batch_size`, and the
clips left over at the end (fewer than a batch) sit that epoch out. `EpochBatcher` draws the same way, as indices into
the training clips:

- epoch e's permutation is `numpy.random.default_rng([seed, e]).permutation(clips)`, the same in every process, so the
  batches depend only on (seed, epoch, position), never on the machine or on what ran before;
- under torchrun with N processes, process r takes `lungsound.training.distributed.shard` of each permutation (every
  N-th clip from r, after dropping the `clips mod N` that do not divide evenly), as the classifier engine does, so the
  processes see disjoint clips; each then batches its own share. `batch_size` is per process (as the classifier's
  `train.batch_size` under torchrun): one step trains on N x batch_size clips in all, and they are exactly the clips
  of that step's batch for one process with batch N x batch_size (share r's batch k holds items r + N j of the
  permutation, j in [k b, (k + 1) b)), so the number of processes changes the work split, never the batches;
- where it stands (epoch, position within the epoch) is `state_dict()`, saved in `last.pt` and restored with
  `load_state_dict`, so a resumed run continues with exactly the batches an uninterrupted one would have drawn.

Unlike `DistributedSampler`, which pads the permutation with repeated clips to a multiple of N, the shards here drop the
remainder, so no clip appears twice in an epoch.
"""

from __future__ import annotations

import numpy as np

from lungsound.errors import LungsoundError
from lungsound.training.distributed import shard

STATE_KEYS = ("epoch", "position", "clips", "batch_size", "world", "seed")


class EpochBatcher:
    """Batches of clip indices for process `rank` of `world`: `next()` returns the next one (an int64 array)."""

    def __init__(self, clips: int, batch_size: int, seed: int, *, rank: int = 0, world: int = 1):
        if not 0 <= rank < world:
            raise LungsoundError(f"process rank {rank} is not in 0..{world - 1}")
        if clips // world < batch_size:
            raise LungsoundError(f"train.batch_size {batch_size} per process x {world} process(es) needs at least "
                                 f"{batch_size * world} training clips; the data has {clips}")
        self.clips, self.batch_size, self.seed, self.rank, self.world = clips, batch_size, seed, rank, world
        self.epoch, self.position = 0, 0
        self._order: np.ndarray | None = None  # this process's share of the current epoch, made when first needed

    @property
    def per_epoch(self) -> int:
        """Batches per epoch and process: the share's length divided by the batch size, rounded down."""
        return (self.clips // self.world) // self.batch_size

    def epoch_order(self, epoch: int) -> np.ndarray:
        """This process's share of epoch `epoch`'s permutation (before cutting it into batches)."""
        order = np.random.default_rng([self.seed, epoch]).permutation(self.clips).tolist()
        return np.asarray(shard(order, self.rank, self.world), dtype=np.int64)

    def next(self) -> np.ndarray:
        if self.position == self.per_epoch:
            self.epoch, self.position, self._order = self.epoch + 1, 0, None
        if self._order is None:
            self._order = self.epoch_order(self.epoch)
        start = self.position * self.batch_size
        self.position += 1
        return self._order[start:start + self.batch_size]

    def state_dict(self) -> dict:
        return {"epoch": self.epoch, "position": self.position, "clips": self.clips, "batch_size": self.batch_size,
                "world": self.world, "seed": self.seed}

    def load_state_dict(self, state: dict, source: str = "the saved state") -> None:
        """Continue from `state` (a `state_dict()`); it must describe the same clips, batch, process count and seed."""
        if not isinstance(state, dict) or set(STATE_KEYS) - set(state):
            raise LungsoundError("the batch position is missing or incomplete", source)
        layout = {k: state[k] for k in ("clips", "batch_size", "world", "seed")}
        ours = {k: getattr(self, k) for k in layout}
        if layout != ours:
            differ = ", ".join(f"{k} {layout[k]} (now {ours[k]})" for k in layout if layout[k] != ours[k])
            raise LungsoundError(f"the run drew its batches with {differ}; resume it with the same training data and "
                                 "number of processes to continue exactly", source)
        if not (isinstance(state["epoch"], int) and state["epoch"] >= 0
                and isinstance(state["position"], int) and 0 <= state["position"] <= self.per_epoch):
            raise LungsoundError(f"bad batch position epoch {state['epoch']!r}, position {state['position']!r}", source)
        self.epoch, self.position, self._order = state["epoch"], state["position"], None

    def seek(self, drawn: int) -> None:
        """Stand where an uninterrupted run stands after `drawn` batches (for states saved before `state_dict`)."""
        self.epoch, self.position, self._order = drawn // self.per_epoch, drawn % self.per_epoch, None
