"""Handing each sample's metadata to a model that reads it (`ModelSpec.uses_metadata`, e.g. BTS's `clap_bts`).

Such a model's ``forward(x, meta=None)`` and ``forward_features(x, patch_hook=None, meta=None)`` take ``meta``: one
mapping per sample with ``age``, ``sex``, ``location``, ``device`` (`SampleMeta.as_mapping(definitions)`; "paper"
definitions read the patient-level chest location, as the reference code does). Training, evaluation and inference
pass it: the trainer hands an objective `bind_metadata(model, batch.meta, definitions)`, which the objective calls
like the model itself (so every objective works with a metadata model unchanged); evaluation and the predictor call
``model(x, meta=...)``. A model that reads no metadata is handed over as it is (``definitions`` None).
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import torch
from torch import nn

from lungsound.data.sample_meta import PROMPT_FIELDS, SampleMeta

MetaRows = list[dict[str, Any]]


def meta_rows(metas: Sequence[SampleMeta | Mapping[str, Any] | None], definitions: str) -> MetaRows:
    """One mapping of the four fields per sample (a record under `definitions`; None: every field unknown)."""
    rows = []
    for m in metas:
        if isinstance(m, SampleMeta):
            rows.append(m.as_mapping(definitions))
        elif m is None:
            rows.append(dict.fromkeys(PROMPT_FIELDS))
        else:
            rows.append({k: m.get(k) for k in PROMPT_FIELDS})
    return rows


class MetadataBound:
    """`model` with one batch's metadata rows bound: ``forward_features`` and calls pass ``meta=rows``; anything else
    (``forward_head``, ``feature_dim``, parameters, ...) is the model's own."""

    def __init__(self, model: nn.Module, rows: MetaRows | None):
        self.model, self.rows = model, rows

    def forward_features(self, x: torch.Tensor, patch_hook=None) -> torch.Tensor:
        return self.model.forward_features(x, patch_hook=patch_hook, meta=self.rows)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x, meta=self.rows)

    def __getattr__(self, name: str):
        return getattr(self.model, name)


def bind_metadata(model: nn.Module, metas: Sequence | None, definitions: str | None):
    """`model` itself when `definitions` is None (it reads no metadata), else `MetadataBound` over the batch's rows
    (`metas` None: a batch without records, every field unknown)."""
    if definitions is None:
        return model
    return MetadataBound(model, None if metas is None else meta_rows(metas, definitions))


def call_model(model: nn.Module, x: torch.Tensor, metas: Sequence | None, definitions: str | None) -> torch.Tensor:
    """The logits of `x` (with the samples' metadata when the model reads it)."""
    return model(x) if definitions is None else model(x, meta=None if metas is None else meta_rows(metas, definitions))
