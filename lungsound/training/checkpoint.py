"""The training state (for --resume): `last.pt` holds everything needed to continue bit-for-bit: model and objective
weights, optimiser and AMP scaler state, RNG states, the epoch history and the MLflow run id. It is read with
weights-only unpickling. The selected model is a model folder (`lungsound.models.folder`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from lungsound.config import config_from_dict
from lungsound.errors import LungsoundError, one_line
from lungsound.storage import atomic_write


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
        detail = one_line(exc, limit=200, prefer=("Unsupported global", "GLOBAL"))
        raise LungsoundError(f"refused: it needs more than tensors and plain containers to load ({detail})", path) from None
    except Exception as exc:
        raise LungsoundError(f"unreadable torch-saved state: {one_line(exc, limit=None)}", path) from None
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
