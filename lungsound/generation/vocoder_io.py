"""Vocoder folders: save, load, fingerprint, and import a checkpoint of the reference trainer (docs/methods.md section 10).

Kong et al., "DiffWave: A Versatile Diffusion Model for Audio Synthesis", ICLR 2021.
[AFT] Kim et al., "Adversarial Fine-tuning using Generated Respiratory Sound to Address Class Imbalance", NeurIPS 2023
DGM4H workshop, arXiv 2311.06480.

A vocoder folder holds ``model.safetensors`` (the DiffWave weights) and ``vocoder.json``, i.e.
``{"format": "lungsound-vocoder", "version": 1, "config": <DiffWaveConfig>, "meta": {...}}``. It is written as a
whole: built in a hidden folder beside the target and swapped in, so a crash leaves the previous folder; the target
must be new, empty or a vocoder folder (`VOCODER_FOLDER`, `lungsound.storage.claim_output_dir`), never a folder of
other files or the one holding the imported checkpoint. When read, ``vocoder.json`` must be UTF-8 JSON of at most
1 MB, its config within ``DiffWaveConfig``'s size bounds and the training facts of its meta
(``lungsound.data.generated.TRAINING_META``: split, duration, protocol, ...) typed and in range, each a one-line error
naming the file and the key; so are the sizes of an imported checkpoint (its params and its class table).

The reference trainer (the DiffWave code the [AFT] authors trained with) saves a ``torch.save`` dict with ``step``,
``model`` (the state dict), ``optimizer``, ``params`` (sizes and noise schedules) and ``scaler``.
:func:`import_reference` reads it with weights-only unpickling only, so a file that would construct anything beyond
tensors and plain containers (and so could run code) is refused without running it. The [AFT] trainer stores ``params``
as a plain dict; a file whose ``params`` is the reference's ``AttrDict`` class is refused with the one-line re-save
recipe. Its sample rate, hop, FFT size and training noise schedule must be [AFT]'s (the samplers here assume them);
a ``class_condition`` model maps to ``num_classes`` (the size of its class embedding).
"""

from __future__ import annotations

import json
import pickle
import re
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch

from lungsound.data.download import sha256_of
from lungsound.data.generated import TRAINING_META
from lungsound.documents import check_fields, read_json
from lungsound.errors import LungsoundError, one_line
from lungsound.generation.diffusion import TRAIN_BETAS
from lungsound.generation.diffwave import DiffWave, DiffWaveConfig, step_table
from lungsound.generation.mel import HOP_LENGTH, N_FFT, SAMPLE_RATE
from lungsound.storage import FolderKind, atomic_write_text, claim_output_dir, replace_dir, temp_dir_beside

MODEL_FILE, VOCODER_FILE, FORMAT, VERSION = "model.safetensors", "vocoder.json", "lungsound-vocoder", 1
VOCODER_FOLDER = FolderKind("a vocoder folder", (MODEL_FILE, VOCODER_FILE), (MODEL_FILE, VOCODER_FILE))
RESAVE_HINT = ("re-save it in the reference environment with torch.save({**ckpt, 'params': dict(ckpt['params'])}, "
               "path), where ckpt = torch.load(path), and import that file")


def save_vocoder(folder: str | Path, model: DiffWave, config: DiffWaveConfig, meta: dict[str, Any],
                 source: str | Path | None = None) -> Path:
    """Write `folder` (model.safetensors + vocoder.json) atomically as a whole; returns the folder. It must be new,
    empty or a vocoder folder (`VOCODER_FOLDER`), and not hold or lie inside `source` (what it is made from)."""
    from safetensors.torch import save_file

    folder = Path(folder)
    claim_output_dir(folder, VOCODER_FOLDER, source)
    document = json.dumps({"format": FORMAT, "version": VERSION, "config": config.to_dict(), "meta": meta}, indent=2,
                          default=float) + "\n"
    tmp = temp_dir_beside(folder)
    try:
        state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
        save_file(state, str(tmp / MODEL_FILE))
        atomic_write_text(tmp / VOCODER_FILE, document)
        return replace_dir(tmp, folder, VOCODER_FOLDER, source)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _folder(path: str | Path) -> Path:
    folder = Path(path)
    if folder.is_file():
        folder = folder.parent
    if not folder.is_dir():
        raise LungsoundError("no such vocoder folder", folder)
    return folder


