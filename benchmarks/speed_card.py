"""The performance card (issue 11): every figure of the pipeline measured side by side in one run, written as Markdown.

    .venv/bin/python benchmarks/speed_card.py [--quick] [--out docs/performance.md] [--checkpoint DIR] [--data DIR]
                                              [--only SECTION]
    make bench-speed

Sections (each figure the median of several runs, with min-max and n; every ratio is between medians of this run):
1. inference of an AST-base classifier (random weights unless --checkpoint names a trained one): per 8-s segment
   (batch 1, logits only) and per 20-s real recording (`Predictor.predict`: decode, cut, fbank, classify, calibrate),
   PyTorch fp32 vs ONNX Runtime fp32 vs ONNX Runtime int8 (`lungsound export`), the model sizes, and how often int8
   gives PyTorch's class on the segments of real recordings;
1b. OpenVINO beside PyTorch and ONNX Runtime (`benchmarks/openvino_speed.py`): fp32, bf16, int8, int8+bf16 for
   AST-base, wav2vec2-base and the smallest CNN, per segment, per recording, cold start, sizes, the CPU's instruction
   sets, and the agreement of the trained quickstart models exported to int8 (`--only openvino` runs this alone; it
   has its own time, outside the budget below);
2. cycle cutting + fbank of real recordings: a plain single-process loop over recordings and cycles (as the papers'
   code does it) vs the feature cache built cold (one process per core) and read warm;
3. an AST-base training step (batch 8, 8-s input, Adam): transformers' eager attention vs SDPA vs SDPA with
   `torch.compile`, each in its own process (with its peak memory), on the CPU and, when CUDA is present, on the GPU
   with AMP (fp16) and bf16;
4. wav2vec 2.0 base (`benchmarks/speech_speed.py`'s measurement, reused) and the DiffWave vocoder
   (`benchmarks/diffwave_speed.py`, run as it is).
Sections are skipped, saying so, when the 14-minute budget would be exceeded. `--quick` runs tiny models on two
recordings with single runs (seconds; a smoke test of this script) and writes to outputs/ instead of docs/.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import re
import resource
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
BUDGET_S = 14 * 60
START = time.perf_counter()


class Stat:
    """Run times (s) of one measurement: median, min-max, n."""

    def __init__(self, times: list[float]):
        self.times = list(times)
        self.median = statistics.median(self.times)

    def __str__(self) -> str:
        lo, hi = min(self.times), max(self.times)
        return f"{_g(self.median)} ({_g(lo)}-{_g(hi)}, n={len(self.times)})"


def _g(x: float) -> str:
    return f"{x:.3g}" if abs(x) < 1000 else f"{x:,.0f}"


def timed(fn, repeats: int, warmup: int = 1) -> Stat:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return Stat(times)


def left() -> float:
    return BUDGET_S - (time.perf_counter() - START)


def log(line: str) -> None:
    print(f"[{time.perf_counter() - START:6.0f} s] {line}", flush=True)


# ------------------------------------------------------------------------------------------------------ inference
def inference(args, root: Path, work: Path) -> list[str]:
    from lungsound.audio import audio_info
    from lungsound.config import load_config
    from lungsound.data.database import open_database
    from lungsound.inference import Predictor
    from lungsound.inference.onnx_export import check_inputs, export_checkpoint
    from lungsound.models.build import build_model
    from lungsound.models.folder import save_model

    if args.checkpoint:
        checkpoint, trained = Path(args.checkpoint), True
    else:
        name, seconds = ("ast_tiny", 2.0) if args.quick else ("ast", 8.0)
        cfg = load_config(None, [f"model.name={name}", f"data.duration={seconds}"])
        torch.manual_seed(0)
        checkpoint, trained = save_model(work / "model", build_model(cfg), cfg, {"selected_epoch": 0}), False
    folders = {"PyTorch fp32": checkpoint}
    for int8 in (False, True):
        info = export_checkpoint(checkpoint, work / f"onnx-{int8}", int8=int8, data=root, n_check=8, log=log)
        folders["ONNX Runtime " + info["precision"]] = Path(info["folder"])
    runtimes = {k: Predictor.from_checkpoint(f, runtime="torch" if k.startswith("PyTorch") else "onnx")
                for k, f in folders.items()}
    cfg = runtimes["PyTorch fp32"].cfg
    x = check_inputs(cfg, root, 1)[0]
    db = open_database(root, split=None)
    recs = [r for r in db.recordings if r.audio is not None and r.cycles]
    recs.sort(key=lambda r: (abs(audio_info(r.audio).duration - 20.0) > 0.5, abs(len(r.cycles) - 12), r.stem))
    rec = recs[0]
    reps = 1 if args.quick else 5
    rows, preds = [], {}
    for label, predictor in runtimes.items():
        segment = timed(lambda: predictor.logits(x), reps)
        whole = timed(lambda: preds.__setitem__(label, predictor.predict(rec.audio, annotation=rec.annotation)),
                      1 if args.quick else 3)
        size = sum(f.stat().st_size for f in folders[label].iterdir()
                   if f.name == ("model.safetensors" if label.startswith("PyTorch") else "model.onnx"))
        rows.append((label, size, segment, whole))
        log(f"{label}: segment {segment} s, recording {whole} s")
    base = rows[0]
    weights = f"trained: {checkpoint}" if trained else "random weights; speed does not depend on them"
    out = [f"Model: {cfg.model.name} ({weights}), {cfg.data.duration:g}-s segments, intra-op threads = "
           f"{runtimes['PyTorch fp32'].threads}. "
           f"Recording: {rec.stem} ({audio_info(rec.audio).duration:.1f} s, {len(preds['PyTorch fp32'].segments)} "
           "annotated cycles).", "",
           f"| runtime | model file | per {cfg.data.duration:g}-s segment (s) | speed-up | per recording (s) | "
           "speed-up |",
           "|---|---|---|---|---|---|"]
    for label, size, segment, whole in rows:
        out.append(f"| {label} | {size / 2**20:.1f} MB | {segment} | {base[2].median / segment.median:.2f}x | "
                   f"{whole} | {base[3].median / whole.median:.2f}x |")
    agree = []
    for i, r in enumerate(recs[:2 if args.quick else 5]):  # the timed recording's predictions are reused
        a, b = ((preds["PyTorch fp32"], preds["ONNX Runtime int8"]) if i == 0 else
                (runtimes[k].predict(r.audio, annotation=r.annotation) for k in ("PyTorch fp32", "ONNX Runtime int8")))
        agree += [max(s.probabilities, key=s.probabilities.get) == max(t.probabilities, key=t.probabilities.get)
                  for s, t in zip(a.segments, b.segments)]
    note = "" if trained else (" These are random weights, which give nearly every segment the same class: the share "
                               "is no evidence for a trained model; run with --checkpoint a trained AST-base for that.")
    out += ["", f"ONNX int8 gives PyTorch fp32's class on {100 * np.mean(agree):.1f}% of the {len(agree)} annotated "
            f"cycles of {min(len(recs), 2 if args.quick else 5)} real recordings.{note}"]
    return out


# ----------------------------------------------------------------------------------------------------- features
def features(args, root: Path, work: Path) -> list[str]:
    from lungsound.audio import load_audio
    from lungsound.data.cycles import CycleConfig, cycle_bounds, fade_recording, fix_length
    from lungsound.data.database import open_database
    from lungsound.data.cache import load_or_build
    from lungsound.features.fbank import FbankConfig, compute_features
    from lungsound.inference.batching import available_cores

    db = open_database(root, split=None)
    recs = sorted((r for r in db.recordings if r.audio is not None and r.cycles), key=lambda r: r.stem)
    recs = recs[:2] if args.quick else recs
    cycle_cfg, fbank_cfg = CycleConfig(), FbankConfig()
    n = sum(len(r.cycles) for r in recs)

    def plain():
        for rec in recs:
            x, _ = load_audio(rec.audio, 16000)
            faded = fade_recording(x, cycle_cfg)
            for c in rec.cycles:
                lo, hi = cycle_bounds(c.start, c.end, 16000, len(faded))
                compute_features(fix_length(faded[lo:max(hi, lo + 1)], cycle_cfg), fbank_cfg)

    counter = iter(range(10**6))

    def cold():
        load_or_build(root, recs, cycle_cfg, fbank_cfg, cache_dir=work / f"cache{next(counter)}", progress=False)

    def warm():
        float(np.asarray(load_or_build(root, recs, cycle_cfg, fbank_cfg, cache_dir=work / "cache0",
                                       progress=False).arrays).sum())

    reps = 1 if args.quick else 3
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        stats = {"plain loop (one process, recording by recording, cycle by cycle)": timed(plain, reps, 0),
                 f"feature cache, cold ({available_cores()} processes)": timed(cold, reps, 0),
                 "feature cache, warm (read back, memory-mapped)": timed(warm, reps, 0)}
    first = next(iter(stats.values())).median
    out = [f"{len(recs)} real recordings, {n} cycles, 8-s cycles, 128-band Kaldi fbank.", "",
           "| method | time (s) | cycles per second | vs plain loop |", "|---|---|---|---|"]
    out += [f"| {k} | {s} | {n / s.median:,.0f} | {first / s.median:.1f}x |" for k, s in stats.items()]
    return out


# --------------------------------------------------------------------------------------------------- train step
def train_child(spec: dict) -> dict:
    """One training-step configuration in this process: its run times and peak memory."""
    from lungsound.models import create_model, frames_for_duration

    device = torch.device(spec["device"])
    torch.manual_seed(0)
    model = create_model(spec["model"], attn_implementation=spec["attn"],
                         input_frames=frames_for_duration(spec["seconds"])).to(device).train()
    step_model = torch.compile(model) if spec["compile"] else model
    opt = torch.optim.Adam(model.parameters(), lr=1e-5)
    x = torch.randn(spec["batch"], frames_for_duration(spec["seconds"]), 128, device=device)
    y = torch.arange(spec["batch"], device=device) % 4
    amp = {"fp16": torch.float16, "bf16": torch.bfloat16}.get(spec["amp"])
    scaler = torch.amp.GradScaler("cuda", enabled=spec["amp"] == "fp16")

    def step():
        opt.zero_grad(set_to_none=True)
        with torch.autocast(device.type, dtype=amp, enabled=amp is not None):
            loss = torch.nn.functional.cross_entropy(step_model(x), y)
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()
        if device.type == "cuda":
            torch.cuda.synchronize()

    t0 = time.perf_counter()
    step()
    first = time.perf_counter() - t0
    stat = timed(step, spec["repeats"], warmup=1 if spec["compile"] else 0)
    peak = (torch.cuda.max_memory_allocated() if device.type == "cuda"
            else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)
    return {"times": stat.times, "first": first, "peak_gb": peak / 2**30}


def train_steps(args) -> list[str]:
    model, batch, seconds = ("ast_tiny", 2, 2.0) if args.quick else ("ast", 8, 8.0)
    columns = [("cpu", None)]
    if torch.cuda.is_available():
        columns += [("cuda", "fp16")] + ([("cuda", "bf16")] if torch.cuda.is_bf16_supported() else [])
    rows = [("eager", False), ("sdpa", False)] + ([] if args.quick else [("sdpa", True)])  # compiling takes a minute
    results = {}
    for device, amp in columns:
        for attn, compiled in rows:
            if left() < (60 if args.quick or device == "cuda" else 240):
                results[(device, amp, attn, compiled)] = "skipped: time budget"
                continue
            spec = dict(model=model, attn=attn, compile=compiled, device=device, amp=amp, batch=batch, seconds=seconds,
                        repeats=1 if args.quick else (10 if device == "cuda" else 3))
            res = subprocess.run([sys.executable, __file__, "--child", json.dumps(spec)], capture_output=True,
                                 text=True, cwd=REPO)
            found = [line for line in res.stdout.splitlines() if line.startswith("RESULT ")]
            if res.returncode or not found:
                tail = (res.stderr.strip().splitlines() or ["no output"])[-1]
                results[(device, amp, attn, compiled)] = f"did not work: {tail[:160]}"
            else:
                results[(device, amp, attn, compiled)] = json.loads(found[-1][7:])
            log(f"train step {device} {amp or 'fp32'} {attn}{' compiled' if compiled else ''}: "
                f"{results[(device, amp, attn, compiled)]}")
    names = {("cpu", None): "CPU fp32", ("cuda", "fp16"): "GPU AMP fp16", ("cuda", "bf16"): "GPU bf16"}
    head = " | ".join(f"{names[c]} s/step | vs eager | peak GB" for c in columns)
    out = [f"{model}, batch {batch} x {seconds:g}-s input, Adam, cross-entropy; compiled: first step (compilation) "
           "excluded, shown under the table.", "", f"| attention | {head} |", "|---|" + "---|---|---|" * len(columns)]
    for attn, compiled in rows:
        cells = []
        for device, amp in columns:
            r, ref = results[(device, amp, attn, compiled)], results[(device, amp, "eager", False)]
            if isinstance(r, str):
                cells += [r, "", ""]
                continue
            s = Stat(r["times"])
            ratio = f"{Stat(ref['times']).median / s.median:.2f}x" if isinstance(ref, dict) else ""
            cells += [str(s), ratio, f"{r['peak_gb']:.1f}"]
        out.append(f"| {'SDPA + torch.compile' if compiled else attn.upper() if attn == 'sdpa' else attn} | "
                   + " | ".join(cells) + " |")
    firsts = [f"{names[(d, a)]} {r['first']:.0f} s" for (d, a, _, c), r in results.items()
              if c and isinstance(r, dict)]
    if firsts:
        out += ["", "First (compiling) step of torch.compile: " + ", ".join(firsts) + "."]
    return out


# ------------------------------------------------------------------------------------------- speech and vocoder
def _script(name: str):
    spec = importlib.util.spec_from_file_location(f"bench_{name}", REPO / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def generators(args) -> list[str]:
    if left() < 90:
        return ["Skipped: the time budget was used up."]
    speech = _script("speech_speed")
    samples: list[list[float]] = []

    def keep(fn, repeats):  # speech_speed's own scheme (a warm-up, then `repeats` runs), its run times kept
        fn()
        samples.append([])
        for _ in range(repeats):
            t0 = time.perf_counter()
            fn()
            samples[-1].append(time.perf_counter() - t0)
        return statistics.median(samples[-1])

    speech._timed = keep
    name = "wav2vec2_tiny" if args.quick else "wav2vec2_base"
    res = speech.bench_model(name, "sdpa", 2, 1 if args.quick else 3)
    b1, b8, train = (Stat(s) for s in samples)
    out = [f"{name} ({res['params_m']:.1f} M parameters, SDPA, 8-s cycles, as `benchmarks/speech_speed.py` "
           "measures it):",
           "", "| measure | s |", "|---|---|", f"| inference, batch 1, per cycle | {b1} |",
           f"| inference, batch 8, per cycle | {Stat([t / 8 for t in b8.times])} |",
           f"| train step, batch 2 | {train} |", ""]
    if args.quick or left() < 120:
        return out + ["DiffWave vocoder: skipped " + ("in --quick mode." if args.quick else "(time budget).")]
    res = subprocess.run([sys.executable, str(REPO / "benchmarks" / "diffwave_speed.py"), "--batch", "1",
                          "--train-batch", "2", "--repeats", "3"], capture_output=True, text=True, cwd=REPO)
    rtf = re.search(r"real-time factor ([\d.]+)", res.stdout)
    out.append(f"DiffWave vocoder (full size, `benchmarks/diffwave_speed.py --batch 1 --train-batch 2 --repeats 3`, "
               f"its own medians): 6-step sampling real-time factor {rtf.group(1) if rtf else 'n/a'}.")
    return out + ["", "```", *res.stdout.strip().splitlines(), "```"]


# ---------------------------------------------------------------------------------------------------------- card
def machine() -> list[str]:
    import onnxruntime
    import openvino
    import transformers

    from lungsound import __version__
    from lungsound.inference.batching import available_cores, available_memory

    cpu = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")),
               platform.processor() or platform.machine()) if Path("/proc/cpuinfo").exists() else platform.machine()
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none"
    return [f"- machine: {cpu}, {available_cores()} cores, {available_memory() / 2**30:.0f} GB available, GPU: {gpu}",
            f"- versions: Python {platform.python_version()}, torch {torch.__version__}, transformers "
            f"{transformers.__version__}, onnxruntime {onnxruntime.__version__}, openvino {openvino.__version__}, "
            f"lungsound {__version__}",
            f"- date: {time.strftime('%Y-%m-%d %H:%M')}; load average at start "
            f"{', '.join(f'{v:.1f}' for v in os.getloadavg())}"]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="tiny models, single runs: a smoke test of this script")
    p.add_argument("--out", type=Path, help="the card (default docs/performance.md; outputs/ with --quick)")
    p.add_argument("--checkpoint", help="a trained model folder for the inference section (default: random AST-base)")
    p.add_argument("--data", type=Path,
                   help="ICBHI-format folder (default ../shared/data/icbhi, else the built-in set)")
    p.add_argument("--only", choices=("openvino",), help="run only this section (printed, written to --out if given)")
    p.add_argument("--child", help=argparse.SUPPRESS)
    openvino_speed = _script("openvino_speed")
    openvino_speed.add_options(p)
    args = p.parse_args()
    if args.child:
        print("RESULT " + json.dumps(train_child(json.loads(args.child))), flush=True)
        return
    from lungsound.data.default import ensure_default_data

    shared = REPO.parent / "shared" / "data" / "icbhi"
    root = args.data or (shared if shared.is_dir() else ensure_default_data())
    out = args.out or (REPO / "outputs" / ("performance-quick.md" if args.quick else "performance-openvino.md")
                       if args.quick or args.only else REPO / "docs" / "performance.md")
    # Run order: the acceptance figure (inference) first, torch.compile (the slowest, least needed) last; the card
    # lists the sections in the pipeline's order.
    sections = [("Inference: PyTorch vs ONNX Runtime", inference, (root,)),
                ("Cycle cutting and fbank", features, (root,)),
                ("Speech model and vocoder", generators, ()),
                ("AST training step: attention implementations", train_steps, ()),
                ("Inference: OpenVINO beside PyTorch and ONNX Runtime", openvino_speed.openvino_section, (root,))]
    order = [4] if args.only == "openvino" else [1, 3, 0, 2, 4]
    sections = [sections[i] for i in sorted(set(order))] if args.only else sections
    order = list(range(len(sections))) if args.only else order
    done: dict[str, list[str]] = {}
    with tempfile.TemporaryDirectory(prefix="speed-card-") as tmp:
        for title, fn, extra in sections:
            log(f"section: {title}")
            try:
                lines = fn(args, *extra, Path(tmp)) if extra else fn(args)
            except Exception as exc:  # one section failing still leaves a card with the others
                lines = [f"Not measured: {type(exc).__name__}: {(str(exc).splitlines() or [''])[0][:300]}"]
            done[title] = lines
            print("\n".join(lines), flush=True)
    body = []
    for i in order:
        body += [f"## {sections[i][0]}", "", *done[sections[i][0]], ""]
    total = time.perf_counter() - START
    command = ("python benchmarks/speed_card.py --quick" if args.quick else "make bench-openvino" if args.only
               else "make bench-speed")
    card = ["# Performance card" + (" (quick smoke run: tiny models, single runs)" if args.quick else ""), "",
            f"Written by `{command}` in "
            f"{total / 60:.1f} minutes. Each figure is the median of n runs with the min-max in brackets; every ratio "
            "is between medians measured in this same run, on this machine:", "", *machine(), "", *body]
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(card).rstrip() + "\n")
    log(f"wrote {out}")


if __name__ == "__main__":
    main()
