"""Checkpoints: the selected model (for `lungsound evaluate`, `predict` and the app) and the training state (for --resume).

A model checkpoint is a folder: `model.safetensors` (the classifier's weights; training-only heads are not needed for
inference), `config.yaml` (the resolved experiment config, from which the model is rebuilt without downloading anything)
and `meta.json` (class names, selected epoch, scores, protocol, and later calibration). The training state `last.pt`
holds everything needed to continue bit-for-bit: model and objective weights, optimiser and AMP scaler state, RNG
states, the epoch history and the MLflow run id.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch
import yaml
from torch import nn

from lungsound.config import ExperimentConfig, config_from_dict, dump_config
from lungsound.data.labels import CLASSES
from lungsound.errors import LungsoundError

MODEL_FILE, CONFIG_FILE, META_FILE = "model.safetensors", "config.yaml", "meta.json"


def build_model(cfg: ExperimentConfig, load_weights: bool = True) -> nn.Module:
    """The model of an experiment; pretrained weights (cfg.model.pretrained) are loaded only when `load_weights`."""
    from lungsound.models import create_model, frames_for_duration, model_config_keys

    keys = model_config_keys(cfg.model.name)
    params = {"num_classes": len(CLASSES), **cfg.model.params}
    if "input_frames" in keys:
        params.setdefault("input_frames", frames_for_duration(cfg.data.duration))
    if cfg.model.pretrained and load_weights:
        if "weights" not in keys:
            raise LungsoundError(f"model {cfg.model.name!r} cannot load pretrained weights ({cfg.model.pretrained})")
        params.update(weights=cfg.model.pretrained, pos_embed=cfg.model.pos_embed, strict_weights=cfg.model.strict)
    return create_model(cfg.model.name, **params)


def save_model(folder: str | Path, model: nn.Module, cfg: ExperimentConfig, meta: dict[str, Any]) -> Path:
    from safetensors.torch import save_file

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(folder / MODEL_FILE))
    (folder / CONFIG_FILE).write_text(dump_config(cfg))
    (folder / META_FILE).write_text(json.dumps({"classes": list(CLASSES), **meta}, indent=2, default=float))
    return folder


def load_model(path: str | Path, device: str | torch.device = "cpu") -> tuple[nn.Module, ExperimentConfig, dict]:
    """Rebuild a model from a checkpoint folder (or its model.safetensors) without fetching any weights."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    folder = Path(path)
    if folder.is_file():
        folder = folder.parent
    for name in (MODEL_FILE, CONFIG_FILE):
        if not (folder / name).exists():
            raise LungsoundError(f"not a lungsound checkpoint: {name} is missing", folder)
    try:
        raw = yaml.safe_load((folder / CONFIG_FILE).read_text())
    except yaml.YAMLError as exc:
        raise LungsoundError(f"unreadable {CONFIG_FILE}: {exc}", folder) from None
    cfg = config_from_dict(raw, str(folder / CONFIG_FILE))
    meta = json.loads((folder / META_FILE).read_text()) if (folder / META_FILE).exists() else {}
    model = build_model(cfg, load_weights=False)
    try:
        state = load_file(str(folder / MODEL_FILE))
    except (SafetensorError, OSError) as exc:
        raise LungsoundError(f"corrupt {MODEL_FILE}: {exc}", folder) from None
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise LungsoundError(f"{MODEL_FILE} does not fit the model in {CONFIG_FILE}: missing {missing[:5]}, "
                             f"unexpected {unexpected[:5]}", folder)
    return model.to(device).eval(), cfg, meta


def save_state(path: str | Path, state: dict[str, Any]) -> None:
    """Write the training state atomically (a crash mid-write leaves the previous checkpoint intact)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)


def load_state(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if path.is_dir():
        path = path / "last.pt"
    if not path.exists():
        raise LungsoundError("no training state to resume from (expected last.pt)", path)
    try:
        return torch.load(path, map_location="cpu", weights_only=False)
    except Exception as exc:
        raise LungsoundError(f"unreadable training state: {exc}", path) from None


def rng_state() -> dict[str, Any]:
    import random

    import numpy as np

    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    import random

    import numpy as np

    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
