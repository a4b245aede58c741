"""Sharing trained models through the Hugging Face hub (docs/sharing.md): the upload side.

- `lungsound.sharing.card`: the model card (README.md) written from a model folder's config.yaml and meta.json;
- `lungsound.sharing.references`: the papers a model's method and data are cited by;
- `lungsound.sharing.provenance`: the MLflow run behind a folder (data fingerprint, seed-group scores);
- `lungsound.sharing.push`: staging a folder with its card and uploading it (`lungsound push`).

Reading a hub id back into a model folder (`Predictor.from_pretrained`, `predict --model`, the app) is
`lungsound.inference.sources`, where every kind of model reference is read.
"""

from lungsound.sharing.card import model_card
from lungsound.sharing.provenance import Provenance, SeedGroup, provenance_for_folder, provenance_for_run
from lungsound.sharing.push import PushResult, push, stage

__all__ = ["Provenance", "PushResult", "SeedGroup", "model_card", "provenance_for_folder", "provenance_for_run", "push",
           "stage"]
