"""OpenVINO beside PyTorch and ONNX Runtime (issue 21): speed per 8-s segment and per 20-s real recording, cold start,
model file sizes, the CPU's instruction sets, and class agreement with PyTorch fp32 on real recordings.

    .venv/bin/python benchmarks/openvino_speed.py [--quick] [--models ast,wav2vec2_base,smallest-cnn]
                                                 [--quickstart DIR ...] [--data DIR] [--calibration-cycles N]
    flock /tmp/lungsound-heavy.lock .venv/bin/python benchmarks/speed_card.py --only openvino

For each model (random weights: speed does not depend on them) every runtime's folder is written by `lungsound
export` itself: ONNX fp32 and int8, OpenVINO fp32 and int8 (NNCF, calibrated on real cycles), and the bf16 and
int8+bf16 folders (the same graphs with export.json's precision set to bf16: what `--precision bf16` writes, without
re-running the conversion). Each runs through `Predictor` as a user would: per segment is `Predictor.logits` of one
8-s segment (batch 1), per recording `Predictor.predict` of the real recording nearest 20 s with its annotated cycles
(decode, cut, fbank, classify, calibrate), cold start a fresh process's `Predictor.from_checkpoint` and first
prediction (imports excluded). The agreement of the trained quickstart models (`outputs/quickstart/*/best`, or
--quickstart) exported to OpenVINO int8 with their PyTorch fp32 classes is over the annotated cycles of the real
recordings. The targets of issue 21 (AST-base, 2 cores: int8 >= 5x, bf16 >= 3x on the recording; >= 99% same class;
cold start no slower than PyTorch's) are printed beside the figures, never asserted.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))
from speed_card import log, timed  # noqa: E402  (the card's own timing and log)

MODELS = ("ast", "wav2vec2_base", "smallest-cnn")
COLD = ("import sys, time\nfrom lungsound.inference import Predictor\nt = time.perf_counter()\n"
        "p = Predictor.from_checkpoint(sys.argv[1], runtime=sys.argv[2])\n"
        "p.predict(sys.argv[3], annotation=sys.argv[4])\nprint('COLD', time.perf_counter() - t)\n")


def smallest_cnn() -> str:
    """The registered CNN (a Grad-CAM model) with the fewest parameters at its defaults."""
    from lungsound.config import load_config
    from lungsound.models.build import build_model
    from lungsound.models.registry import MODELS as REGISTRY

    sizes = {}
    for name, spec in REGISTRY.items():
        if spec.explanation == "grad-cam":
            model = build_model(load_config(None, [f"model.name={name}"]))
            sizes[name] = sum(p.numel() for p in model.parameters())
    return min(sizes, key=sizes.get)


def random_checkpoint(name: str, work: Path, quick: bool) -> Path:
    from lungsound.config import load_config
    from lungsound.models.build import build_model
    from lungsound.models.folder import save_model
    from lungsound.models.registry import model_spec

    seconds = 2.0 if quick else 8.0
    extra = ["data.input=waveform", "augment.specaug=false"] if model_spec(name).input == "waveform" else []
    cfg = load_config(None, [f"model.name={name}", f"data.duration={seconds}"] + extra)
    torch.manual_seed(0)
    return save_model(work / name / "best", build_model(cfg).eval(), cfg, {"selected_epoch": 0})


def folders(checkpoint: Path, root: Path, calibration_cycles: int) -> dict[str, tuple[Path, str]]:
    """{label: (folder, runtime)} of every runtime's export of `checkpoint` (see the module docstring)."""
    from lungsound.inference.onnx_export import export_checkpoint
    from lungsound.inference.openvino_export import export_openvino

    out = {"PyTorch fp32": (checkpoint, "torch")}
    for int8 in (False, True):
        info = export_checkpoint(checkpoint, int8=int8, data=root, n_check=8, log=log)
        out[f"ONNX Runtime {info['precision']}"] = (Path(info["folder"]), "onnx")
    for int8 in (False, True):
        info = export_openvino(checkpoint, int8=int8, data=root, calibration_cycles=calibration_cycles, n_check=16,
                               log=log)
        folder = Path(info["folder"])
        out[f"OpenVINO {info['precision']}"] = (folder, "openvino")
        bf16 = shutil.copytree(folder, folder.with_name(folder.name + "-bf16"), dirs_exist_ok=True)
        made = json.loads((bf16 / "export.json").read_text())
        made.update(precision="int8+bf16" if int8 else "bf16", inference_precision="bf16")
        (bf16 / "export.json").write_text(json.dumps(made, indent=2))
        out[f"OpenVINO {made['precision']}"] = (bf16, "openvino")
    order = ["PyTorch fp32", "ONNX Runtime fp32", "ONNX Runtime int8", "OpenVINO fp32", "OpenVINO bf16",
             "OpenVINO int8", "OpenVINO int8+bf16"]
    return {k: out[k] for k in order}


