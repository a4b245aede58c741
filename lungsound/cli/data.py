"""`lungsound data ...`: inspect, dump and synthesise ICBHI-format data."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from lungsound.config import CHOICES


def _add_root(p: argparse.ArgumentParser) -> None:
    from lungsound.data.formats import DEFAULT_FORMAT, FORMATS

    p.add_argument("--root", type=Path, default=None,
                   help="folder holding an ICBHI-format database (default: the built-in synthetic set, made on first use)")
    p.add_argument("--format", default=DEFAULT_FORMAT, choices=FORMATS.names(),
                   help=f"the folder's data format (default {DEFAULT_FORMAT}; see lungsound.data.formats)")


def register(sub: argparse._SubParsersAction) -> None:
    data = sub.add_parser("data", help="inspect, dump, synthesise or download ICBHI-format data")
    dsub = data.add_subparsers(dest="data_command", metavar="DATA_COMMAND", required=True)

    p = dsub.add_parser("stats", help="recordings, cycles per class, devices and patients per split")
    _add_root(p)
    p.add_argument("--split", default="official", help="official (default), fold0..fold4 (patient folds), official_noleak or "
                   "device_out=<Meditron|LittC2SE|Litt3200|AKGC417L> (see lungsound.data.splits)")
    p.add_argument("--split-file", type=Path, default=None, help="use this split file instead of the one found")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(handler=run_stats)

    p = dsub.add_parser("dump", help="write one recording's cycles, fbanks and labels to an .npz file")
    _add_root(p)
    p.add_argument("--recording", required=True, help="recording stem, e.g. 101_1b1_Al_sc_Meditron (any naming variant)")
    p.add_argument("--out", type=Path, required=True, help="output .npz file")
    p.add_argument("--duration", type=float, default=8.0, help="cycle length in seconds (default 8)")
    p.add_argument("--pad", choices=CHOICES[("data", "pad")], default="repeat", help="padding of short cycles")
    p.set_defaults(handler=run_dump)

    from lungsound.data import download
    from lungsound.data.synthetic import cli as synth_cli

    p = dsub.add_parser("download", help="fetch the official ICBHI 2017 archive and its side files (about 2 GB)")
    download.add_arguments(p)
    p.set_defaults(handler=download.run)

    p = dsub.add_parser("synth", help="write a synthetic ICBHI-format dataset")
    synth_cli.add_arguments(p)
    p.set_defaults(handler=synth_cli.run)


def _root(args: argparse.Namespace) -> Path:
    from lungsound.data.default import resolve_root

    return resolve_root(args.root)


def run_stats(args: argparse.Namespace) -> int:
    from lungsound.data.database import open_database
    from lungsound.data.stats import database_stats, format_stats

    db = open_database(_root(args), split=args.split, format=args.format, split_file=args.split_file,
                       load_cycles=True)
    stats = database_stats(db)
    print(json.dumps(stats, indent=2) if args.json else format_stats(stats, db.format.title or db.format.name))
    return 0


def run_dump(args: argparse.Namespace) -> int:
    from lungsound.data.cycles import CycleConfig, load_cycles
    from lungsound.data.database import open_database
    from lungsound.errors import LungsoundError
    from lungsound.features.fbank import FbankConfig, compute_features_batch

    if args.out.suffix != ".npz":
        raise LungsoundError("output must end in .npz", args.out)
    db = open_database(_root(args), split=None, format=args.format)
    rec = db.find(args.recording)
    if rec.audio is None:
        raise LungsoundError(f"recording {rec.stem} has an annotation but no audio file", db.root)
    cycle_cfg = CycleConfig(duration=args.duration, pad=args.pad)
    waves = load_cycles(rec.audio, rec.cycles, cycle_cfg)
    fbank = compute_features_batch(waves, FbankConfig()).numpy()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    np.savez(args.out, waveforms=waves, fbank=fbank,
             labels=np.array([c.label for c in rec.cycles], dtype=np.int64),
             starts=np.array([c.start for c in rec.cycles]), ends=np.array([c.end for c in rec.cycles]))
    print(f"{args.out}: {len(waves)} cycles of {rec.stem} (waveforms {waves.shape}, fbank {fbank.shape})")
    return 0
