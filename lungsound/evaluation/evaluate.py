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
from lungsound.models.conditioning import call_model


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
            amp: bool = False, progress: bool = False, desc: str = "evaluating",
            meta_definitions: str | None = None) -> tuple[np.ndarray, ...]:
    """Logits, labels and device indices for every item of `dataset`, in order. `meta_definitions`: the items'
    metadata goes to the model under these definitions (a model that reads it, `lungsound.models.conditioning`)."""
    was_training = model.training
    model.eval()
    logits, labels, devices = [], [], []
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, collate_fn=collate_samples)
    for batch in tqdm(loader, desc=desc, leave=False, disable=not progress):
        with torch.autocast(device_type=device.type, enabled=amp and device.type == "cuda"):
            out = call_model(model, batch.x.to(device, non_blocking=True), batch.meta, meta_definitions)
        logits.append(out.float().cpu())
        labels.append(batch.label)
        devices.append(batch.device)
    model.train(was_training)
    return torch.cat(logits).numpy(), torch.cat(labels).numpy(), torch.cat(devices).numpy()


def evaluate(model: torch.nn.Module, dataset: Dataset, device: torch.device, batch_size: int = 32, amp: bool = False,
             progress: bool = False, desc: str = "evaluating", meta_definitions: str | None = None) -> Evaluation:
    return Evaluation.from_arrays(*predict(model, dataset, device, batch_size, amp, progress, desc, meta_definitions),
                                  device_names=dataset.device_names)