def model_size(folder: Path, runtime: str) -> int:
    from lungsound.inference import RUNTIMES
    from lungsound.inference.onnx_folder import NOT_WEIGHTS
    from lungsound.models.folder import MODEL_FILE

    names = RUNTIMES.get(runtime).files
    weights = [n for n in names if n not in NOT_WEIGHTS and (runtime == "torch" or n != MODEL_FILE)]
    return sum((folder / n).stat().st_size for n in weights if (folder / n).is_file())


def cold_start(folder: Path, runtime: str, rec) -> float:
    done = subprocess.run([sys.executable, "-c", COLD, str(folder), runtime, str(rec.audio), str(rec.annotation)],
                          capture_output=True, text=True, cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)})
    found = [line for line in done.stdout.splitlines() if line.startswith("COLD ")]
    return float(found[-1].split()[1]) if found else float("nan")


def recordings(root: Path) -> list:
    from lungsound.audio import audio_info
    from lungsound.data.database import open_database

    recs = [r for r in open_database(root, split=None).recordings if r.audio is not None and r.cycles]
    recs.sort(key=lambda r: (abs(audio_info(r.audio).duration - 20.0) > 0.5, abs(len(r.cycles) - 12), r.stem))
    return recs


def classes(pred) -> list[str]:
    return [max(s.probabilities, key=s.probabilities.get) for s in pred.segments]


def model_rows(name: str, root: Path, work: Path, args) -> list[str]:
    from lungsound.audio import audio_info
    from lungsound.inference import Predictor
    from lungsound.inference.onnx_export import check_inputs

    checkpoint = random_checkpoint(name, work, args.quick)
    made = folders(checkpoint, root, args.calibration_cycles)
    predictors = {k: Predictor.from_checkpoint(f, runtime=r) for k, (f, r) in made.items()}
    cfg = predictors["PyTorch fp32"].cfg
    x = check_inputs(cfg, root, 1)[0]
    recs = recordings(root)
    rec = recs[0]
    reps = 1 if args.quick else 5
    rows, preds = [], {}
    for label, predictor in predictors.items():
        segment = timed(lambda: predictor.logits(x), reps)
        whole = timed(lambda: preds.__setitem__(label, predictor.predict(rec.audio, annotation=rec.annotation)),
                      1 if args.quick else 3)
        cold = cold_start(*made[label], rec)
        rows.append((label, model_size(*made[label]), segment, whole, cold))
        log(f"{name} {label}: segment {segment} s, recording {whole} s, cold start {cold:.2f} s")
    base = rows[0]
    out = [f"### {name} ({sum(p.numel() for p in predictors['PyTorch fp32'].model.parameters()) / 1e6:.1f} M "
           f"parameters, random weights)", "",
           f"Recording: {rec.stem} ({audio_info(rec.audio).duration:.1f} s, {len(preds['PyTorch fp32'].segments)} "
           f"annotated cycles); intra-op threads = {predictors['PyTorch fp32'].threads}.", "",
           f"| runtime | model file | per {cfg.data.duration:g}-s segment (s) | speed-up | per recording (s) "
           "| speed-up | cold start (s) | same class as PyTorch |", "|---|---|---|---|---|---|---|---|"]
    for label, size, segment, whole, cold in rows:
        same = np.mean([a == b for a, b in zip(classes(preds[label]), classes(preds["PyTorch fp32"]))])
        out.append(f"| {label} | {size / 2**20:.1f} MB | {segment} | {base[2].median / segment.median:.2f}x | {whole} "
                   f"| {base[3].median / whole.median:.2f}x | {cold:.2f} | {100 * same:.0f}% |")
    if name == "ast":
        speed = {label: base[3].median / whole.median for label, _, _, whole, _ in rows}
        fastest_int8 = max(speed["OpenVINO int8"], speed["OpenVINO int8+bf16"])
        out += ["", f"Targets (AST-base, 20-s recording): OpenVINO int8 >= 5x: {fastest_int8:.2f}x "
                f"({'met' if fastest_int8 >= 5 else 'not met'}); bf16 >= 3x: {speed['OpenVINO bf16']:.2f}x "
                f"({'met' if speed['OpenVINO bf16'] >= 3 else 'not met'}); cold start no slower than PyTorch's "
                f"({base[4]:.2f} s): OpenVINO int8 {rows[5][4]:.2f} s "
                f"({'met' if rows[5][4] <= base[4] else 'not met'})."]
    return out + [""]


