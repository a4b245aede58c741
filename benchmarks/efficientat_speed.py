"""EfficientAT mn04 against AST-base on this machine (issue 22): a benchmark script, not a test.

    .venv/bin/python benchmarks/efficientat_speed.py [--threads 2] [--repeats 3] [--train-steps 12] [--skip-ast]

Prints, in one run on the same machine:
- inference on the same 20-s recording (the first real ICBHI recording of ../shared/data with at least 20 s of audio,
  else 20 s of the built-in data), each model as `predict` runs it: the recording cut into the model's 8-s segments
  (hop 8 s, so 3 segments), at its own rate (mn04: 32 kHz, its front end included; AST-base: 16 kHz, the Kaldi fbank
  included), batch 3; the wall time per recording (fastest of `--repeats` after a warm-up), the ratio (target: mn04 at least 30x faster), and each
  model's peak resident memory (measured in a child process per model, so one model's memory does not hide the other's);
- training: the time of one mn04 training step (fastest of `--train-steps`) (batch 32 of 8-s cycles at 32 kHz from the built-in data,
  spectrogram mixup, Adam) on `--threads` cores, and the seconds of a 4,142-cycle epoch (the official split's training
  cycles: 129 full batches, drop_last) from it, plus the time to evaluate the 2,756 test cycles at batch 32.
  The target: an epoch in under 3 minutes on 2 cores. The full-scale ICBHI-like built-in set has those cycle counts; the
  step time does not depend on the audio, so the steps run on cycles of the default built-in set, already cut.

Random weights for both models (the speed does not depend on them, and nothing is downloaded).
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "data" / "icbhi"
SECONDS, SEGMENT, TRAIN_CYCLES, TEST_CYCLES, BATCH = 20.0, 8.0, 4142, 2756, 32


def _timed(fn, repeats: int) -> float:
    """The fastest of `repeats` calls after a warm-up: on a machine shared with other jobs the fastest call is the
    closest to the model's own cost (a slower one waited for the CPU)."""
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def recording(rate: int) -> tuple[np.ndarray, str]:
    """20 s of one recording at `rate`: a real ICBHI one when ../shared/data is there, else the built-in data's."""
    from lungsound.audio import load_audio
    from lungsound.data.default import ensure_default_data

    for folder in (SHARED, ensure_default_data(progress=False)):
        for path in sorted(Path(folder).rglob("*.wav")):
            x, sr = load_audio(path, rate)
            if len(x) >= SECONDS * rate:
                return np.asarray(x[:int(SECONDS * rate)], dtype=np.float32), path.name
    raise SystemExit("no recording of at least 20 s found")


def infer_child(name: str, threads: int, repeats: int) -> dict:
    """Per-recording inference time and this process's peak memory for model `name` (run in a child)."""
    from lungsound.features.fbank import FbankConfig, compute_features_batch
    from lungsound.models import create_model, model_spec

    torch.set_num_threads(threads)
    spec = model_spec(name)
    x, source = recording(spec.sample_rate)
    seg = int(SEGMENT * spec.sample_rate)
    extra = {"input_frames": 798} if name == "ast" else {}
    model = create_model(name, num_classes=4, **extra).eval()

    def run():
        with torch.inference_mode():
            waves = torch.from_numpy(np.stack([np.resize(x[i:i + seg], seg) for i in range(0, len(x), seg)]))
            inputs = waves if spec.input == "waveform" else compute_features_batch(
                waves, FbankConfig(sample_rate=spec.sample_rate))
            return model(inputs)

    seconds = _timed(run, repeats)
    return {"name": name, "seconds": seconds, "source": source, "segments": len(range(0, len(x), seg)),
            "params": sum(p.numel() for p in model.parameters()),
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def train_child(threads: int, steps: int) -> dict:
    """mn04 training step and evaluation batch times at 8 s, 32 kHz, batch 32."""
    from lungsound.config import load_config
    from lungsound.methods import Batch, StepContext, create_objective
    from lungsound.models.build import build_model
    from lungsound.training.data import build_run_data

    torch.set_num_threads(threads)
    cfg = load_config(REPO / "experiments" / "icbhi_efficientat_mn04.yaml", ["data.root=null", "model.pretrained=null"])
    data = build_run_data(cfg, progress=False)
    items = [data.train[i] for i in range(BATCH)]
    x = torch.stack([s.x for s in items])
    y = torch.tensor([s.label for s in items])
    model = build_model(cfg, load_weights=False)
    objective = create_objective("mixup", model.feature_dim, model.num_classes, alpha=0.3)
    optim = torch.optim.Adam(model.parameters(), lr=6e-5)
    batch = Batch(x=x, label=y, device=torch.zeros(BATCH, dtype=torch.long))

    def step():
        model.train()
        loss, _ = objective(model, batch, StepContext())
        optim.zero_grad()
        loss.backward()
        optim.step()

    def evaluate():
        model.eval()
        with torch.inference_mode():
            model(x)

    step_s = _timed(step, steps)
    eval_s = _timed(evaluate, 3)
    per_epoch = TRAIN_CYCLES // BATCH * step_s
    return {"step_s": step_s, "eval_batch_s": eval_s, "train_epoch_s": per_epoch,
            "test_eval_s": -(-TEST_CYCLES // BATCH) * eval_s, "cycles_shape": list(x.shape),
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def _child(args: list[str]) -> dict:
    out = subprocess.run([sys.executable, __file__, *args], check=True, capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--train-steps", type=int, default=12)
    p.add_argument("--skip-ast", action="store_true", help="only mn04 (no AST-base inference)")
    p.add_argument("--skip-train", action="store_true")
    p.add_argument("--child", choices=["infer", "train"], default=None)
    p.add_argument("--model", default="efficientat_mn04")
    a = p.parse_args()
    if a.child == "infer":
        print(json.dumps(infer_child(a.model, a.threads, a.repeats)))
        return
    if a.child == "train":
        print(json.dumps(train_child(a.threads, a.train_steps)))
        return
    common = ["--threads", str(a.threads), "--repeats", str(a.repeats)]
    print(f"torch {torch.__version__}, {a.threads} threads")
    rows = [_child(["--child", "infer", "--model", m, *common]) for m in
            (["efficientat_mn04"] + ([] if a.skip_ast else ["ast"]))]
    print(f"inference on one {SECONDS:.0f}-s recording ({rows[0]['source']}; {rows[0]['segments']} segments of 8 s):")
    print("| model | parameters | seconds per recording | peak memory (MB) |\n|---|---|---|---|")
    for r in rows:
        print(f"| {r['name']} | {r['params']:,} | {r['seconds']:.3f} | {r['peak_rss_mb']:.0f} |")
    if len(rows) == 2:
        print(f"mn04 is {rows[1]['seconds'] / rows[0]['seconds']:.0f}x faster than AST-base (target: at least 30x)")
    if not a.skip_train:
        t = _child(["--child", "train", "--threads", str(a.threads), "--train-steps", str(a.train_steps)])
        print(f"training mn04 (batch {BATCH} of {t['cycles_shape'][1]:,}-sample cycles, mixup, Adam, {a.threads} "
              f"threads): {t['step_s']:.2f} s per step -> {t['train_epoch_s']:.0f} s ({t['train_epoch_s'] / 60:.1f} min) "
              f"per {TRAIN_CYCLES:,}-cycle epoch (target: under 180 s); evaluating the {TEST_CYCLES:,} test cycles "
              f"{t['test_eval_s']:.0f} s; peak memory {t['peak_rss_mb']:.0f} MB")


if __name__ == "__main__":
    main()
