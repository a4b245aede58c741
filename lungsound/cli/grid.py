"""`lungsound grid`: an augmentation grid (experiment files x cells x seeds) trained by the sweep engine, one run after
another here, and its table (`lungsound.sweeps.grid`)."""

from __future__ import annotations

import argparse
from pathlib import Path

from lungsound.cli.sweep import table_then_failures
from lungsound.limits import SEEDS_RULE
from lungsound.storage import check_output_dir


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("grid", help="train an augmentation grid (e.g. the RepAugment ablation) and print its table")
    p.add_argument("-c", "--config", type=Path, action="append", default=[],
                   help="an experiment file (one per backbone); repeat for several")
    p.add_argument("overrides", nargs="*", help="section.key=value overrides for every cell, e.g. data.root=PATH")
    p.add_argument("--cells", default=None,
                   help="comma-separated cells (default: none,specaugment,rep_mask,rep_gen,repaugment)")
    p.add_argument("--weighting", default=None,
                   help="class weighting as an axis: comma-separated unweighted,weighted (default: each file's "
                        "method.class_weighted; the RepAugment files are unweighted, as the authors' code)")
    p.add_argument("--seeds", default="1-5", help=f"seeds per cell, e.g. 1-5 (default) or 1,2,3; {SEEDS_RULE}")
    p.add_argument("--experiment", default=None,
                   help="the MLflow experiment of the grid (default: the files' tracking.experiment)")
    p.add_argument("--table-only", action="store_true", help="train nothing: print (and write) the table")
    p.add_argument("--out", type=Path, default=None, help="write grid.md and grid.png here")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(handler=run_grid_cmd)


def run_grid_cmd(args: argparse.Namespace) -> int:
    from lungsound.config import load_config
    from lungsound.errors import LungsoundError
    from lungsound.sweeps.grid import plan, run_grid, write_grid
    from lungsound.sweeps.sweep import report
    from lungsound.training.seeds import parse_seeds

    if args.out is not None:
        check_output_dir(args.out)  # before the grid trains, not after
    overrides = list(args.overrides) + ([f"tracking.experiment={args.experiment}"] if args.experiment else [])
    name = args.experiment
    failed = 0
    if not args.table_only:
        if not args.config:
            raise LungsoundError("lungsound grid needs at least one -c EXPERIMENT file (or --table-only)")
        cells = plan(args.config, args.cells.split(",") if args.cells else None, overrides,
                     args.weighting.split(",") if args.weighting else None)
        groups = run_grid(cells, parse_seeds(args.seeds, 1), progress=not args.quiet)
        failed = sum(len(g.failed) for g in groups)
        print(f"grid:\n{report(groups)}\n", flush=True)
        name = name or load_config(args.config[0], overrides).tracking.experiment
    if name is None:
        raise LungsoundError("--table-only needs --experiment NAME (the grid's MLflow experiment)")
    return table_then_failures(lambda: write_grid(name, args.out), failed, "grid")
