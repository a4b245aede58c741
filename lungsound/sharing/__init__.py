"""Sharing trained models through the Hugging Face hub (docs/sharing.md).

- `lungsound.sharing.card`: the model card (README.md) written from a model folder's config.yaml and meta.json;
- `lungsound.sharing.references`: the papers a model's method and data are cited by;
- `lungsound.sharing.provenance`: the MLflow run behind a folder (data fingerprint, seed-group scores);
- `lungsound.sharing.push`: staging a folder with its card and uploading it (`lungsound push`);
- `lungsound.sharing.hub`: a hub id resolved to a cached model folder (`Predictor.from_pretrained`, `predict --model`).
"""

from lungsound.sharing.card import model_card
from lungsound.sharing.hub import HubRef, is_hub_source, parse_hub_id, resolve_model
from lungsound.sharing.provenance import Provenance, SeedGroup, provenance_for_folder, provenance_for_run
from lungsound.sharing.push import PushResult, push, stage

__all__ = ["HubRef", "Provenance", "PushResult", "SeedGroup", "is_hub_source", "model_card", "parse_hub_id", "push",
           "provenance_for_folder", "provenance_for_run", "resolve_model", "stage"]
