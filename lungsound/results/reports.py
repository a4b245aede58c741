"""`lungsound evaluate` (`evaluate_checkpoint`): a saved model scored again on a test split, with the report of that
evaluation (`lungsound.evaluation.report`, whose writers are importable from here too)."""

from __future__ import annotations

import tempfile
from pathlib import Path

import torch

from lungsound.data.database import open_database
from lungsound.data.dataset import CycleDataset
from lungsound.data.default import resolve_root
from lungsound.evaluation.evaluate import evaluate
from lungsound.evaluation.metrics import format_scores
from lungsound.evaluation.report import plot_confusion, write_run_report  # noqa: F401 (plot_confusion re-exported)
from lungsound.models.build import input_configs, metadata_definitions
from lungsound.models.folder import load_model
from lungsound.tracking import download_artifacts


def evaluate_checkpoint(checkpoint=None, run_id: str | None = None, root=None, split: str | None = None,
                        out=None) -> dict:
    """`lungsound evaluate`: load a model folder or an MLflow run's model and score it on a test split."""
    with tempfile.TemporaryDirectory() as tmp:
        if run_id is not None:
            checkpoint = download_artifacts(run_id, "model", tmp)
        device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        model, cfg, meta = load_model(checkpoint, device=device)
    db = open_database(resolve_root(root if root is not None else cfg.data.root), split=split or cfg.data.split,
                       format=cfg.data.format)
    cycle_cfg, fbank_cfg = input_configs(cfg)  # cycles at the model's own sample rate
    dataset = CycleDataset.from_split(db, "test", cycle_cfg=cycle_cfg, fbank_cfg=fbank_cfg)
    ev = evaluate(model, dataset, device, cfg.train.eval_batch_size, progress=True,
                  meta_definitions=metadata_definitions(cfg))
    if out is not None:
        write_run_report(ev, Path(out), title=f"{cfg.name} on {db.root} (test split)")
    lines = [f"{cfg.name} ({meta.get('protocol', cfg.train.protocol)} protocol, epoch {meta.get('selected_epoch')}) "
             f"on {db.root}, {db.split_name} test split, {len(dataset)} cycles",
             "4-class:   " + format_scores(ev.scores), "two-class: " + format_scores(ev.scores_2class)]
    lines += [f"  {dev:<9} " + format_scores(s) for dev, s in ev.per_device.items()]
    return {"text": "\n".join(lines), "metrics": ev.metrics("test"), "n": len(dataset), "root": str(db.root)}
