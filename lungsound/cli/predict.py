"""`lungsound predict`: classify whole recordings with a trained model (`lungsound.inference.Predictor`).

`--runtime onnx` runs the `model.onnx` of a folder written by `lungsound export` with ONNX Runtime (fp32 or int8).
`--model` takes a model folder or a Hugging Face hub id `USER/NAME[@revision]` pushed by `lungsound push` (downloaded
once into the hub cache, offline afterwards; an existing path wins, `hf://USER/NAME` forces the hub); without
`--runtime` it runs an exported folder with ONNX Runtime and any other with PyTorch (docs/sharing.md).

Output goes to stdout only: a readable summary per file (default), `--json` (a list with one `Prediction.to_dict()` per
file) or `--csv` (one row per segment: file, start, end, normal, crackle, wheeze, both). File names are printed escaped
(`lungsound.errors.display_path`: a terminal escape sequence shows as ``\x1b[...``) in the summary, the CSV and on
stderr; JSON escapes them itself. A file that cannot be analysed
is reported on stderr in one line (``lungsound: error: <file>: <problem>``), whatever went wrong (an unforeseen exception
too, named by its type); the other files are still processed, their results printed, and the exit code is 2 at the end.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from pathlib import Path

from lungsound.data.labels import CLASSES
from lungsound.errors import LungsoundError, display_path, os_error_message, printable


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("predict", help="classify the breathing cycles of whole recordings with a trained model")
    p.add_argument("files", nargs="+", type=Path, metavar="FILE", help="audio files (wav, flac, ogg, ...)")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--checkpoint", type=Path, help="a model folder (model.safetensors, config.yaml, meta.json)")
    src.add_argument("--run-id", help="an MLflow run id, runs:/<id>/model or models:/<name>/<version|latest>")
    src.add_argument("--model", metavar="ID_OR_FOLDER",
                     help="a model folder or a Hugging Face hub id USER/NAME[@revision] (see docs/sharing.md)")
    p.add_argument("--annotation", choices=("auto", "none"), default="auto",
                   help="auto: use an ICBHI <stem>.txt next to the audio when present (default); none: ignore it")
    p.add_argument("--segmentation", choices=("auto", "cycles", "breath", "windows"), default="auto",
                   help="auto: annotated cycles, else detected breathing cycles, else sliding windows")
    p.add_argument("--max-seconds", type=float, default=120.0, help="refuse longer recordings (default 120)")
    p.add_argument("--runtime", choices=("torch", "onnx"), default=None,
                   help="torch: the PyTorch model (default); onnx: the model.onnx of a folder from `lungsound export` "
                        "(default with --model when the folder is one)")
    fmt = p.add_mutually_exclusive_group()
    fmt.add_argument("--json", action="store_true", help="a JSON list, one object per file")
    fmt.add_argument("--csv", action="store_true", help="CSV, one row per segment")
    p.set_defaults(handler=run_predict)


def run_predict(args: argparse.Namespace) -> int:
    from lungsound.inference import Predictor

    if args.model is not None:
        predictor = Predictor.from_pretrained(args.model, runtime=args.runtime)
    elif args.checkpoint is not None:
        predictor = Predictor.from_checkpoint(args.checkpoint, runtime=args.runtime or "torch")
    else:
        predictor = Predictor.from_mlflow(args.run_id, runtime=args.runtime or "torch")
    results, failed = [], 0
    writer = _csv_writer() if args.csv else None
    for path in args.files:
        try:
            pred = predictor.predict(path, annotation=_annotation_for(path, args.annotation),
                                     segmentation=args.segmentation, max_seconds=args.max_seconds)
        except LungsoundError as exc:
            failed += 1
            print(f"lungsound: error: {exc}", file=sys.stderr, flush=True)
            continue
        except OSError as exc:  # a name too long, a folder given as a file, no permission: one line naming it
            failed += 1
            print(f"lungsound: error: {os_error_message(exc)}", file=sys.stderr, flush=True)
            continue
        except (KeyboardInterrupt, SystemExit):
            raise
        except BaseException as exc:  # anything unforeseen: this file's one-line error, the others still go on
            failed += 1
            detail = str(exc).strip().splitlines()
            print(f"lungsound: error: {display_path(path)}: unexpected {type(exc).__name__}"
                  + (f": {printable(detail[0][:300])}" if detail else ""), file=sys.stderr, flush=True)
            continue
        if args.json or writer is not None:  # machine-readable stdout: the warnings go to stderr, one line each
            for w in pred.warnings:
                print(f"lungsound: warning: {display_path(pred.file)}: {printable(w)}", file=sys.stderr, flush=True)
        if args.json:
            results.append(pred.to_dict())
        elif writer is not None:
            for s in pred.segments:
                writer.writerow([display_path(pred.file), f"{s.start:.3f}", f"{s.end:.3f}"]
                                + [f"{s.probabilities[c]:.6f}" for c in CLASSES])
        else:
            print(_summary(pred), flush=True)
    if args.json:
        print(json.dumps(results, indent=2))
    return 2 if failed else 0


def _annotation_for(path: Path, mode: str) -> Path | None:
    """The ICBHI annotation `<stem>.txt` beside the audio, when `mode` is auto and it exists."""
    candidate = path.with_suffix(".txt")
    return candidate if mode == "auto" and candidate.is_file() and candidate != path else None


def _csv_writer():
    writer = csv.writer(sys.stdout, lineterminator="\n")
    writer.writerow(["file", "start", "end", *CLASSES])
    return writer


def _summary(pred) -> str:
    s = pred.summary
    lines = [f"{display_path(pred.file)}  ({pred.duration:.1f} s, {len(pred.segments)} segments by "
             f"{pred.segmentation})", f"  {s['label'].upper()} ({100 * s['probability']:.0f}%): {s['text']}"]
    lines += [f"  warning: {printable(w)}" for w in pred.warnings]
    return "\n".join(lines)
