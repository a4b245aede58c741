"""`lungsound push`: publish a trained model on the Hugging Face hub with a generated model card (docs/sharing.md).

    lungsound push --checkpoint DIR | --run-id ID --repo-id USER/NAME [--out DIR] [--private] [--license ID]
                   [--commit-message TEXT]

`--checkpoint` takes a checkpoint folder (`.../best`) or a folder written by `lungsound export` (then the ONNX model is
pushed: export first, `lungsound export --checkpoint DIR [--int8]`, and push the export's folder). `--run-id` takes
the `model` artifact of an MLflow run (`runs:/<id>/model` or `models:/<name>/<version>` too). The card's data
fingerprint and seed-group scores come from the run in MLflow (`lungsound.sharing.provenance`). `--out DIR` writes
the folder that would be uploaded (README.md and the model files) and uploads nothing. The token is
huggingface_hub's ($HF_TOKEN or `hf auth login`).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from lungsound.cli.model_source import add_model_options, model_reference
from lungsound.sharing.card import DEFAULT_LICENSE


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("push", help="publish a trained model on the Hugging Face hub with a generated model card")
    add_model_options(p, checkpoint_help="a model folder (model.safetensors, config.yaml, meta.json) or a `lungsound "
                                         "export` folder")
    p.add_argument("--repo-id", required=True, metavar="USER/NAME", help="the hub repository (created when missing)")
    p.add_argument("--out", type=Path, metavar="DIR",
                   help="write the folder that would be uploaded (model files and README.md) here; upload nothing")
    p.add_argument("--private", action="store_true", help="create the repository as private")
    p.add_argument("--license", default=DEFAULT_LICENSE,
                   help=f"the model's license on the card (default {DEFAULT_LICENSE})")
    p.add_argument("--commit-message", help="the hub commit's message")
    p.set_defaults(handler=run_push)


def run_push(args: argparse.Namespace) -> int:
    from lungsound.inference.sources import check_repo_id, open_source, parse_reference
    from lungsound.sharing.provenance import provenance_for_folder, provenance_for_run

    check_repo_id(args.repo_id)  # before anything is loaded or downloaded
    reference = parse_reference(*model_reference(args))
    run = provenance_for_run(reference.run_id) if reference.run_id else None  # a deleted run: before downloading it
    with open_source(reference) as source:
        return _push(args, source.folder, run or provenance_for_folder(source.folder))


def _push(args: argparse.Namespace, folder: Path, provenance) -> int:
    from lungsound.sharing.push import push, stage

    if provenance.note:
        print(f"note: {provenance.note}", flush=True)
    if provenance.group is not None:
        print(f"seed group {provenance.group.parent_run_id}: {provenance.group.n} finished seeds on the card",
              flush=True)
    if args.out is not None:
        result = stage(folder, args.out, args.repo_id, provenance=provenance, license=args.license)
        print(f"staged {', '.join(result.files)} in {result.folder}; nothing was uploaded "
              f"(read {result.folder / 'README.md'}, then push without --out)")
        return 0
    result = push(folder, args.repo_id, provenance=provenance, license=args.license, private=args.private,
                  commit_message=args.commit_message)
    print(f"pushed {', '.join(result.files)} to {args.repo_id}: {result.url}")
    print(f"use it: lungsound predict --model {args.repo_id} FILE  (or Predictor.from_pretrained(\"{args.repo_id}\"))")
    return 0
