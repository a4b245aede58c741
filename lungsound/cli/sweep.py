"""`lungsound sweep`: experiment files x grid x seeds as independent runs, one after another or on Ray
(`lungsound.sweeps.sweep`), then the comparison table of the sweep's MLflow experiment(s) (`lungsound.results.compare`)."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from lungsound.errors import LungsoundError
from lungsound.sweeps.backends import BACKENDS
from lungsound.limits import SEEDS_RULE
from lungsound.storage import check_output_dir


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("sweep", help="train a grid of settings x seeds as independent runs (locally or on Ray), "
                                     "one MLflow parent per cell, then the comparison table")
    p.add_argument("-c", "--config", type=Path, action="append", default=[],
                   help="an experiment file; repeat for several")
    p.add_argument("overrides", nargs="*", help="section.key=value overrides for every cell, e.g. data.root=PATH")
    p.add_argument("--grid", action="extend", nargs="+", default=[], metavar="KEY=V1,V2",
                   help="a grid axis, e.g. --grid train.lr=1e-3,5e-4 data.duration=4,8 (the cells are the product)")
    p.add_argument("--cells", default=None,
                   help="also the augmentation cells of `lungsound grid` (comma-separated, or 'all')")
    p.add_argument("--seeds", default=None,
                   help=f"seeds per cell, e.g. 1-5 or 1,2,3 (default: the file's train.seed); {SEEDS_RULE}")
    p.add_argument("--backend", choices=BACKENDS.names(), default="local",
                   help="local: one run after another here; ray: one Ray task per run ($RAY_ADDRESS or a local Ray)")
    p.add_argument("--cpus-per-run", type=float, default=None, help="ray: CPUs (and torch threads) per run (default 1)")
    p.add_argument("--gpus-per-run", type=float, default=None, help="ray: GPUs per run (default 0; 0.5 shares one)")
    p.add_argument("--published", action="store_true", help="add the published numbers to the table")
    p.add_argument("--out", type=Path, default=None, help="also write the table (Markdown, CSV, PNG) here")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(handler=run_sweep_cmd)


def run_sweep_cmd(args: argparse.Namespace) -> int:
    from lungsound.results.compare import compare
    from lungsound.sweeps.sweep import plan, report, run_sweep
    from lungsound.training.seeds import parse_seeds

    if args.out is not None:
        check_output_dir(args.out)  # before the sweep trains, not after
    if args.backend == "local" and (args.cpus_per_run is not None or args.gpus_per_run is not None):
        raise LungsoundError("--cpus-per-run and --gpus-per-run size Ray tasks: use them with --backend ray")
    cpus = 1.0 if args.cpus_per_run is None else args.cpus_per_run
    gpus = 0.0 if args.gpus_per_run is None else args.gpus_per_run
    if not cpus > 0 or not gpus >= 0:
        raise LungsoundError(f"--cpus-per-run must be > 0 and --gpus-per-run >= 0, got {cpus:g} and {gpus:g}")
    cells_arg = None if args.cells is None else ([] if args.cells == "all" else args.cells.split(","))
    cells = plan(args.config, args.grid, args.overrides, cells_arg)
    seeds = parse_seeds(args.seeds, cells[0].cfg.train.seed)
    print(f"sweep: {len(cells)} cell(s) x {len(seeds)} seed(s) = {len(cells) * len(seeds)} runs, "
          f"backend {args.backend}", flush=True)
    t0 = time.time()
    groups = run_sweep(cells, seeds, args.backend, cpus, gpus, progress=not args.quiet)
    failed = sum(len(g.failed) for g in groups)
    print(f"sweep: done in {time.time() - t0:.0f} s; {failed} run(s) failed\n{report(groups)}\n", flush=True)
    experiments = sorted({c.cfg.tracking.experiment for c in cells})
    return table_then_failures(lambda: compare(experiments, args.out, published=args.published), failed, "sweep")


def table_then_failures(table, failed: int, what: str) -> int:
    """Print the table `table()` makes (a table that cannot be made is an error only when no run failed: the failures
    are the news), then say how many runs failed; the exit status."""
    try:
        print(table())
    except LungsoundError as exc:
        if not failed:
            raise
        print(f"lungsound: {exc}", file=sys.stderr)
    if failed:
        print(f"lungsound: error: {failed} run(s) of the {what} failed twice; re-run the same command to retry them "
              "(finished runs are kept)", file=sys.stderr)
        return 1
    return 0