def _fit(model: DiffWave, state: dict[str, torch.Tensor], what: str, path: str | Path) -> None:
    """load_state_dict(strict=True), after a key and shape comparison that names the first mismatches in one line."""
    want = model.state_dict()
    missing, unexpected = sorted(set(want) - set(state)), sorted(set(state) - set(want))
    wrong = [f"{k} {tuple(state[k].shape)} vs {tuple(want[k].shape)}" for k in want
             if k in state and state[k].shape != want[k].shape]
    problems = [f"{label} {len(items)} (first: {', '.join(items[:3])})"
                for label, items in (("missing", missing), ("unexpected", unexpected), ("shape mismatch", wrong))
                if items]
    if problems:
        raise LungsoundError(f"{what} do not fit the DiffWave it describes: {'; '.join(problems)}", path)
    model.load_state_dict(state, strict=True)


def load_vocoder(folder: str | Path, device: str | torch.device = "cpu") -> tuple[DiffWave, DiffWaveConfig, dict]:
    """Rebuild the vocoder of a folder (or of its model.safetensors) in eval mode on `device`."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    folder = _folder(folder)
    for name in (MODEL_FILE, VOCODER_FILE):
        if not (folder / name).is_file():
            raise LungsoundError(f"not a lungsound vocoder: {name} is missing", folder)
    document = read_json(folder / VOCODER_FILE, VOCODER_FILE)
    if not isinstance(document, dict) or document.get("format") != FORMAT:
        raise LungsoundError(f"{VOCODER_FILE} is not a lungsound vocoder description (format {FORMAT!r})", folder)
    if document.get("version") != VERSION:
        raise LungsoundError(f"{VOCODER_FILE} has version {document.get('version')!r}; this lungsound reads {VERSION}",
                             folder)
    meta = document.get("meta", {})
    if not isinstance(meta, dict):
        raise LungsoundError(f"{VOCODER_FILE}: 'meta' must be an object, got {type(meta).__name__}", folder)
    check_fields(meta, TRAINING_META, folder / VOCODER_FILE, "meta.")  # what synth cuts the source cycles from
    config = DiffWaveConfig.from_dict(document.get("config"), folder / VOCODER_FILE)
    try:
        state = load_file(str(folder / MODEL_FILE))
    except (SafetensorError, OSError, ValueError) as exc:
        raise LungsoundError(f"corrupt {MODEL_FILE}: {exc}", folder) from None
    model = DiffWave(config)
    _fit(model, state, f"the weights in {MODEL_FILE}", folder)
    return model.to(device).eval(), config, meta


def vocoder_sha256(folder: str | Path) -> str:
    """The SHA-256 (hex) of the folder's model.safetensors."""
    path = _folder(folder) / MODEL_FILE
    if not path.is_file():
        raise LungsoundError(f"not a lungsound vocoder: {MODEL_FILE} is missing", path.parent)
    return sha256_of(path)


def _read_reference(path: Path) -> dict:
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        found = re.search(r"GLOBAL ([\w.]+)", str(exc))
        name = found.group(1) if found else None
        if name is None:
            raise LungsoundError("refused: not a torch checkpoint that weights-only loading can read", path) from None
        if name.rsplit(".", 1)[-1][:1].isupper():
            raise LungsoundError(f"refused: the checkpoint stores an instance of the custom class {name} (the "
                                 f"reference code's AttrDict params?), which weights-only loading does not construct; "
                                 f"{RESAVE_HINT}", path) from None
        raise LungsoundError(f"refused: loading it would call {name}, which is not a tensor or plain container "
                             f"(a pickle that runs code); nothing was executed", path) from None
    except Exception as exc:  # not a zip/pickle at all, truncated, ...
        raise LungsoundError(f"not a readable torch checkpoint: {one_line(exc, limit=200)}", path) from None
    needed = {"model", "params"}
    if not isinstance(ckpt, dict) or not needed <= set(ckpt):
        keys = sorted(map(str, ckpt)) if isinstance(ckpt, dict) else type(ckpt).__name__
        raise LungsoundError(f"not a reference DiffWave checkpoint (needs 'model' and 'params'; has {keys})", path)
    if not isinstance(ckpt["params"], dict):
        raise LungsoundError(f"not a reference DiffWave checkpoint: 'params' is a {type(ckpt['params']).__name__}",
                             path)
    model = ckpt["model"]
    if not isinstance(model, dict) or not all(isinstance(v, torch.Tensor) for v in model.values()):
        raise LungsoundError("not a reference DiffWave checkpoint: 'model' is not a state dict of tensors", path)
    return ckpt


