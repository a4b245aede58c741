"""`lungsound export`: a trained classifier as a self-contained model folder for another runtime, e.g. ONNX or OpenVINO
for fast CPU inference.

    lungsound export --checkpoint DIR | --run-id ID [--format onnx|openvino] [--int8] [--precision f32|bf16|auto]
                     [--calibration DIR|builtin] [--calibration-cycles 300] [--out DIR] [--check-data DIR]
                     [--check-cycles N] [--min-agreement 0.95] [--no-torch-weights]

`--format` is one of the registered runtimes that export (`lungsound.inference.runtimes`; `onnx` by default). For
ONNX it writes `model.onnx` (fp32, or int8 with `--int8`), the checkpoint's `config.yaml` and `meta.json`, its PyTorch
weights (for explanations; not with `--no-torch-weights`) and `export.json`, after checking the exported model
against PyTorch on real cycles (`lungsound.inference.onnx_export`). For OpenVINO it writes `model.xml` and
`model.bin` besides (`lungsound.inference.openvino_export`): `--int8` is NNCF's calibrated post-training
quantisation (`--calibration`, `--calibration-cycles`), `--precision` the compute precision of the float layers.
An option a format's exporter does not take (`--precision` for onnx) is a one-line error when given. The folder
defaults to `<checkpoint>-<format>[-int8]` beside the checkpoint (`-bf16` added for a bf16 OpenVINO export), or
`outputs/exported/<run id>/<format>[-int8]` for an MLflow run. Use it with
`lungsound predict --checkpoint FOLDER --runtime <format>` or pick it in the app.
"""

from __future__ import annotations

import argparse
import inspect
from pathlib import Path

from lungsound.cli.model_source import add_model_options, model_reference
from lungsound.errors import LungsoundError
from lungsound.inference import RUNTIMES, open_source
from lungsound.inference.onnx_export import CHECK_CYCLES, MIN_AGREEMENT
from lungsound.inference.onnx_folder import NOT_WEIGHTS
from lungsound.inference.openvino_calibration import CALIBRATION_CYCLES
from lungsound.inference.openvino_folder import CHOICES
from lungsound.inference.runtimes import export_formats
from lungsound.models.folder import MODEL_FILE

DEFAULT_FORMAT = "onnx"


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("export", help="export a trained classifier to ONNX or OpenVINO (optionally int8) for fast CPU "
                                      "inference")
    add_model_options(p)
    p.add_argument("--format", choices=export_formats(), default=DEFAULT_FORMAT,
                   help=f"the runtime to export for (default {DEFAULT_FORMAT})")
    p.add_argument("--int8", action="store_true",
                   help="quantise to int8: onnx, the linear layers' weights (dynamic); openvino, NNCF's calibrated "
                        "post-training quantisation (static scales)")
    p.add_argument("--precision", choices=CHOICES, default=None,
                   help="openvino: compute precision of the float layers; auto is bf16 on a CPU with native bf16 "
                        "(AVX512-BF16 or AMX), else f32 (default f32)")
    p.add_argument("--calibration", metavar="DIR|builtin",
                   help="openvino --int8: ICBHI-format folder (or 'builtin') whose cycles calibrate the int8 scales "
                        "(default: the model's training data)")
    p.add_argument("--calibration-cycles", type=int, default=None, metavar="N",
                   help=f"openvino --int8: calibration cycles, drawn with a fixed seed (default {CALIBRATION_CYCLES})")
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
    options.update(_format_options(args, runtime))
    with open_source(*model_reference(args)) as source:
        if source.temporary:  # a downloaded copy: the export goes under outputs/, named by its run
            name = args.format + ("-int8" if args.int8 else "")
            out = args.out or Path("outputs") / "exported" / source.run_id / name
            info = runtime.export(source.folder, out, source=source.uri, **options)
        else:  # beside the checkpoint by default (the exporter's `default_out`)
            info = runtime.export(source.folder, args.out, **options)
    sizes = info["sizes_bytes"]
    model_files = [name for name in runtime.files if name in sizes and name not in NOT_WEIGHTS + (MODEL_FILE,)]
    extra = (f"; PyTorch weights {sizes[MODEL_FILE] / 2**20:.1f} MB kept for explanations" if MODEL_FILE in sizes
             else "; no PyTorch weights: no explanations")
    print(f"exported {info['model']} as {info['precision']} {runtime.title}: {info['folder']} "
          f"({' + '.join(model_files)} {sum(sizes[n] for n in model_files) / 2**20:.1f} MB{extra})")
    print(f"use it: lungsound predict FILE --checkpoint {info['folder']} --runtime {runtime.name}")
    return 0


FORMAT_OPTIONS = {"precision": "--precision", "calibration": "--calibration",
                  "calibration_cycles": "--calibration-cycles"}  # taken by some exporters only


def _format_options(args: argparse.Namespace, runtime) -> dict:
    """The given options of `FORMAT_OPTIONS` for the format's exporter; one it does not take is a one-line error."""
    takes = inspect.signature(runtime.export).parameters
    given = {key: getattr(args, key) for key in FORMAT_OPTIONS if getattr(args, key) is not None}
    for key in given:
        if key not in takes:
            raise LungsoundError(f"{FORMAT_OPTIONS[key]} is not an option of --format {runtime.name}")
    return given
