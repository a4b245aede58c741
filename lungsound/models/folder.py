"""The saved-model folder: what `lungsound train` selects, and what evaluation, inference, export, sharing and the app read.

A model folder holds `model.safetensors` (the classifier's weights; training-only heads are not needed for inference),
`config.yaml` (the resolved experiment config, from which the model is rebuilt without downloading anything) and
`meta.json` (class names, selected epoch, scores, protocol, calibration, external evaluations). It is written as a
whole (`save_model` builds it beside the target and swaps it in) and read with checks: a corrupt or hostile file is a
one-line error naming the folder and the file. The training state (`last.pt`, for --resume) is the training engine's
own (`lungsound.training.checkpoint`).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import torch
from torch import nn

from lungsound.config import ExperimentConfig, config_from_dict, dump_config
from lungsound.data.labels import CLASSES
from lungsound.documents import load_yaml, read_text
from lungsound.errors import LungsoundError, one_line
from lungsound.models.build import build_model, checkpoint_config
from lungsound.storage import FolderKind, claim_output_dir, replace_dir, temp_dir_beside

MODEL_FILE, CONFIG_FILE, META_FILE = "model.safetensors", "config.yaml", "meta.json"
EVAL_FILE = "evaluation.npz"  # the selected epoch's evaluation arrays, beside a run's best/ model
TEMPERATURE_RANGE = (0.01, 100.0)  # a stored calibration temperature (lungsound.evaluation.calibration says why)
MODEL_FOLDER = FolderKind("a model folder", (MODEL_FILE, CONFIG_FILE), (MODEL_FILE, CONFIG_FILE, META_FILE, EVAL_FILE))


def save_model(folder: str | Path, model: nn.Module | dict[str, torch.Tensor], cfg: ExperimentConfig,
               meta: dict[str, Any], extra: dict[str, bytes] | None = None) -> Path:
    """Write a model folder as a whole: it is built beside `folder` and swapped in, so a crash leaves the old one.
    `folder` must be new, empty or a model folder (`MODEL_FOLDER`), else a one-line error before anything is written.

    `extra` maps further file names to bytes (e.g. the selected epoch's evaluation) stored in the same folder.
    """
    from safetensors.torch import save_file

    folder = Path(folder)
    unknown = sorted(set(extra or {}) - set(MODEL_FOLDER.files))
    if unknown:
        raise ValueError(f"save_model: {unknown} are not files of a model folder ({MODEL_FOLDER.files})")
    claim_output_dir(folder, MODEL_FOLDER)
    tmp = temp_dir_beside(folder)
    try:
        if isinstance(model, nn.Module):
            cfg = checkpoint_config(cfg, model)
        weights = model.state_dict() if isinstance(model, nn.Module) else model
        state = {k: v.detach().cpu().contiguous() for k, v in weights.items()}
        save_file(state, str(tmp / MODEL_FILE))
        (tmp / CONFIG_FILE).write_text(dump_config(cfg))
        (tmp / META_FILE).write_text(json.dumps({"classes": list(CLASSES), **meta}, indent=2, default=float))
        for name, data in (extra or {}).items():
            (tmp / name).write_bytes(data)
        return replace_dir(tmp, folder, MODEL_FOLDER)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def check_temperature(value, where: str = "the calibration temperature") -> float:
    """`value` as a float when it is a number in `TEMPERATURE_RANGE`, else a one-line error naming `where`."""
    low, high = TEMPERATURE_RANGE
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not low <= value <= high:
        raise LungsoundError(f"{where} must be a positive number from {low:g} to {high:g}, got {value!r}")
    return float(value)


def read_meta(folder: str | Path) -> dict:
    """A model folder's meta.json, checked: a JSON object whose calibration temperature (if any) is a number in
    `TEMPERATURE_RANGE`."""
    path = Path(folder) / META_FILE
    if not path.exists():
        return {}
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise LungsoundError(f"corrupt {META_FILE}: {exc}", folder) from None
    if not isinstance(meta, dict):
        raise LungsoundError(f"{META_FILE} must hold a JSON object, got {type(meta).__name__}", folder)
    for key in ("metrics", "calibration", "evaluations"):  # evaluations: lungsound.external.record
        if meta.get(key) is not None and not isinstance(meta[key], dict):
            raise LungsoundError(f"{META_FILE}: {key!r} must be an object, got {type(meta[key]).__name__}", folder)
    try:
        check_temperature((meta.get("calibration") or {}).get("temperature", 1.0))
    except LungsoundError as exc:
        raise LungsoundError(f"{META_FILE}: {exc}", folder) from None
    classes = meta.get("classes", list(CLASSES))
    if not isinstance(classes, list) or classes != list(CLASSES):
        raise LungsoundError(f"{META_FILE}: classes {classes!r} are not the lungsound classes {list(CLASSES)}", folder)
    return meta


def read_config(folder: str | Path) -> ExperimentConfig:
    """A model folder's config.yaml, checked like an experiment file (its model's parameters by the model's
    registration, so a hostile size is refused before anything is built)."""
    path = Path(folder) / CONFIG_FILE
    try:
        raw = load_yaml(read_text(path, CONFIG_FILE), path)  # bounded: size, depth, aliases, duplicate keys
    except LungsoundError as exc:
        raise LungsoundError(f"unreadable {CONFIG_FILE}: {exc.problem}", folder) from None
    if not isinstance(raw, dict) or not raw:
        raise LungsoundError(f"{CONFIG_FILE} is empty or not a mapping of sections", folder)
    return config_from_dict(raw, str(path))


def load_model(path: str | Path, device: str | torch.device = "cpu") -> tuple[nn.Module, ExperimentConfig, dict]:
    """Rebuild a model from a checkpoint folder (or its model.safetensors) without fetching any weights."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    folder = Path(path)
    if folder.is_file():
        folder = folder.parent
    if not folder.is_dir():
        raise LungsoundError("no such model folder", folder)
    for name in (MODEL_FILE, CONFIG_FILE):
        if not (folder / name).is_file():
            raise LungsoundError(f"not a lungsound checkpoint: {name} is missing", folder)
    cfg = read_config(folder)
    meta = read_meta(folder)
    try:
        model = build_model(cfg, load_weights=False)
    except LungsoundError as exc:
        raise LungsoundError(f"{CONFIG_FILE} describes no buildable model: {exc}", folder) from None
    try:
        state = load_file(str(folder / MODEL_FILE))
    except (SafetensorError, OSError, ValueError) as exc:
        raise LungsoundError(f"corrupt {MODEL_FILE}: {exc}", folder) from None
    try:
        missing, unexpected = model.load_state_dict(state, strict=False)
    except RuntimeError as exc:  # size mismatches
        detail = one_line(exc, limit=None, prefer=("size mismatch",))
        raise LungsoundError(f"{MODEL_FILE} does not fit the model in {CONFIG_FILE}: {detail}", folder) from None
    if missing or unexpected:
        raise LungsoundError(f"{MODEL_FILE} does not fit the model in {CONFIG_FILE}: missing {missing[:5]}, "
                             f"unexpected {unexpected[:5]}", folder)
    return model.to(device).eval(), cfg, meta
