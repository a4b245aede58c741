"""How many segments go through the classifier at once, and on how many threads (both runtimes).

A recording's segments are cut and featurised `chunk_size(B)` at a time (the largest multiple of B up to `CHUNK`
= 64 segments, at least B: about 50 MB of 8-s inputs, however long the recording) and each chunk is classified in
batches of

    B = clamp(floor(budget / w), 1, MAX_BATCH),   budget = min(LUNGSOUND_BATCH_MB (default 1024) MiB, MemAvailable / 4)

where w is the estimated peak working memory of one segment in a forward pass, from the model's geometry (float32):

- AST (N = F T' + 2 tokens, D dims, h heads):            w = 4 (2 h N^2 + 12 N D)       (attention scores and their
  softmax, hidden states, q/k/v and the 4 D MLP of one block); AST-base on 8 s: N = 950, w = 122 MB, so B = 8;
- speech models (L samples, first conv c0 channels and stride s0, T = L / prod(strides) frames):
  w = 4 (2 c0 L / s0 + 2 h T^2 + 12 T D)                 (the first conv's output dominates: 52 MB per copy for a
  base model on 8 s);
- anything else (the timm CNNs):                         w = 64 x the input's bytes (the first 64-channel stages).

So a long recording never needs memory in proportion to its length, and a small model still runs in one batch.

Threads: intra-op threads = the cores this process may use (`os.sched_getaffinity`; `$LUNGSOUND_THREADS` overrides it,
e.g. on a machine shared with other work, where PyTorch's OpenMP threads waiting for a busy core can make a small model
many times slower), set for the duration of each classification with PyTorch (and restored after, so the rest of the
process keeps its own setting) and given to ONNX Runtime's session (intra-op = cores, inter-op = 1, sequential
execution: one model, one request at a time).
"""

from __future__ import annotations

import os
from contextlib import contextmanager
from typing import Iterator

import torch

from lungsound.config import ExperimentConfig
from lungsound.models.registry import model_spec

MAX_BATCH = 64
CHUNK = 64  # segments cut and featurised at once
DEFAULT_BUDGET_MB = 1024
BUDGET_ENV = "LUNGSOUND_BATCH_MB"
THREADS_ENV = "LUNGSOUND_THREADS"


def available_cores() -> int:
    """CPU cores this process may run on (its affinity mask; os.cpu_count() where that is unknown)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def default_threads() -> int:
    """Intra-op threads for inference: $LUNGSOUND_THREADS when set to a positive integer, else `available_cores()`."""
    value = os.environ.get(THREADS_ENV, "").strip()
    return int(value) if value.isdigit() and int(value) > 0 else available_cores()


def available_memory() -> int:
    """Bytes of memory available without swapping (MemAvailable of /proc/meminfo; 4 GiB where unknown)."""
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return 4 << 30


def batch_budget() -> int:
    """Bytes one batch may use: min($LUNGSOUND_BATCH_MB MiB (default 1024), a quarter of the available memory)."""
    try:
        cap = float(os.environ.get(BUDGET_ENV, DEFAULT_BUDGET_MB)) * 2**20
    except ValueError:
        cap = DEFAULT_BUDGET_MB * 2**20
    return int(max(1.0, min(cap, available_memory() / 4)))


def working_bytes(cfg: ExperimentConfig) -> int:
    """Estimated peak working memory (bytes) of one segment in a forward pass of the model `cfg` describes (the
    model's own estimate, `ModelSpec.memory`)."""
    return model_spec(cfg.model.name).working_bytes(dict(cfg.model.params), cfg.data.duration)


def batch_size_for(cfg: ExperimentConfig, budget: int | None = None) -> int:
    """Segments per batch for the model of `cfg` within `budget` bytes (default `batch_budget()`)."""
    budget = batch_budget() if budget is None else int(budget)
    return int(min(MAX_BATCH, max(1, budget // max(1, working_bytes(cfg)))))


def chunk_size(batch: int) -> int:
    """Segments featurised at once for batches of `batch`: the largest multiple of `batch` up to `CHUNK`, at least
    `batch` (whole batches, so a chunked recording is classified in the same batches as it would be in one pass)."""
    return batch * max(1, CHUNK // batch)


@contextmanager
def torch_threads(threads: int) -> Iterator[None]:
    """PyTorch's intra-op thread count set to `threads` inside the block, restored after."""
    before = torch.get_num_threads()
    if threads != before:
        torch.set_num_threads(threads)
    try:
        yield
    finally:
        if torch.get_num_threads() != before:
            torch.set_num_threads(before)
