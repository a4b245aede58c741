"""`lungsound device-ood`: the leave-one-stethoscope-out table of one experiment file, from the MLflow store."""

from __future__ import annotations

import argparse
from pathlib import Path

from lungsound.config import CHOICES


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("device-ood", help="held-out-stethoscope scores of one experiment beside its in-distribution ones")
    p.add_argument("-c", "--config", type=Path, required=True,
                   help="the experiment file whose official and device_out=<device> runs to tabulate")
    p.add_argument("overrides", nargs="*", help="section.key=value overrides the runs were trained with "
                   "(e.g. tracking.experiment=NAME)")
    p.add_argument("--protocol", choices=CHOICES[("train", "protocol")], default=None,
                   help="only runs of this protocol (needed when the store holds both)")
    p.add_argument("--out", type=Path, default=None, help="folder for device_ood.md/.json/.png "
                   "(default outputs/device_ood/<experiment>)")
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from lungsound.config import load_config
    from lungsound.results.device_ood import device_ood

    cfg = load_config(args.config, args.overrides)
    out = args.out or Path("outputs/device_ood") / cfg.name
    print(device_ood(cfg.name, out, protocol=args.protocol or cfg.train.protocol,
                     mlflow_experiments=[cfg.tracking.experiment]))
    return 0
