"""Evaluate a classifier on a cycle dataset: ICBHI Sp/Se/Score (4-class and two-class), per-class and per-device (named
by the dataset's device vocabulary, `Database.devices`; a device without cycles has no entry)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from lungsound.data.dataset import collate_samples
from lungsound.evaluation.metrics import icbhi_scores, per_group_scores


@dataclass
class Evaluation:
    scores: dict  # icbhi_scores(): sp, se, score, per_class_acc, confusion, n
    scores_2class: dict
    per_device: dict  # device name -> scores
    logits: np.ndarray
    labels: np.ndarray
    devices: np.ndarray

    @classmethod
    def from_arrays(cls, logits: np.ndarray, labels: np.ndarray, devices: np.ndarray,
                    device_names: Sequence[str]) -> "Evaluation":
        """Scores of given logits (N, C), labels (N,) and device indices (N,) into `device_names` (the vocabulary of
        the database, or the one stored with a saved model's meta)."""
        preds = logits.argmax(axis=1)
        return cls(scores=icbhi_scores(labels, preds), scores_2class=icbhi_scores(labels, preds, two_class_eval=True),
                   per_device=per_group_scores(labels, preds, devices, names=list(device_names)),
                   logits=logits, labels=labels, devices=devices)

    @property
    def predictions(self) -> np.ndarray:
        return self.logits.argmax(axis=1)

    def metrics(self, prefix: str) -> dict[str, float]:
        """Flat numbers for MLflow: <prefix>_sp/_se/_score, two-class score, per-class and per-device accuracy."""
        s = self.scores
        out = {f"{prefix}_sp": s["sp"], f"{prefix}_se": s["se"], f"{prefix}_score": s["score"],
               f"{prefix}_se_2class": self.scores_2class["se"], f"{prefix}_score_2class": self.scores_2class["score"]}
        out.update({f"{prefix}_acc_{name}": acc for name, acc in s["per_class_acc"].items()})
        out.update({f"{prefix}_score_{dev}": d["score"] for dev, d in self.per_device.items()})
        return {k: float(v) for k, v in out.items()}


@torch.no_grad()
def predict(model: torch.nn.Module, dataset: Dataset, device: torch.device, batch_size: int = 32,
            amp: bool = False, progress: bool = False, desc: str = "evaluating") -> tuple[np.ndarray, ...]:
    """Logits, labels and device indices for every item of `dataset`, in order."""
    was_training = model.training
    model.eval()
    logits, labels, devices = [], [], []
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, collate_fn=collate_samples)
    for batch in tqdm(loader, desc=desc, leave=False, disable=not progress):
        with torch.autocast(device_type=device.type, enabled=amp and device.type == "cuda"):
            out = model(batch.x.to(device, non_blocking=True))
        logits.append(out.float().cpu())
        labels.append(batch.label)
        devices.append(batch.device)
    model.train(was_training)
    return torch.cat(logits).numpy(), torch.cat(labels).numpy(), torch.cat(devices).numpy()


def evaluate(model: torch.nn.Module, dataset: Dataset, device: torch.device, batch_size: int = 32, amp: bool = False,
             progress: bool = False, desc: str = "evaluating") -> Evaluation:
    return Evaluation.from_arrays(*predict(model, dataset, device, batch_size, amp, progress, desc),
                                  device_names=dataset.device_names)


def evaluate_checkpoint(checkpoint=None, run_id: str | None = None, root=None, split: str | None = None,
                        out=None) -> dict:
    """`lungsound evaluate`: load a model folder or an MLflow run's model and score it on a test split."""
    import tempfile
    from pathlib import Path

    from lungsound.data.database import open_database
    from lungsound.data.dataset import CycleDataset
    from lungsound.data.default import resolve_root
    from lungsound.evaluation.metrics import format_scores
    from lungsound.models.build import input_configs
    from lungsound.models.folder import load_model

    with tempfile.TemporaryDirectory() as tmp:
        if run_id is not None:
            from lungsound.tracking import download_artifacts

            checkpoint = download_artifacts(run_id, "model", tmp)
        device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        model, cfg, meta = load_model(checkpoint, device=device)
    db = open_database(resolve_root(root if root is not None else cfg.data.root), split=split or cfg.data.split,
                       format=cfg.data.format)
    cycle_cfg, fbank_cfg = input_configs(cfg)  # cycles at the model's own sample rate
    dataset = CycleDataset.from_split(db, "test", cycle_cfg=cycle_cfg, fbank_cfg=fbank_cfg)
    ev = evaluate(model, dataset, device, cfg.train.eval_batch_size, progress=True)
    if out is not None:
        from lungsound.results.reports import write_run_report

        write_run_report(ev, Path(out), title=f"{cfg.name} on {db.root} (test split)")
    lines = [f"{cfg.name} ({meta.get('protocol', cfg.train.protocol)} protocol, epoch {meta.get('selected_epoch')}) "
             f"on {db.root}, {db.split_name} test split, {len(dataset)} cycles",
             "4-class:   " + format_scores(ev.scores), "two-class: " + format_scores(ev.scores_2class)]
    lines += [f"  {dev:<9} " + format_scores(s) for dev, s in ev.per_device.items()]
    return {"text": "\n".join(lines), "metrics": ev.metrics("test"), "n": len(dataset), "root": str(db.root)}
