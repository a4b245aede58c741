"""``lungsound data synth``: write the built-in synthetic dataset in the ICBHI 2017 on-disk format.

    lungsound data synth --out data/synthetic_icbhi [--recordings N] [--seed S] [--workers N]
    lungsound data synth --out data/icbhi_like --like-annotations ../shared/data/icbhi/audio_and_txt_files

The first form plans a cohort of N recordings; the second synthesises one recording per real annotation file, so the
official split runs end to end without the real audio (see `lungsound.data.synthetic.like`).
"""

from __future__ import annotations

import argparse
import sys

from lungsound.data.synthetic.writer import DEFAULT_RECORDINGS, generate, generate_like_annotations
from lungsound.errors import LungsoundError
from lungsound.limits import MAX_RECORDINGS, MAX_SEED


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the options of ``data synth`` to `parser`."""
    parser.add_argument("--out", required=True, metavar="PATH",
                        help="output folder (new, empty, or a previous synthetic set)")
    parser.add_argument("--recordings", type=int, default=None, metavar="N",
                        help=f"number of recordings to synthesise, 1 to {MAX_RECORDINGS:,} (default "
                             f"{DEFAULT_RECORDINGS}, about {DEFAULT_RECORDINGS * 6:,} cycles)")
    parser.add_argument("--seed", type=int, default=0, metavar="S",
                        help=f"random seed from 0 to {MAX_SEED:,}; the same seed gives byte-identical files "
                             "(default 0)")
    parser.add_argument("--like-annotations", default=None, metavar="DIR",
                        help="synthesise one recording per ICBHI annotation file in DIR, keeping its cycles and labels")
    parser.add_argument("--split", default=None, metavar="FILE",
                        help="split file for --like-annotations (default: found in DIR, DIR/meta, its parent or "
                             "the parent's meta/)")
    parser.add_argument("--workers", type=int, default=None, metavar="N",
                        help="worker processes (default: one per CPU core)")
    parser.add_argument("--overwrite", action="store_true",
                        help="write into a non-empty folder that is not a previous synthetic set")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    """Run ``data synth``; prints a summary and returns the exit code (errors are `LungsoundError`s)."""
    if args.workers is not None and args.workers < 1:
        raise LungsoundError(f"--workers must be at least 1, got {args.workers}")
    if args.like_annotations is None:
        if args.split is not None:
            raise LungsoundError("--split only applies together with --like-annotations")
        n = DEFAULT_RECORDINGS if args.recordings is None else args.recordings
        report = generate(args.out, n_recordings=n, seed=args.seed, workers=args.workers,
                          progress=not args.quiet, overwrite=args.overwrite)
    else:
        if args.recordings is not None:
            raise LungsoundError("--recordings cannot be combined with --like-annotations "
                                 "(one recording is made per annotation file)")
        report = generate_like_annotations(args.like_annotations, args.out, seed=args.seed, split=args.split,
                                           workers=args.workers, progress=not args.quiet, overwrite=args.overwrite)
        for name, source in sorted(report.sources.items()):
            print(f"{name}: {'copied from ' + source if source != 'synthesised' else 'synthesised'}")
    print(report.summary())
    return 0


def main(argv: list[str] | None = None) -> int:
    """Stand-alone entry point (``python -m lungsound.data.synthetic.cli``), same options as ``data synth``."""
    parser = argparse.ArgumentParser(prog="lungsound data synth", description=__doc__.splitlines()[0])
    add_arguments(parser)
    try:
        return run(parser.parse_args(argv))
    except LungsoundError as exc:
        print(f"lungsound: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
