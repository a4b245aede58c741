"""Runtimes: what computes the logits of a model folder's classifier, and which one runs a given folder.

Every runtime is registered on `RUNTIMES` under its name (`lungsound predict --runtime NAME`,
`Predictor.from_checkpoint(folder, runtime=NAME)`, the app's picker) and follows the `Runtime` protocol below. `torch`
(`TorchRuntime`, here) runs a checkpoint folder's PyTorch weights; `onnx` (`lungsound.inference.onnx_runtime`) runs the
`model.onnx` of a folder written by `lungsound export`; `openvino` (`lungsound.inference.openvino_runtime`) the
`model.xml`/`model.bin` of one written by `lungsound export --format openvino`. A new runtime is one module defining a class with the
protocol's members, registered with `@RUNTIMES.register(name)` and imported by `lungsound/inference/__init__.py`
(so that importing any of `lungsound.inference` registers it); `Predictor`, `lungsound predict --runtime` and
`lungsound export --format`, the app's picker, the model card, `lungsound push` and the hub check read it from
there and name no runtime (tests/test_runtimes.py plugs one in that way). A folder written by a runtime's `export`
records how it was made in `export.json` (the app finds exported folders by that file) and keeps the checkpoint's
config.yaml and meta.json, and its model.safetensors unless exported without them (then there is no explanation).

Which runtime runs a folder (`runtime_for(folder, requested)`), the one rule everything uses: the requested one when
a name is given (an unknown name is a one-line error listing the known ones); otherwise the exported runtime whose
files the folder holds (`holds`: a folder written by `lungsound export --format NAME`), else `DEFAULT_RUNTIME`, torch.
`Predictor.from_checkpoint` and `from_mlflow` request torch by default (an exported folder that keeps its PyTorch
weights then runs them), `from_pretrained` and `lungsound predict --model` request nothing (docs/onnx.md).

What a runtime holds: the loaded model (`model`), its precision, the largest batch it takes (`max_batch`, None for any:
dynamic int8 quantisation takes one activation scale per batch tensor, so an int8 ONNX model runs one segment per
call), whether it can explain a segment (`can_explain`: a gradient or an attention map needs the PyTorch model, which
an exported folder carries unless exported with `--no-torch-weights`), and its label for people ("PyTorch", "ONNX
Runtime int8"). `logits(batch)` gives float32 (n, classes) logits of one batch of model inputs on `threads` intra-op
threads (`lungsound.inference.batching`); batching and the checks on the logits are the predictor's.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable, ClassVar, Protocol

import numpy as np
import torch
from torch import nn

from lungsound.config import ExperimentConfig
from lungsound.errors import LungsoundError
from lungsound.inference.batching import default_threads, torch_threads
from lungsound.models.folder import CONFIG_FILE, META_FILE, MODEL_FILE, load_model
from lungsound.registry import Registry

DEFAULT_RUNTIME = "torch"


class Runtime(Protocol):
    """What a runtime provides (see the module docstring). Class attributes and class methods describe a folder it
    runs before anything is loaded; an instance is one opened folder."""

    name: ClassVar[str]  # the registered name
    title: ClassVar[str]  # the model format's name for people: "PyTorch", "ONNX"
    engine: ClassVar[str]  # the software that runs it: "PyTorch", "ONNX Runtime"
    exported: ClassVar[bool]  # a folder written by `lungsound export` (explanations use its PyTorch weights)
    files: ClassVar[tuple[str, ...]]  # the files of its folders that `lungsound push` carries, when present; the
    # first is its model file (model.safetensors, model.onnx)
    export: ClassVar[Callable[..., dict] | None]  # writes such a folder from a checkpoint (`lungsound export --format`)

    model: object  # what it runs (an nn.Module, an ONNX Runtime session wrapper, ...)
    precision: str  # "fp32", "int8", ...
    max_batch: int | None  # the largest batch `logits` takes (None: any)
    can_explain: bool  # whether `explainer()` gives a PyTorch model
    device: torch.device
    threads: int
    info: dict | None  # what the folder records about how it was made (export.json), None for a checkpoint

    @classmethod
    def holds(cls, folder: Path) -> bool:
        """Whether `folder` has the files this runtime runs."""

    @classmethod
    def precision_of(cls, folder: Path) -> str:
        """The precision of the folder's model, read without loading it (a one-line error when unreadable)."""

    @classmethod
    def describe(cls, folder: Path) -> str:
        """The model card's words for the folder's format, e.g. "ONNX int8 (`model.onnx`), run with ONNX Runtime"."""

    @classmethod
    def open(cls, folder: Path, device: str | torch.device | None = None,
             threads: int | None = None) -> tuple["Runtime", ExperimentConfig, dict]:
        """(the runtime, the folder's config, its meta), each problem a one-line `LungsoundError` naming the folder."""

    @property
    def label(self) -> str:
        """For people: "PyTorch", "ONNX Runtime fp32", "ONNX Runtime int8"."""

    @property
    def words(self) -> str:
        """One sentence on what that means (the app's model card)."""

    def logits(self, inputs: torch.Tensor) -> np.ndarray:
        """(n, classes) float32 logits of one batch of n model inputs (n <= max_batch)."""

    def explainer(self) -> nn.Module:
        """The PyTorch model explanations use (loaded on first use); a one-line error when there is none."""

    def preload(self) -> None:
        """Load now what would be read from the folder on first use: the folder is about to go away."""


