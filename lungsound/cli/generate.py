"""`lungsound generate ...`: the DiffWave vocoder of [AFT] and the synthetic cycle sets it makes (docs/methods.md section 10)."""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

from lungsound.limits import MAX_BATCH, MAX_PER_CLASS, MAX_SEED
from lungsound.storage import claim_output_dir, replace_dir, temp_dir_beside


def register(sub: argparse._SubParsersAction) -> None:
    gen = sub.add_parser("generate", help="train a DiffWave vocoder, import one, make and evaluate synthetic cycle sets")
    gsub = gen.add_subparsers(dest="generate_command", metavar="GENERATE_COMMAND", required=True)

    p = gsub.add_parser("train", help="train the vocoder on the training split's 4-s cycles (step-based, MLflow)")
    p.add_argument("-c", "--config", type=Path, default=None, help="vocoder experiment file (experiments/vocoder_*.yaml)")
    p.add_argument("overrides", nargs="*", help="section.key=value overrides, e.g. train.steps=2000 data.root=PATH")
    p.add_argument("--resume", type=Path, default=None, help="continue an interrupted run (its last.pt or run folder)")
    p.add_argument("--stop-after", type=int, default=None,
                   help="stop after this step, 1 or more (continue later with --resume)")
    p.add_argument("--export", type=Path, default=None,
                   help="also copy the finished vocoder folder here (new, empty, or a vocoder folder)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(handler=run_train)

    p = gsub.add_parser("import", help="convert a checkpoint of the reference DiffWave trainer to a vocoder folder")
    p.add_argument("path", type=Path, help="the reference checkpoint (.pt): step, model, optimizer, params, scaler")
    p.add_argument("--out", type=Path, required=True,
                   help="the vocoder folder to write: new, empty, or a vocoder folder (replaced)")
    p.set_defaults(handler=run_import)

    p = gsub.add_parser("synth", help="make a synthetic set: per class, vocode the mels of random training cycles")
    p.add_argument("--vocoder", type=Path, required=True, help="a vocoder folder (from generate train or import)")
    p.add_argument("--per-class", type=int, required=True,
                   help=f"clips per class, e.g. 500 (Mixed-500); 1 to {MAX_PER_CLASS:,}")
    p.add_argument("--out", type=Path, required=True,
                   help="the set's folder: new, empty or a set made before (an interrupted run continues there)")
    p.add_argument("--root", default=None, help="ICBHI-format data (default: the vocoder's training data)")
    p.add_argument("--seed", type=int, default=0, help=f"0 (default) to {MAX_SEED:,}")
    p.add_argument("--schedule", choices=("fast", "full"), default="fast", help="6-step fast (default) or 50-step")
    p.add_argument("--batch-size", type=int, default=16, help=f"clips vocoded at once: 1 to {MAX_BATCH:,} (default 16)")
    p.add_argument("--classes", default=None, help="comma-separated subset of normal,crackle,wheeze,both")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(handler=run_synth)

    p = gsub.add_parser("evaluate", help="per-class Frechet distances and a real-trained classifier's accuracy")
    p.add_argument("--set", type=Path, required=True, dest="set_dir", help="a generated set's folder")
    p.add_argument("--classifier", type=Path, default=None, help="a model folder trained on real data")
    p.add_argument("--root", default=None, help="ICBHI-format data (default: the vocoder's training data)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(handler=run_evaluate)


def run_train(args: argparse.Namespace) -> int:
    from lungsound.generation.loop import train_vocoder
    from lungsound.generation.train import load_vocoder_config
    from lungsound.generation.vocoder_io import VOCODER_FOLDER  # torch: imported when the command runs, like the rest

    cfg = None if args.resume else load_vocoder_config(args.config, args.overrides)
    if args.export is not None:  # refused before training, not after it
        claim_output_dir(args.export, VOCODER_FOLDER)
    out = train_vocoder(cfg, resume=args.resume, stop_after=args.stop_after, progress=not args.quiet)
    state = "finished" if out["finished"] else f"stopped; continue with --resume {out['folder'] / 'last.pt'}"
    if args.export is not None and out["finished"]:
        _export_vocoder(out["vocoder"], args.export)
        state += f", exported to {args.export}"
    print(f"vocoder run {out['run_id']} {state} at step {out['step']} (loss {out['loss']:.4f}); "
          f"vocoder folder: {out['vocoder']}")
    return 0


def _export_vocoder(folder: Path, export: Path) -> None:
    """Copy the run's vocoder folder to `export` as a whole (the folder rule of `lungsound.storage`)."""
    from lungsound.generation.vocoder_io import VOCODER_FOLDER

    tmp = temp_dir_beside(export)
    try:
        shutil.copytree(folder, tmp, dirs_exist_ok=True)
        replace_dir(tmp, export, VOCODER_FOLDER, source=folder.parent)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def run_import(args: argparse.Namespace) -> int:
    from lungsound.generation.vocoder_io import import_reference

    print(f"imported {args.path} -> {import_reference(args.path, args.out)}")
    return 0


def run_synth(args: argparse.Namespace) -> int:
    from lungsound.generation.synth import synthesize

    out = synthesize(args.vocoder, args.per_class, args.out, root=args.root, seed=args.seed, schedule=args.schedule,
                     batch_size=args.batch_size, classes=args.classes.split(",") if args.classes else None,
                     progress=not args.quiet)
    print(f"{out['out']}: {out['made']} clips made, {out['kept']} kept from an earlier run; per class: "
          + ", ".join(f"{k} {v}" for k, v in out["counts"].items()))
    return 0


def run_evaluate(args: argparse.Namespace) -> int:
    from lungsound.generation.quality import evaluate_set

    out = evaluate_set(args.set_dir, args.classifier, args.root)
    print(json.dumps(out["rows"], indent=2) if args.json else out["text"])
    return 0
