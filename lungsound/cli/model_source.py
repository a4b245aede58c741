"""The model options of the commands that load a trained model (`predict`, `export`, `validate-external`, `push`,
`evaluate`): `--checkpoint FOLDER`, `--run-id ID|URI` and, where a command takes any reference, `--model`. Each names
a model reference read by `lungsound.inference.sources` (`--checkpoint` as a folder, `--run-id` as an MLflow model,
`--model` by its shape), so every command reads a reference the same way. `--runtime NAME` (`add_runtime_option`,
`runtime_of`: `predict` and `validate-external`) picks what runs it the same way too.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from lungsound.inference.runtimes import DEFAULT_RUNTIME, RUNTIMES
from lungsound.inference.sources import FOLDER, MLFLOW

CHECKPOINT_HELP = "a model folder (model.safetensors, config.yaml, meta.json)"
RUN_ID_HELP = "an MLflow run id, runs:/<id>/model or models:/<name>/<version|latest>"
MODEL_HELP = "a model folder, a Hugging Face hub id USER/NAME[@revision] or an MLflow model (see docs/sharing.md)"


def add_model_options(parser: argparse.ArgumentParser, checkpoint_help: str = CHECKPOINT_HELP,
                      model: bool = False) -> None:
    """One required choice of --checkpoint or --run-id (and --model when `model`)."""
    src = parser.add_mutually_exclusive_group(required=True)
    src.add_argument("--checkpoint", type=Path, help=checkpoint_help)
    src.add_argument("--run-id", help=RUN_ID_HELP)
    if model:
        src.add_argument("--model", metavar="ID_OR_FOLDER", help=MODEL_HELP)


def model_reference(args: argparse.Namespace) -> tuple[str, str | None]:
    """(the reference, its kind: "folder", "mlflow", or None to read it by its shape) of the options given."""
    if args.checkpoint is not None:
        return str(args.checkpoint), FOLDER
    if args.run_id is not None:
        return args.run_id, MLFLOW
    return args.model, None


def add_runtime_option(parser: argparse.ArgumentParser) -> None:
    """`--runtime NAME`, one of the registered runtimes (`lungsound.inference.runtimes.RUNTIMES`)."""
    parser.add_argument("--runtime", choices=RUNTIMES.names(), default=None,
                        help="what computes the logits: torch, the PyTorch weights (default with --checkpoint and "
                             "--run-id), or the runtime of a folder from `lungsound export`, e.g. onnx or openvino "
                             "(default with --model for such a folder)")


def runtime_of(args: argparse.Namespace, kind: str | None) -> str | None:
    """The runtime asked for: --runtime, else torch for --checkpoint and --run-id, else None (the folder's own)."""
    return args.runtime or (DEFAULT_RUNTIME if kind else None)
