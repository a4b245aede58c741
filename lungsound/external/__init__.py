"""External validation: score a trained model on whole recordings of another dataset, against recording-level labels.

`lungsound validate-external --dataset NAME --root DIR` looks NAME up in `ADAPTERS`. An adapter (`base.DatasetAdapter`)
finds the recordings under DIR and labels each one crackles / wheezes present, or reports it unmappable with its
reason; `validate.validate_external` runs whole-recording inference and computes the figures (`stats`), and `record`
stores them in the model's meta.json and its MLflow run. A new dataset is one small adapter module added here.
"""

from __future__ import annotations

from lungsound.errors import LungsoundError
from lungsound.external.base import (FINDINGS, DatasetAdapter, ExternalSet, LabelledRecording, Unmappable,
                                     finding_of, flags_of)
from lungsound.external.kauh import KauhAdapter

ADAPTERS: dict[str, DatasetAdapter] = {adapter.name: adapter for adapter in (KauhAdapter(),)}


def get_adapter(name: str) -> DatasetAdapter:
    """The adapter registered under `name` (a one-line error listing the known ones otherwise)."""
    try:
        return ADAPTERS[name]
    except KeyError:
        raise LungsoundError(f"unknown external dataset {name!r}; known: {', '.join(sorted(ADAPTERS))}") from None


__all__ = ["ADAPTERS", "FINDINGS", "DatasetAdapter", "ExternalSet", "LabelledRecording", "Unmappable", "finding_of",
           "flags_of", "get_adapter"]
