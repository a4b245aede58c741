"""Speed of the [AFT] DiffWave vocoder on this machine (issue 10): a benchmark script, not a test.

    .venv/bin/python benchmarks/diffwave_speed.py [--batch 4] [--train-batch 32] [--repeats 2]

Prints, measured in one run on the full-size model (30 layers, 64 channels; random weights, which do not change speed):
- the sampling real-time factor (seconds of compute per second of audio) of the 6-step fast schedule for a batch of
  4-s cycles, and of one network evaluation, so the 50-step cost follows;
- training steps per second at the reference's batch (32 crops of 62 mel frames = 15,872 samples each);
- the multiply-accumulate count per audio sample and step (from the layer shapes), and from it what Mixed-500 (2,000
  clips), Mixed-2k (8,000 clips) and 1M training steps cost at a stated sustained throughput (an estimate for a GPU,
  labelled as such: this machine has none).
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import torch

SECONDS, RATE, HOP = 4.0, 16000, 256


def macs_per_sample(layers: int = 30, channels: int = 64, n_mels: int = 80) -> int:
    """Multiply-accumulates per output sample and network evaluation (the 1x1 and dilated convs dominate)."""
    per_layer = channels * 2 * channels * 3 + n_mels * 2 * channels + channels * 2 * channels
    return layers * per_layer + 2 * channels + channels * channels + channels


def main() -> None:
    from lungsound.generation import DiffWave, random_crop, sample, training_loss, vocoder_mel

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--train-batch", type=int, default=32)  # the reference's effective batch (docs/methods.md section 10)
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--gpu-tflops", type=float, default=30.0,
                   help="sustained TFLOP/s assumed for the GPU estimate (fp32 convs on a current data-centre GPU)")
    args = p.parse_args()
    torch.manual_seed(0)
    model = DiffWave()
    with torch.no_grad():
        model.output_projection.weight.normal_(0, 0.01)  # a trained model's output is not zero: same cost either way
    model.eval()
    frames = int(SECONDS * RATE) // HOP + 1
    audio = torch.randn(args.batch, frames * HOP).clamp(-1, 1)
    mel = vocoder_mel(audio[:, : int(SECONDS * RATE)])
    print(f"machine: {os.cpu_count()} cores, torch {torch.__version__} ({torch.get_num_threads()} threads); DiffWave "
          f"{sum(p.numel() for p in model.parameters()):,} parameters; batch {args.batch} x {SECONDS:g} s")

    times = []
    for _ in range(args.repeats):
        t0 = time.perf_counter()
        sample(model, mel, schedule="fast", generator=torch.Generator().manual_seed(0))
        times.append(time.perf_counter() - t0)
    fast = statistics.median(times)
    audio_seconds = args.batch * frames * HOP / RATE
    print(f"6-step sampling: {fast:.1f} s for {audio_seconds:.1f} s of audio: real-time factor {fast / audio_seconds:.2f} "
          f"(one network evaluation {fast / 6:.1f} s; the 50-step schedule about {50 * fast / 6:.0f} s)")

    model.train()
    opt = torch.optim.Adam(model.parameters(), lr=2e-4)
    crops = [random_crop(audio[i % args.batch, : int(SECONDS * RATE)], mel[i % args.batch], frames=62)
             for i in range(args.train_batch)]
    a, m = torch.stack([c[0] for c in crops]), torch.stack([c[1] for c in crops])

    def step():
        opt.zero_grad(set_to_none=True)
        training_loss(model, a, m).backward()
        opt.step()

    step()
    t0 = time.perf_counter()
    for _ in range(args.repeats):
        step()
    per_step = (time.perf_counter() - t0) / args.repeats
    print(f"training: {1 / per_step:.3f} steps/s at batch {args.train_batch} x 62 frames ({per_step:.1f} s per step): "
          f"1M steps would take {1e6 * per_step / 86400:.0f} days on this CPU")

    macs = macs_per_sample()
    clip = frames * HOP
    flop_clip = 2 * macs * clip * 6
    flop_step = 3 * 2 * macs * args.train_batch * 62 * HOP
    rate = args.gpu_tflops * 1e12
    print(f"\ncompute: {macs / 1e6:.2f} M multiply-accumulates per sample and evaluation; a 4-s clip with 6 steps "
          f"{flop_clip / 1e12:.2f} TFLOP; a training step {flop_step / 1e12:.2f} TFLOP")
    print(f"estimate at {args.gpu_tflops:g} TFLOP/s sustained (a GPU; not measured here): Mixed-500 (2,000 clips) "
          f"{2000 * flop_clip / rate / 60:.1f} min, Mixed-2k (8,000 clips) {8000 * flop_clip / rate / 60:.1f} min, "
          f"1M training steps {1e6 * flop_step / rate / 3600:.1f} h")
    print(f"on this CPU: Mixed-500 about {2000 * fast / args.batch / 3600:.1f} h, Mixed-2k about "
          f"{8000 * fast / args.batch / 3600:.1f} h")


if __name__ == "__main__":
    main()
