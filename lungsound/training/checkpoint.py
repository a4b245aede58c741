"""Checkpoints: the selected model (for `lungsound evaluate`, `predict` and the app) and the training state (for --resume).

A model checkpoint is a folder: `model.safetensors` (the classifier's weights; training-only heads are not needed for
inference), `config.yaml` (the resolved experiment config, from which the model is rebuilt without downloading anything)
and `meta.json` (class names, selected epoch, scores, protocol, and later calibration). The training state `last.pt`
holds everything needed to continue bit-for-bit: model and objective weights, optimiser and AMP scaler state, RNG
states, the epoch history and the MLflow run id.
"""

from __future__ import annotations

import copy
import json
import shutil
from pathlib import Path
from typing import Any

import torch
from torch import nn

from lungsound.calibration import check_temperature
from lungsound.config import ExperimentConfig, config_from_dict, dump_config
from lungsound.data.labels import CLASSES
from lungsound.documents import load_yaml, read_text
from lungsound.errors import LungsoundError
from lungsound.storage import FolderKind, atomic_write, claim_output_dir, replace_dir, temp_dir_beside

MODEL_FILE, CONFIG_FILE, META_FILE = "model.safetensors", "config.yaml", "meta.json"
EVAL_FILE = "evaluation.npz"  # the selected epoch's evaluation arrays, beside a run's best/ model
MODEL_FOLDER = FolderKind("a model folder", (MODEL_FILE, CONFIG_FILE), (MODEL_FILE, CONFIG_FILE, META_FILE, EVAL_FILE))


def check_model_input(cfg: ExperimentConfig) -> None:
    """A one-line error unless the model exists and data.input is what it takes (waveform for speech models)."""
    from lungsound.models import SPEECH_MODELS, model_config_keys

    model_config_keys(cfg.model.name)  # an unknown name is a one-line error listing the known ones
    wants = "waveform" if cfg.model.name in SPEECH_MODELS else "fbank"
    if cfg.data.input != wants:
        raise LungsoundError(f"model {cfg.model.name!r} takes {wants} input, but data.input is {cfg.data.input!r}: set "
                             f"data.input={wants}" + (" and augment.specaug=false" if wants == "waveform" else ""))


def build_model(cfg: ExperimentConfig, load_weights: bool = True) -> nn.Module:
    """The model of an experiment; pretrained weights (cfg.model.pretrained or model.params.weights) are loaded only when
    `load_weights`: a checkpoint's config never makes `load_model` fetch or read anything but its own weights file."""
    from lungsound.models import create_model, frames_for_duration, model_config_keys

    check_model_input(cfg)
    keys = model_config_keys(cfg.model.name)
    params = {"num_classes": len(CLASSES), **cfg.model.params}
    if "protocol_masking" in keys:  # [REPAUG]: paper keeps the checkpoint's masking/layer drop, clean turns them off
        params.setdefault("protocol_masking", "checkpoint" if cfg.train.protocol == "paper" else "off")
    if "input_frames" in keys:
        params.setdefault("input_frames", frames_for_duration(cfg.data.duration))
    if not load_weights:
        params.pop("weights", None)
    elif cfg.model.pretrained:
        if "weights" not in keys:
            raise LungsoundError(f"model {cfg.model.name!r} cannot load pretrained weights ({cfg.model.pretrained})")
        params.update(weights=cfg.model.pretrained, pos_embed=cfg.model.pos_embed, strict_weights=cfg.model.strict)
    return create_model(cfg.model.name, **params)


def checkpoint_config(cfg: ExperimentConfig, model: nn.Module) -> ExperimentConfig:
    """The config to store with `model`'s weights: with what rebuilds it offline (a speech model's backbone config)."""
    rebuild = getattr(model, "rebuild_params", None)
    if rebuild is None:
        return cfg
    out = copy.deepcopy(cfg)
    out.model.params = {**out.model.params, **rebuild()}
    return out


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


def read_meta(folder: str | Path) -> dict:
    """A model folder's meta.json, checked: a JSON object whose calibration temperature (if any) is a number in
    `lungsound.calibration.TEMPERATURE_RANGE`."""
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
        first = str(exc).strip().splitlines()
        detail = next((line.strip() for line in first if "size mismatch" in line), first[0] if first else "")
        raise LungsoundError(f"{MODEL_FILE} does not fit the model in {CONFIG_FILE}: {detail}", folder) from None
    if missing or unexpected:
        raise LungsoundError(f"{MODEL_FILE} does not fit the model in {CONFIG_FILE}: missing {missing[:5]}, "
                             f"unexpected {unexpected[:5]}", folder)
    return model.to(device).eval(), cfg, meta


def save_state(path: str | Path, state: dict[str, Any]) -> None:
    """Write the training state atomically (a crash mid-write leaves the previous checkpoint intact).

    The state must hold only tensors and plain containers (dicts, lists, tuples, numbers, strings, None), so that
    `load_state` can read it with weights-only unpickling: configs are stored as dicts, RNG states as tensors.
    """
    with atomic_write(path) as tmp:
        torch.save(state, tmp)


def load_state(path: str | Path) -> dict[str, Any]:
    """Read a `last.pt` with weights-only unpickling: a file that would run code (or is not a state) is refused."""
    path = Path(path)
    if path.is_dir():
        path = path / "last.pt"
    state = read_weights_only(path)
    needed = {"config", "epoch", "model", "optimizer", "rng", "history", "folder"}
    if not isinstance(state, dict) or not needed <= set(state):
        raise LungsoundError(f"not a lungsound training state (needs {', '.join(sorted(needed))})", path)
    if not isinstance(state["config"], dict):
        raise LungsoundError("not a lungsound training state: its config is not a mapping", path)
    state["config"] = config_from_dict(state["config"], f"{path} (config)")
    return state


def read_weights_only(path: str | Path) -> Any:
    """`torch.load` with weights-only unpickling (tensors and plain containers): a pickle that would import or run
    anything else is refused in one line naming the file, and nothing of it is executed."""
    import pickle

    path = Path(path)
    if not path.is_file():
        raise LungsoundError("no training state to resume from (no such file)", path)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        reason = str(exc).strip().splitlines()
        detail = next((line for line in reason if "Unsupported global" in line or "GLOBAL" in line), reason[0])
        raise LungsoundError(f"refused: it needs more than tensors and plain containers to load ({detail.strip()[:200]})", path) from None
    except Exception as exc:
        raise LungsoundError(f"unreadable torch-saved state: {str(exc).splitlines()[0] if str(exc) else exc!r}",
                             path) from None
    return state


def rng_state() -> dict[str, Any]:
    """Python, NumPy, torch (and CUDA) RNG states in weights-only-loadable form."""
    import random

    import numpy as np

    kind, keys, pos, has_gauss, cached = np.random.get_state()
    state = {"python": random.getstate(), "numpy": [kind, torch.from_numpy(np.asarray(keys).astype(np.int64)),
                                                    int(pos), int(has_gauss), float(cached)],
             "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    import random

    import numpy as np

    python = state["python"]
    random.setstate((python[0], tuple(python[1]), python[2]))
    kind, keys, pos, has_gauss, cached = state["numpy"]
    keys = keys.numpy() if isinstance(keys, torch.Tensor) else np.asarray(keys)
    np.random.set_state((kind, keys.astype(np.uint32), int(pos), int(has_gauss), float(cached)))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
