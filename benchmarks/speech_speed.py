"""Speed and memory of the waveform speech models on this machine (issue 9): a benchmark script, not a test.

    .venv/bin/python benchmarks/speech_speed.py [--model wav2vec2_base] [--train-batch 2] [--repeats 3] [--skip-run]

Prints, side by side in one run:
- inference time per 8-s cycle (batch 1 and batch 8) and the time of one training step (forward, backward, Adam) for the
  full-size model built from its architecture (random weights: the speed does not depend on them, and nothing is
  downloaded), with transformers' SDPA attention and with its eager attention, and their ratio;
- the peak resident memory of that training step;
- the peak resident memory of a whole `lungsound train` run of the tiny speech model on the built-in data (8-s cycles,
  waveforms cached on disk and memory-mapped), next to the size of the cached training waveforms.
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

SECONDS, RATE = 8.0, 16000


def _timed(fn, repeats: int) -> float:
    fn()  # warm-up (allocations, kernels)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def bench_model(name: str, attn: str, train_batch: int, repeats: int) -> dict[str, float]:
    from lungsound.models import create_model

    torch.manual_seed(0)
    model = create_model(name, attn_implementation=attn, protocol_masking="off")
    x8 = torch.randn(8, int(SECONDS * RATE))
    model.eval()
    with torch.inference_mode():
        one = _timed(lambda: model(x8[:1]), repeats)
        eight = _timed(lambda: model(x8), max(1, repeats // 2))
    model.train()
    opt = torch.optim.Adam(model.parameters(), lr=1e-5)
    labels = torch.zeros(train_batch, dtype=torch.long)

    def step():
        opt.zero_grad(set_to_none=True)
        torch.nn.functional.cross_entropy(model(x8[:train_batch]), labels).backward()
        opt.step()

    train = _timed(step, repeats)
    return {"infer_b1_per_cycle": one, "infer_b8_per_cycle": eight / 8, "train_step": train,
            "train_per_cycle": train / train_batch,
            "params_m": sum(p.numel() for p in model.parameters()) / 1e6}


def _child(args) -> None:
    """Run one configuration in this (fresh) process and print its numbers and peak memory."""
    out = bench_model(args.model, args.attn, args.train_batch, args.repeats)
    out["peak_rss_gb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 ** 2
    print(" ".join(f"{k}={v:.6g}" for k, v in out.items()))


def _in_subprocess(extra: list[str]) -> dict[str, float]:
    res = subprocess.run([sys.executable, __file__, "--child", *extra], capture_output=True, text=True, check=True)
    line = res.stdout.strip().splitlines()[-1]
    return {k: float(v) for k, v in (item.split("=") for item in line.split())}


def training_run_memory() -> tuple[float, float, float]:
    """Peak RSS (GB) and wall time of a `lungsound train` of the tiny wav2vec 2.0 on the built-in data; cached GB."""
    import numpy as np

    from lungsound.data.cache import cache_root

    wrapper = ("import resource, subprocess, sys; subprocess.run(sys.argv[1:], check=True, capture_output=True); "
               "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)")  # this run's own peak, nothing else
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [str(Path(sys.executable).parent / "lungsound"), "train", "-c", "experiments/icbhi_repaug_wav2vec2_clean.yaml",
               "data.root=null", "model.name=wav2vec2_tiny", "model.pretrained=null", "train.epochs=1",
               "train.ma_beta=null", "train.lr=1e-3", "augment.rep_max_width_ratio=0.375",  # 64-d: below 288
               f"tracking.output_dir={tmp}/out", "--quiet"]
        env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{tmp}/mlflow.db"}
        t0 = time.perf_counter()
        res = subprocess.run([sys.executable, "-c", wrapper, *cmd], env=env, check=True, capture_output=True, text=True,
                             cwd=Path(__file__).resolve().parents[1])
        wall = time.perf_counter() - t0
    peak = int(res.stdout.strip().splitlines()[-1]) / 1024 ** 2
    cached = 0.0
    for f in cache_root().rglob("arrays.npy"):
        arr = np.load(f, mmap_mode="r")
        if arr.ndim == 2 and arr.shape[1] == int(SECONDS * RATE):  # 8-s waveform caches
            cached += arr.nbytes / 1024 ** 3
    return peak, wall, cached


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="wav2vec2_base")
    p.add_argument("--train-batch", type=int, default=2)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--skip-run", action="store_true", help="skip the whole-run memory measurement")
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--attn", default="sdpa", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        return _child(args)
    import transformers

    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__} "
          f"({torch.get_num_threads()} threads), transformers {transformers.__version__}")
    common = ["--model", args.model, "--train-batch", str(args.train_batch), "--repeats", str(args.repeats)]
    rows = {attn: _in_subprocess([*common, "--attn", attn]) for attn in ("sdpa", "eager")}
    print(f"\n{args.model} ({rows['sdpa']['params_m']:.1f} M parameters), one 8-s cycle = {int(SECONDS * RATE)} samples, "
          f"CPU, median of {args.repeats}")
    print("| measure | SDPA | eager | eager / SDPA |\n|---|---|---|---|")
    for key, label in (("infer_b1_per_cycle", "inference, batch 1 (s per cycle)"),
                       ("infer_b8_per_cycle", "inference, batch 8 (s per cycle)"),
                       ("train_step", f"train step, batch {args.train_batch} (s)"),
                       ("train_per_cycle", "train step (s per cycle)"),
                       ("peak_rss_gb", "peak memory of the process (GB)")):
        s, e = rows["sdpa"][key], rows["eager"][key]
        print(f"| {label} | {s:.3f} | {e:.3f} | {e / s:.2f} |")
    if not args.skip_run:
        peak, wall, cached = training_run_memory()
        print(f"\nwhole training run (wav2vec2_tiny, built-in data, 8-s waveforms, 1 epoch, clean protocol): "
              f"{wall:.0f} s, peak memory {peak:.2f} GB; cached waveform arrays on disk {cached:.2f} GB "
              "(memory-mapped, not held in memory)")


if __name__ == "__main__":
    main()
