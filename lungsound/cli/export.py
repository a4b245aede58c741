"""`lungsound export`: a trained classifier as a self-contained model folder for another runtime, e.g. ONNX for fast CPU
inference.

    lungsound export --checkpoint DIR | --run-id ID [--format onnx] [--int8] [--out DIR] [--check-data DIR]
                     [--check-cycles N] [--min-agreement 0.95] [--no-torch-weights]

`--format` is one of the registered runtimes that export (`lungsound.inference.runtimes`; `onnx` by default). For
ONNX it writes `model.onnx` (fp32, or int8 with `--int8`), the checkpoint's `config.yaml` and `meta.json`, its PyTorch
weights (for explanations; not with `--no-torch-weights`) and `export.json`, after checking the exported model
against PyTorch on real cycles (`lungsound.inference.onnx_export`). The folder defaults to
`<checkpoint>-<format>[-int8]` beside the checkpoint, or `outputs/exported/<run id>/<format>[-int8]` for an MLflow
run. Use it with `lungsound predict --checkpoint FOLDER --runtime <format>` or pick it in the app.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from lungsound.cli.model_source import add_model_options, model_reference
from lungsound.inference import RUNTIMES, open_source
from lungsound.inference.onnx_export import CHECK_CYCLES, MIN_AGREEMENT
from lungsound.inference.runtimes import export_formats
from lungsound.models.folder import MODEL_FILE

DEFAULT_FORMAT = "onnx"


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("export", help="export a trained classifier to ONNX (optionally int8) for fast CPU inference")
    add_model_options(p)
    p.add_argument("--format", choices=export_formats(), default=DEFAULT_FORMAT,
                   help=f"the runtime to export for (default {DEFAULT_FORMAT})")
    p.add_argument("--int8", action="store_true", help="quantise the linear layers' weights to int8 (dynamic)")
    p.add_argument("--out", type=Path, help="the folder to write (default <checkpoint>-<format>[-int8]): new, empty, "
                                          "or an earlier export (replaced); never the checkpoint or a folder holding it")
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
    runtime = RUNTIMES.get(args.format)
    options = dict(int8=args.int8, data=args.check_data, n_check=args.check_cycles, min_agreement=args.min_agreement,
                   torch_weights=not args.no_torch_weights, log=lambda line: print(line, flush=True))
    with open_source(*model_reference(args)) as source:
        if source.temporary:  # a downloaded copy: the export goes under outputs/, named by its run
            name = args.format + ("-int8" if args.int8 else "")
            out = args.out or Path("outputs") / "exported" / source.run_id / name
            info = runtime.export(source.folder, out, source=source.uri, **options)
        else:  # beside the checkpoint by default (the exporter's `default_out`)
            info = runtime.export(source.folder, args.out, **options)
    sizes = info["sizes_bytes"]
    model_file = runtime.files[0]
    extra = (f"; PyTorch weights {sizes[MODEL_FILE] / 2**20:.1f} MB kept for explanations" if MODEL_FILE in sizes
             else "; no PyTorch weights: no explanations")
    print(f"exported {info['model']} as {info['precision']} {runtime.title}: {info['folder']} ({model_file} "
          f"{sizes[model_file] / 2**20:.1f} MB{extra})")
    print(f"use it: lungsound predict FILE --checkpoint {info['folder']} --runtime {runtime.name}")
    return 0
