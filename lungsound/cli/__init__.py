"""The `lungsound` command.

Each command group lives in its own module with `register(subparsers)`; the handler it sets returns an exit code.
A `LungsoundError` is printed on one line (``lungsound: error: <file>: <problem>``) without a traceback, exit code 2;
so is an `OSError` the operating system raised on a path the user gave (a name too long, a folder that is a file, no
permission, a full disk: ``lungsound: error: <path>: File name too long``). Names are printed escaped
(`lungsound.errors.printable`), in these lines and in the warnings, so a file name cannot drive the terminal.
"""

from __future__ import annotations

import argparse
import sys

from lungsound import __version__
from lungsound.errors import LungsoundError, os_error_message, printable


def build_parser() -> argparse.ArgumentParser:
    from lungsound.cli import data as data_cmd
    from lungsound.cli import export as export_cmd
    from lungsound.cli import generate as generate_cmd
    from lungsound.cli import grid as grid_cmd
    from lungsound.cli import ood as ood_cmd
    from lungsound.cli import predict as predict_cmd
    from lungsound.cli import push as push_cmd
    from lungsound.cli import sweep as sweep_cmd
    from lungsound.cli import train as train_cmd
    from lungsound.cli import validate as validate_cmd

    parser = argparse.ArgumentParser(prog="lungsound", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"lungsound {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    data_cmd.register(sub)
    train_cmd.register(sub)
    predict_cmd.register(sub)
    grid_cmd.register(sub)
    sweep_cmd.register(sub)
    generate_cmd.register(sub)
    export_cmd.register(sub)
    push_cmd.register(sub)
    ood_cmd.register(sub)
    validate_cmd.register(sub)
    return parser


def _terminate(signum, frame):  # SIGTERM (a scheduler, `kill`) ends runs like Ctrl-C: MLflow marks them KILLED
    raise KeyboardInterrupt


def _escaped_warning(format_warning):
    def formatwarning(message, category, filename, lineno, line=None):
        return format_warning(printable(message), category, filename, lineno, line)
    return formatwarning


def main(argv: list[str] | None = None) -> int:
    import signal
    import threading
    import warnings

    parser = build_parser()
    args = parser.parse_args(argv)
    previous = None
    if threading.current_thread() is threading.main_thread():
        previous = signal.signal(signal.SIGTERM, _terminate)
    format_warning = warnings.formatwarning
    warnings.formatwarning = _escaped_warning(format_warning)
    try:
        return int(args.handler(args) or 0)
    except LungsoundError as exc:
        print(f"lungsound: error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:  # the system refused a path the user gave: one line naming it, not a traceback
        print(f"lungsound: error: {os_error_message(exc)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("lungsound: interrupted", file=sys.stderr)
        return 130
    finally:
        warnings.formatwarning = format_warning
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