def _int_param(params: dict, key: str, default: int | None, path: Path) -> int:
    if key not in params and default is None:
        raise LungsoundError(f"reference params: {key} is missing", path)
    value = params.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int):
        raise LungsoundError(f"reference params: {key} must be an integer, got {value!r}", path)
    return value


def _config_from_params(params: dict, state: dict[str, torch.Tensor], path: Path) -> DiffWaveConfig:
    if params.get("unconditional"):
        raise LungsoundError("the checkpoint is an unconditional DiffWave; lungsound needs a mel-conditioned vocoder",
                             path)
    for key, want in (("sample_rate", SAMPLE_RATE), ("hop_samples", HOP_LENGTH), ("n_fft", N_FFT)):
        if key in params and params[key] != want:
            raise LungsoundError(f"reference params: {key} is {params[key]!r}, but the [AFT] vocoder mel needs {want}",
                                 path)
    schedule = params.get("noise_schedule")
    if not isinstance(schedule, (list, tuple)) or not schedule:
        raise LungsoundError("reference params: noise_schedule must be a list of betas", path)
    try:
        betas = np.asarray(schedule, dtype=np.float64)
    except (TypeError, ValueError):
        raise LungsoundError("reference params: noise_schedule must be a list of numbers", path) from None
    if betas.shape != (len(TRAIN_BETAS),) or not np.allclose(betas, TRAIN_BETAS, rtol=0, atol=1e-9):
        raise LungsoundError(f"reference params: the training noise schedule ({len(schedule)} betas) is not [AFT]'s "
                             f"linspace(1e-4, 0.05, 50), which lungsound's samplers use", path)
    num_classes = None
    if params.get("class_condition"):
        table = state.get("diffusion_embedding.class_embedding.weight")
        num_classes = int(table.shape[0]) if table is not None else 4
    sizes = {key: _int_param(params, key, default, path) for key, default in (
        ("residual_layers", None), ("residual_channels", None), ("dilation_cycle_length", None), ("n_mels", 80),
        ("hop_samples", 256))}
    try:
        return DiffWaveConfig(**sizes, noise_steps=len(schedule), num_classes=num_classes)
    except LungsoundError as exc:
        raise LungsoundError(f"reference params: {exc.problem}", path) from None


def _plain(value: Any) -> Any:
    """`value` with only JSON types (for meta)."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return repr(value)


def import_reference(path: str | Path, out: str | Path) -> Path:
    """Convert a reference-trainer checkpoint (``weights.pt``) into a lungsound vocoder folder `out`; returns `out`."""
    path = Path(path)
    if not path.is_file():
        raise LungsoundError("no such reference checkpoint file", path)
    claim_output_dir(out, VOCODER_FOLDER, path)  # before the checkpoint is read: a refused --out costs nothing
    ckpt = _read_reference(path)
    state = dict(ckpt["model"])
    if state and all(k.startswith("module.") for k in state):  # saved from a DistributedDataParallel wrapper
        state = {k[len("module."):]: v for k, v in state.items()}
    params = ckpt["params"]
    config = _config_from_params(params, state, path)
    table = state.pop("diffusion_embedding.embedding", None)  # older trainers kept the table as a persistent buffer
    if table is not None and (table.shape != (config.noise_steps, 128)
                              or not torch.allclose(table.float(), step_table(config.noise_steps), atol=1e-4)):
        raise LungsoundError("the stored step-embedding table differs from DiffWave's sinusoidal table", path)
    model = DiffWave(config)
    _fit(model, state, "the weights in the checkpoint", path)
    step = ckpt.get("step")
    if isinstance(step, torch.Tensor) and step.numel() == 1:
        step = int(step.item())
    meta = {"source": "reference checkpoint", "source_file": path.name, "source_sha256": sha256_of(path),
            "step": step if isinstance(step, int) and not isinstance(step, bool) else None,
            "reference_params": _plain(params)}
    return save_vocoder(out, model, config, meta, source=path)

