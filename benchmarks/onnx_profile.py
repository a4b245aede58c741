"""Where the time of an ONNX model goes, per operator type (issue 11): a benchmark script, not a test.

    .venv/bin/python benchmarks/onnx_profile.py [--model EXPORTED_FOLDER_OR_ONNX ...] [--threads 2] [--runs 4]

Without `--model` it builds a random AST-base (8-s input; the speed does not depend on the weights), exports it with
`lungsound export` (fp32), and profiles three variants side by side in this run: the fp32 export, the int8 export as
`lungsound export --int8` writes it (weights of the linear layers in int8, attention in fp32), and the same with the
attention MatMuls quantised too (`MatMulConstBOnly=False`: both activations quantised at run time). ONNX Runtime's own
profiler gives each node's kernel time; the table sums them per operator type (mean per run) and gives each type's
share. This is what bounds the int8 speed-up: whatever stays in fp32 (the attention products, softmax) is not faster.
"""

from __future__ import annotations

import argparse
import collections
import json
import logging
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def profile(path: Path, x: np.ndarray, threads: int, runs: int) -> tuple[collections.Counter, float]:
    """Kernel time per operator type (ms per run) and their total."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads, options.inter_op_num_threads = threads, 1
    options.enable_profiling = True
    options.profile_file_prefix = str(path.parent / f"profile-{path.stem}")
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    feed = {session.get_inputs()[0].name: x}
    session.run(None, feed)  # the first run's allocations are part of the profile too: spread over `runs`
    for _ in range(runs - 1):
        session.run(None, feed)
    events = json.loads(Path(session.end_profiling()).read_text())
    per_op: collections.Counter = collections.Counter()
    for event in events:
        if event.get("cat") == "Node" and event["name"].endswith("_kernel_time"):
            per_op[event["args"]["op_name"]] += event["dur"] / 1000 / runs
    return per_op, sum(per_op.values())


def random_ast_exports(work: Path) -> dict[str, Path]:
    """fp32 and int8 exports of a random AST-base, and the int8 variant with quantised attention products."""
    import torch
    from onnxruntime.quantization import QuantType, quantize_dynamic

    from lungsound.config import load_config
    from lungsound.inference.onnx_export import ONNX_FILE, export_checkpoint
    from lungsound.models.build import build_model
    from lungsound.models.folder import save_model

    cfg = load_config(None, ["model.name=ast", "data.duration=8.0"])
    torch.manual_seed(0)
    checkpoint = save_model(work / "model", build_model(cfg), cfg, {"selected_epoch": 0})
    out = {}
    for int8 in (False, True):
        info = export_checkpoint(checkpoint, work / f"onnx-{int8}", int8=int8, n_check=2, log=lambda line: None)
        out["int8 (linear layers)" if int8 else "fp32"] = Path(info["folder"]) / ONNX_FILE
    attention = work / "int8-attention.onnx"
    logging.getLogger().setLevel(logging.ERROR)
    quantize_dynamic(str(out["fp32"]), str(attention), op_types_to_quantize=["MatMul", "Gemm"],
                     weight_type=QuantType.QInt8, per_channel=False, reduce_range=False,
                     extra_options={"MatMulConstBOnly": False})
    out["int8 (linear layers + attention products)"] = attention
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, action="append", default=[],
                        help="an exported folder (or .onnx file); repeat to compare (default: random AST-base)")
    parser.add_argument("--threads", type=int, default=2, help="intra-op threads (default 2)")
    parser.add_argument("--runs", type=int, default=4, help="profiled runs per model (default 4)")
    parser.add_argument("--top", type=int, default=8, help="operator types shown per model (default 8)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="lungsound-onnx-profile-") as tmp:
        work = Path(tmp)
        models = ({str(m): (m / "model.onnx" if m.is_dir() else m) for m in args.model} if args.model
                  else random_ast_exports(work))
        totals = {}
        for label, path in models.items():
            import onnx

            shape = [d.dim_value or 1 for d in onnx.load(str(path), load_external_data=False)
                     .graph.input[0].type.tensor_type.shape.dim]
            x = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
            per_op, total = profile(path, x, args.threads, args.runs)
            totals[label] = total
            print(f"\n{label}: {total:.1f} ms of kernel time per run (input {shape}, {args.threads} threads)")
            print(f"| operator | ms per run | share |\n|---|---|---|")
            for op, ms in per_op.most_common(args.top):
                print(f"| {op} | {ms:.1f} | {100 * ms / total:.1f}% |")
        first = next(iter(totals.values()))
        print("\nkernel-time ratios: " + ", ".join(f"{k} {first / v:.2f}x" for k, v in totals.items()))


if __name__ == "__main__":
    main()
