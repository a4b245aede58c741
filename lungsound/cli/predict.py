"""`lungsound predict`: classify whole recordings with a trained model (`lungsound.inference.Predictor`).

`--runtime NAME` picks one of the registered runtimes (`lungsound.inference.runtimes.RUNTIMES`): `torch`, `onnx`
for the `model.onnx` of a folder written by `lungsound export` (ONNX Runtime, fp32 or int8), or `openvino` for one
written by `lungsound export --format openvino` (fp32, bf16, int8, int8+bf16). `--model` takes any model
reference (`lungsound.inference.sources`): a model folder or a Hugging Face hub id `USER/NAME[@revision]` pushed by
`lungsound push` (downloaded once into the hub cache, offline afterwards; an existing path wins, `hf://USER/NAME`
forces the hub), or an MLflow model; without `--runtime` it runs a folder with the runtime it was made for (an
exported folder with its export's runtime, any other with PyTorch; docs/sharing.md). With `--checkpoint` or
`--run-id` the runtime defaults to torch.

`--meta age=70,sex=F,location=Pl,device=Meditron` gives a model that reads metadata (BTS's `clap_bts`) the patient's
age, sex, chest location (an ICBHI code: Tc, Al, Ar, Pl, Pr, Ll, Lr) and device (an ICBHI device name), the same for
every file; a field left out is unknown, and without `--meta` every field is (the result's warnings say so). A bad
key or value is a one-line error before any file is read; other models ignore it (with a warning).

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

from lungsound.cli.model_source import add_model_options, add_runtime_option, model_reference, runtime_of
from lungsound.data.labels import CLASSES
from lungsound.errors import LungsoundError, display_path, one_line, os_error_message, printable
from lungsound.inference import SEGMENTATIONS, Predictor, open_source
from lungsound.models.clap_prompt import parse_metadata


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("predict", help="classify the breathing cycles of whole recordings with a trained model")
    p.add_argument("files", nargs="+", type=Path, metavar="FILE", help="audio files (wav, flac, ogg, ...)")
    add_model_options(p, model=True)
    p.add_argument("--annotation", choices=("auto", "none"), default="auto",
                   help="auto: use an ICBHI <stem>.txt next to the audio when present (default); none: ignore it")
    p.add_argument("--segmentation", choices=SEGMENTATIONS, default="auto",
                   help="auto: annotated cycles, else detected breathing cycles, else sliding windows")
    p.add_argument("--max-seconds", type=float, default=120.0, help="refuse longer recordings (default 120)")
    p.add_argument("--meta", default=None, metavar="KEY=VALUE,...",
                   help="the patient's metadata for a model that reads it (clap_bts), e.g. "
                        "age=70,sex=F,location=Pl,device=Meditron; a field left out is unknown")
    add_runtime_option(p)
    fmt = p.add_mutually_exclusive_group()
    fmt.add_argument("--json", action="store_true", help="a JSON list, one object per file")
    fmt.add_argument("--csv", action="store_true", help="CSV, one row per segment")
    p.set_defaults(handler=run_predict)


def run_predict(args: argparse.Namespace) -> int:
    metadata = parse_metadata(args.meta) if args.meta is not None else None  # a bad key: one line, before loading
    reference, kind = model_reference(args)
    with open_source(reference, kind) as source:
        predictor = Predictor.from_source(source, runtime=runtime_of(args, kind))
    if metadata is not None and not predictor.uses_metadata:
        print(f"lungsound: warning: model {predictor.cfg.model.name!r} reads no metadata; --meta is ignored",
              file=sys.stderr, flush=True)
    results, failed = [], 0
    writer = _csv_writer() if args.csv else None
    for path in args.files:
        try:
            pred = predictor.predict(path, annotation=_annotation_for(path, args.annotation),
                                     segmentation=args.segmentation, max_seconds=args.max_seconds,
                                     metadata=metadata)
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
            print(f"lungsound: error: {display_path(path)}: unexpected {printable(one_line(exc, with_type=True))}",
                  file=sys.stderr, flush=True)
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
