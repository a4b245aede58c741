"""`lungsound train`, `lungsound evaluate`, `lungsound compare`: the training engine from the command line."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from lungsound.limits import SEEDS_RULE
from lungsound.storage import check_output_dir


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="train an experiment (one MLflow run per seed, a parent run for several seeds)")
    p.add_argument("-c", "--config", type=Path, default=None, help="experiment YAML file (experiments/*.yaml)")
    p.add_argument("overrides", nargs="*", help="section.key=value overrides, e.g. train.epochs=2 data.root=PATH")
    p.add_argument("--seeds", default=None, help=f"seeds to run, e.g. 1-5 or 1,2,3 (default: train.seed); {SEEDS_RULE}")
    p.add_argument("--resume", default=None, metavar="LAST_PT|RUN_ID",
                   help="continue an interrupted run (its last.pt or run folder, or its MLflow run id), or finish a "
                        "multi-seed group (the parent's MLflow run id)")
    p.add_argument("--stop-after", type=int, default=None,
                   help="stop after this epoch, 1 or more (resume later with --resume)")
    p.add_argument("--quiet", action="store_true", help="no progress bars (one line per epoch only)")
    p.add_argument("--register", action="store_true",
                   help="register the trained model in the MLflow Model Registry as a new version of the experiment "
                        "file's name (for several seeds: the seed with the best Score on its selection split); "
                        "load it as models:/NAME/latest")
    p.set_defaults(handler=run_train)

    p = sub.add_parser("evaluate", help="re-evaluate a trained model on a database's test split")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--checkpoint", type=Path, help="a model folder (with model.safetensors and config.yaml)")
    src.add_argument("--run-id", help="an MLflow run id (its 'model' artifact), runs:/<id>/model or "
                                      "models:/<name>/<version|latest>")
    p.add_argument("--root", type=Path, default=None, help="ICBHI-format data (default: the data the model was trained on)")
    p.add_argument("--split", default=None, help="official, fold0..fold4, official_noleak or device_out=DEVICE "
                   "(default: the training config's)")
    p.add_argument("--out", type=Path, default=None, help="write the report (confusion matrix, tables) here")
    p.add_argument("--json", action="store_true")
    p.set_defaults(handler=run_evaluate)

    p = sub.add_parser("compare", help="table of mean +- std (population, ddof=0) over seeds per method and protocol, "
                                       "from MLflow; --paired A B tests two rows seed by seed")
    p.add_argument("--experiment", action="append", default=None, help="MLflow experiment name(s) (default: all)")
    p.add_argument("--out", type=Path, default=Path("outputs/compare"), help="folder for the Markdown/CSV/PNG")
    p.add_argument("--published", action="store_true", help="add the published numbers of docs/methods.md")
    p.add_argument("--paired", nargs=2, metavar=("A", "B"), default=None,
                   help="also compare two rows seed by seed (mean A - B, 95%% t interval, paired t-test on the common "
                        "seeds); name each row as the table shows it, NAME or NAME:PROTOCOL, where NAME is the "
                        "experiment column (with its [variant], quoted, when it has one), e.g. "
                        "--paired icbhi_patchmix_cl_clean:clean icbhi_ast_ce_clean:clean; "
                        "writes paired-A-vs-B.md/.json to --out")
    p.set_defaults(handler=run_compare)


def run_train(args: argparse.Namespace) -> int:
    from lungsound.config import load_config
    from lungsound.training.run import fit
    from lungsound.training.seeds import fit_seeds, parse_seeds

    if args.register and args.stop_after is not None:
        from lungsound.errors import LungsoundError

        raise LungsoundError("--register needs a finished run: drop --stop-after (or register when resuming)")
    if args.resume:
        return _resume(args)
    cfg = load_config(args.config, args.overrides)
    seeds = parse_seeds(args.seeds, cfg.train.seed)
    if args.seeds is None or args.stop_after is not None:
        if len(seeds) > 1:
            from lungsound.errors import LungsoundError

            raise LungsoundError("--stop-after works on one seed at a time")
        cfg.train.seed = seeds[0]
        result = fit(cfg, stop_after=args.stop_after, progress=not args.quiet)
        status = "stopped early; continue with --resume " + str(result.checkpoint.parent / "last.pt") \
            if not result.finished else "finished"
        print(f"run {result.run_id} {status}; selected epoch {result.selected_epoch}; model: {result.checkpoint}")
        if result.finished:
            print(_summary_line(result.metrics, ""))
            _register(args, result.run_id)
        return 0
    out = fit_seeds(cfg, seeds, progress=not args.quiet)
    print(f"parent run {out['parent_run_id']}: {len(seeds)} seeds")
    print(_summary_line(out["summary"], "_mean"))
    _register(args, out["parent_run_id"])
    return 0


def _register(args: argparse.Namespace, run_id: str | None) -> None:
    """--register: the run's model (a multi-seed parent's best child) as a new version of the experiment file's
    name in the Model Registry."""
    if not args.register:
        return
    from lungsound.errors import LungsoundError
    from lungsound.tracking import (EXPERIMENT_FILE_TAG, PROTOCOL_TAG, SEED_TAG, VERSION_PARENT_TAG, VERSION_TAGS,
                                    client, find_run, is_parent, register_model)
    from lungsound.training.seeds import best_child

    if run_id is None:
        raise LungsoundError("--register needs an MLflow-tracked run")
    mlf = client()
    chosen = best_child(run_id) if is_parent(find_run(mlf, run_id).data.tags) else run_id
    tags = find_run(mlf, chosen).data.tags
    name = tags.get(EXPERIMENT_FILE_TAG) or "experiment"
    version_tags = {k: tags[k] for k in VERSION_TAGS if k in tags}
    if chosen != run_id:
        version_tags[VERSION_PARENT_TAG] = run_id
    version = register_model(chosen, name, tags=version_tags, description=f"{name}, seed {tags.get(SEED_TAG, '?')}, "
                                                                          f"{tags.get(PROTOCOL_TAG, '?')} protocol")
    print(f"registered models:/{name}/{version} (run {chosen}); load it as models:/{name}/latest")


def _resume(args: argparse.Namespace) -> int:
    """--resume: a path (last.pt or its folder), a run's MLflow id, or a multi-seed parent's MLflow id."""
    import re

    from lungsound.errors import LungsoundError
    from lungsound.training.run import fit
    from lungsound.training.seeds import resume_group

    target = args.resume
    if not Path(target).exists() and re.fullmatch(r"[0-9a-f]{32}", target):
        from lungsound.tracking import RUN_FOLDER_TAG, check_live, client, find_run, is_parent

        try:
            run = find_run(client(), target)
        except LungsoundError:
            raise LungsoundError(f"--resume {target}: no such file, and no MLflow run with that id") from None
        check_live(run, "resume")  # a deleted run: one line, before anything is built
        if is_parent(run.data.tags):
            out = resume_group(target, progress=not args.quiet)
            print(f"parent run {out['parent_run_id']}: {len(out['seeds'])} seeds")
            print(_summary_line(out["summary"], "_mean"))
            _register(args, out["parent_run_id"])
            return 0
        folder = run.data.tags.get(RUN_FOLDER_TAG)
        if not folder:
            raise LungsoundError(f"--resume {target}: the run records no run folder; pass its last.pt instead")
        target = folder
    result = fit(None, resume=target, stop_after=args.stop_after, progress=not args.quiet)
    print(json.dumps({"run_id": result.run_id, "checkpoint": str(result.checkpoint), **result.metrics}, indent=2))
    if result.finished:
        _register(args, result.run_id)
    return 0


def _summary_line(metrics: dict, suffix: str) -> str:
    parts = []
    for name in ("sp", "se", "score"):
        key = f"final_test_{name}{suffix}"
        if key in metrics:
            std = metrics.get(f"final_test_{name}_std")
            parts.append(f"{name.capitalize()} {metrics[key]:.2f}" + (f" +- {std:.2f}" if std is not None else ""))
    return "test (selected epoch): " + "  ".join(parts)


def run_evaluate(args: argparse.Namespace) -> int:
    from lungsound.cli.model_source import model_reference
    from lungsound.inference.sources import open_source
    from lungsound.results.reports import evaluate_checkpoint

    if args.out is not None:
        check_output_dir(args.out)
    with open_source(*model_reference(args)) as source:  # a folder, or a run id, runs:/ or models:/ URI downloaded
        result = evaluate_checkpoint(checkpoint=source.folder, root=args.root, split=args.split, out=args.out)
    print(json.dumps(result, indent=2) if args.json else result["text"])
    return 0


def run_compare(args: argparse.Namespace) -> int:
    from lungsound.results.compare import compare

    table = compare(args.experiment, args.out, published=args.published,
                    paired=tuple(args.paired) if args.paired else None)
    print(table)
    return 0