def quickstart_agreement(paths: list[Path], root: Path, work: Path, quick: bool) -> list[str]:
    from lungsound.inference import Predictor
    from lungsound.inference.openvino_export import export_openvino

    if not paths:
        return ["No trained quickstart model found (outputs/quickstart/*/best): run `make quickstart`, then this "
                "benchmark, for the agreement of a trained model exported to OpenVINO int8."]
    out = ["| trained model | OpenVINO int8: same class as PyTorch fp32 | cycles | recordings |", "|---|---|---|---|"]
    for path in paths:
        info = export_openvino(path, work / f"qs-{path.parent.name}", int8=True, min_agreement=0.0, log=log)
        a, b = Predictor.from_checkpoint(path, runtime="torch"), Predictor.from_checkpoint(info["folder"])
        same, recs = [], recordings(root)[:2 if quick else None]
        for rec in recs:
            same += [s == t for s, t in zip(classes(a.predict(rec.audio, annotation=rec.annotation)),
                                            classes(b.predict(rec.audio, annotation=rec.annotation)))]
        out.append(f"| {path} | {100 * np.mean(same):.1f}% (target >= 99%) | {len(same)} | {len(recs)} |")
    return out


def cpu_lines() -> list[str]:
    from lungsound.inference.openvino_folder import cpu_instructions, native_bf16

    cpu = cpu_instructions()
    return [f"CPU: {cpu['device']}; instruction sets for inference: {', '.join(cpu['flags'] or ['unknown'])}; "
            f"OpenVINO's CPU capabilities: {', '.join(cpu['openvino_capabilities'])}; native bf16: "
            f"{native_bf16()[1]}.", ""]


def openvino_section(args, root: Path, work: Path) -> list[str]:
    """The card's OpenVINO section (benchmarks/speed_card.py calls it)."""
    names = [smallest_cnn() if m == "smallest-cnn" else m for m in args.models.split(",")]
    if args.quick:
        names = [{"ast": "ast_tiny", "wav2vec2_base": "wav2vec2_tiny"}.get(n, n) for n in names]
    out = cpu_lines()
    for name in names:
        out += model_rows(name, root, work, args)
    quickstart = [Path(p) for p in args.quickstart] if args.quickstart else sorted(
        (REPO / "outputs" / "quickstart").glob("*/best"))
    return out + ["### Trained models exported to OpenVINO int8", "",
                  *quickstart_agreement(quickstart, root, work, args.quick)]


def add_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--models", default=",".join(MODELS), help="comma-separated model names (default: %(default)s)")
    p.add_argument("--quickstart", nargs="*", help="trained model folders for the agreement (default: "
                                                   "outputs/quickstart/*/best)")
    p.add_argument("--calibration-cycles", type=int, default=64,
                   help="int8 calibration cycles of the random-weight models (default 64: speed does not depend on "
                        "them; the trained models use the export's default, 300)")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="tiny models, single runs: a smoke test")
    p.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data" / "icbhi")
    add_options(p)
    args = p.parse_args()
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="openvino-speed-") as tmp:
        print("\n".join(openvino_section(args, args.data, Path(tmp))))
    log(f"done in {(time.perf_counter() - t0) / 60:.1f} min")


if __name__ == "__main__":
    main()
