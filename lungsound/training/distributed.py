"""torchrun-native data parallelism, kept deliberately small.

Under `torchrun --nproc_per_node N` (WORLD_SIZE > 1) every process trains on a disjoint 1/N shard of each epoch's shuffled
order and gradients are averaged with all-reduce after backward (gloo on CPU, NCCL on CUDA), so the update equals one
big-batch step. Objectives call `model.forward_features` / `forward_head` directly, which is why gradients are reduced
explicitly rather than through DistributedDataParallel's forward wrapper. Without torchrun all of this is a no-op.
"""

from __future__ import annotations

import os

import torch
import torch.distributed as dist
from torch.utils.data import Sampler


def world_size() -> int:
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def rank() -> int:
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def local_rank() -> int:
    return int(os.environ.get("LOCAL_RANK", 0))


def init_from_env() -> bool:
    """Join the process group torchrun describes in the environment; False when not launched by torchrun."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1 or dist.is_initialized():
        return dist.is_initialized()
    backend = "nccl" if torch.cuda.is_available() else "gloo"
    if backend == "nccl":
        torch.cuda.set_device(local_rank())
    dist.init_process_group(backend=backend)
    return True


def shutdown() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


class _ShardSampler(Sampler[int]):
    def __init__(self, order: list[int]):
        self.order = order

    def __iter__(self):
        return iter(self.order)

    def __len__(self) -> int:
        return len(self.order)


def shard(order: list[int], rank_: int, size: int) -> list[int]:
    """Process `rank_`'s share of one epoch's order among `size`: every size-th item from `rank_` on, after dropping
    the tail that does not divide evenly, so the shares are disjoint and equally long."""
    return order[: len(order) - len(order) % size][rank_::size] if size > 1 else order


def epoch_sampler(n: int, generator: torch.Generator) -> Sampler[int]:
    """This process's share of one epoch's random order (every process draws the same permutation)."""
    return _ShardSampler(shard(torch.randperm(n, generator=generator).tolist(), rank(), world_size()))


def average_gradients(optimizer: torch.optim.Optimizer) -> None:
    size = world_size()
    if size == 1:
        return
    for group in optimizer.param_groups:
        for p in group["params"]:
            if p.grad is not None:
                dist.all_reduce(p.grad, op=dist.ReduceOp.SUM)
                p.grad.div_(size)


def broadcast_parameters(modules) -> None:
    """Start every process from rank 0's weights."""
    if world_size() == 1:
        return
    for m in modules:
        for t in m.state_dict().values():
            dist.broadcast(t, src=0)


def all_gather_floats(value: float) -> list[float]:
    if world_size() == 1:
        return [value]
    out = [None] * world_size()
    dist.all_gather_object(out, value)
    return out
