"""`lungsound export`: a trained classifier as a self-contained ONNX model folder for fast CPU inference.

    lungsound export --checkpoint DIR | --run-id ID [--int8] [--out DIR] [--check-data DIR] [--check-cycles N]
                     [--min-agreement 0.95] [--no-torch-weights]

Writes `model.onnx` (fp32, or int8 with `--int8`), the checkpoint's `config.yaml` and `meta.json`, its PyTorch weights
(for explanations; not with `--no-torch-weights`) and `export.json`, after checking the exported model against
PyTorch on real cycles (`lungsound.inference.onnx_export`). The folder defaults to `<checkpoint>-onnx[-int8]` beside
the checkpoint, or `outputs/exported/<run id>/onnx[-int8]` for an MLflow run. Use it with
`lungsound predict --checkpoint FOLDER --runtime onnx` or pick it in the app.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from lungsound.inference.onnx_export import CHECK_CYCLES, MIN_AGREEMENT


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("export", help="export a trained classifier to ONNX (optionally int8) for fast CPU inference")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--checkpoint", type=Path, help="a model folder (model.safetensors, config.yaml, meta.json)")
    src.add_argument("--run-id", help="an MLflow run id, runs:/<id>/model or models:/<name>/<version|latest>")
    p.add_argument("--int8", action="store_true", help="quantise the linear layers' weights to int8 (dynamic)")
    p.add_argument("--out", type=Path, help="the folder to write (default <checkpoint>-onnx[-int8]): new, empty, or an "
                                          "earlier export (replaced); never the checkpoint or a folder holding it")
    p.add_argument("--check-data", type=Path, metavar="DIR",
                   help="ICBHI-format folder whose cycles check the export (default: the model's training data, "
                        "else the built-in set)")
    p.add_argument("--check-cycles", type=int, default=CHECK_CYCLES, metavar="N",
                   help=f"cycles in the check (default {CHECK_CYCLES})")
    p.add_argument("--min-agreement", type=float, default=MIN_AGREEMENT, metavar="SHARE",
                   help=f"int8: fail when fewer check cycles get PyTorch's class (default {MIN_AGREEMENT})")
    p.add_argument("--no-torch-weights", action="store_true",
                   help="leave out the PyTorch weights: a smaller folder, but the app cannot explain its segments")
    p.set_defaults(handler=run_export)


def run_export(args: argparse.Namespace) -> int:
    from lungsound.inference.onnx_export import export_checkpoint

    options = dict(int8=args.int8, data=args.check_data, n_check=args.check_cycles, min_agreement=args.min_agreement,
                   torch_weights=not args.no_torch_weights, log=lambda line: print(line, flush=True))
    if args.checkpoint is not None:
        info = export_checkpoint(args.checkpoint, args.out, **options)
    else:
        from lungsound.inference.predictor import resolve_model_uri
        from lungsound.tracking import download_artifacts

        run_id, artifact = resolve_model_uri(args.run_id)
        out = args.out or Path("outputs") / "exported" / run_id / ("onnx-int8" if args.int8 else "onnx")
        with tempfile.TemporaryDirectory(prefix="lungsound-export-") as tmp:
            folder = download_artifacts(run_id, artifact, tmp)
            info = export_checkpoint(folder, out, source=f"runs:/{run_id}/{artifact}", **options)
    sizes = info["sizes_bytes"]
    extra = (f"; PyTorch weights {sizes['model.safetensors'] / 2**20:.1f} MB kept for explanations"
             if "model.safetensors" in sizes else "; no PyTorch weights: no explanations")
    print(f"exported {info['model']} as {info['precision']} ONNX: {info['folder']} (model.onnx "
          f"{sizes['model.onnx'] / 2**20:.1f} MB{extra})")
    print(f"use it: lungsound predict FILE --checkpoint {info['folder']} --runtime onnx")
    return 0
