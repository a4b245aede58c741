"""External validation: score a trained model on whole recordings of another dataset, against recording-level labels.

`lungsound validate-external --dataset NAME --root DIR` looks NAME up in `ADAPTERS` (a `lungsound.registry.Registry`).
An adapter (`base.DatasetAdapter`) finds the recordings under DIR and labels each one crackles / wheezes present, or
reports it unmappable with its reason; `validate.validate_external` runs whole-recording inference and computes the
figures (`stats`), and `record` stores them in the model's meta.json and its MLflow run. A new dataset is one small
adapter module added here, which registers its adapter on `ADAPTERS` and is imported below.
"""

from __future__ import annotations

from lungsound.external import kauh  # noqa: F401 (registers the KAUH adapter)
from lungsound.external.base import (ADAPTERS, FINDINGS, DatasetAdapter, ExternalSet, LabelledRecording, Unmappable,
                                     finding_of, flags_of)


def get_adapter(name: str) -> DatasetAdapter:
    """The adapter registered under `name` (a one-line error listing the known ones otherwise)."""
    return ADAPTERS.get(name)


__all__ = ["ADAPTERS", "FINDINGS", "DatasetAdapter", "ExternalSet", "LabelledRecording", "Unmappable", "finding_of",
           "flags_of", "get_adapter"]