RUNTIMES: Registry[type[Runtime]] = Registry("runtime")


@RUNTIMES.register("torch")
class TorchRuntime:
    """The PyTorch model of a checkpoint folder (`lungsound.models.folder`), on `device` (CUDA when available)."""

    name, title, engine, exported = "torch", "PyTorch", "PyTorch", False
    files = (MODEL_FILE, CONFIG_FILE, META_FILE)
    export = None  # a checkpoint folder is already this runtime's format
    label = "PyTorch"
    words = "PyTorch (the trained model as it is)"
    precision = "fp32"
    max_batch = None
    can_explain = True
    info = None

    def __init__(self, model: nn.Module, device: str | torch.device | None = None, threads: int | None = None):
        device = device if device is not None else ("cuda" if torch.cuda.is_available() else "cpu")
        self.device = torch.device(device)
        self.model = model.to(self.device).eval()
        self.threads = int(threads or default_threads())

    @classmethod
    def holds(cls, folder: Path) -> bool:
        return all((Path(folder) / name).is_file() for name in (MODEL_FILE, CONFIG_FILE))

    @classmethod
    def precision_of(cls, folder: Path) -> str:
        return cls.precision

    @classmethod
    def describe(cls, folder: Path) -> str:
        return f"PyTorch weights (`{MODEL_FILE}`), run with PyTorch"

    @classmethod
    def open(cls, folder: Path, device: str | torch.device | None = None,
             threads: int | None = None) -> tuple["TorchRuntime", ExperimentConfig, dict]:
        folder = Path(folder)
        made = exported_runtime(folder)
        if made is not None and not (folder / MODEL_FILE).is_file():
            raise LungsoundError(f"this exported folder holds only the {made.title} model (no PyTorch weights): use "
                                 f"the {made.name} runtime (--runtime {made.name})", folder)
        model, cfg, meta = load_model(folder, device="cpu")
        return cls(model, device, threads), cfg, meta

    def logits(self, inputs: torch.Tensor) -> np.ndarray:
        with torch_threads(self.threads), torch.inference_mode():
            return self.model(torch.as_tensor(inputs).to(self.device)).float().cpu().numpy()

    def explainer(self) -> nn.Module:
        return self.model

    def preload(self) -> None:
        pass  # everything was loaded when the folder was opened


def exported_runtime(folder: str | Path) -> type[Runtime] | None:
    """The runtime of the exported model `folder` holds (a folder written by `lungsound export`), or None."""
    folder = Path(folder)
    return next((cls for _, cls in RUNTIMES.items() if cls.exported and cls.holds(folder)), None)


def runtime_for(folder: str | Path, requested: str | None = None) -> type[Runtime]:
    """The runtime that runs `folder`: `requested` when given, else the folder's exported runtime, else torch (see the
    module docstring). An unknown name is a one-line error listing the known ones, the default first."""
    if requested is not None:
        if requested not in RUNTIMES:
            known = sorted(RUNTIMES.names(), key=lambda name: name != DEFAULT_RUNTIME)
            raise LungsoundError(f"runtime must be one of {', '.join(known)}, got {requested!r}")
        return RUNTIMES.get(requested)
    return exported_runtime(folder) or RUNTIMES.get(DEFAULT_RUNTIME)


def export_formats() -> list[str]:
    """The runtimes `lungsound export --format` can write a folder for."""
    return [name for name, cls in RUNTIMES.items() if cls.export is not None]
