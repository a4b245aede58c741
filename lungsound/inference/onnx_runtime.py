"""The `onnx` runtime (`lungsound.inference.runtimes`): a folder written by `lungsound export --format onnx`
(`lungsound.inference.onnx_export`), run with ONNX Runtime (`lungsound.inference.onnx_folder`).

It runs the folder's session, takes one segment per call for an int8 model (dynamic quantisation takes one activation
scale per batch tensor, see `lungsound.inference.onnx_export`), and explains a segment with the folder's PyTorch
weights, loaded on first use, when the folder holds them (ONNX Runtime gives no gradients or attention maps).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn

from lungsound.config import ExperimentConfig
from lungsound.errors import LungsoundError
from lungsound.inference.onnx_export import export_checkpoint
from lungsound.inference.onnx_folder import EXPORT_FILE, ONNX_FILE, OnnxModel, is_exported, load_exported, read_export
from lungsound.inference.runtimes import RUNTIMES
from lungsound.models.folder import CONFIG_FILE, META_FILE, MODEL_FILE, load_model

WORDS = {"fp32": "ONNX Runtime, exported model with 32-bit weights (the same results, faster on a CPU)",
         "int8": "ONNX Runtime, exported model with 8-bit weights in its linear layers (faster and smaller; "
                 "probabilities may differ slightly from the original)"}


@RUNTIMES.register("onnx")
class OnnxRuntime:
    """The `onnx` runtime (`lungsound.inference.runtimes.Runtime`): an exported folder's `OnnxModel`, and its PyTorch
    weights for explanations."""

    name, title, engine, exported = "onnx", "ONNX", "ONNX Runtime", True
    files = (ONNX_FILE, EXPORT_FILE, CONFIG_FILE, META_FILE, MODEL_FILE)
    can_explain: bool

    def __init__(self, model: OnnxModel, folder: str | Path, info: dict | None = None):
        self.model, self.info = model, info
        self.precision, self.threads, self.device = model.precision, model.threads, torch.device("cpu")
        self.folder = Path(folder)
        self._explainer: nn.Module | None = None
        self.can_explain = (self.folder / MODEL_FILE).is_file()

    @property
    def label(self) -> str:
        return f"ONNX Runtime {self.precision}"

    @property
    def words(self) -> str:
        return WORDS.get(self.precision, self.label)

    @property
    def max_batch(self) -> int | None:
        return 1 if self.precision == "int8" else None  # one activation scale per batch tensor

    @classmethod
    def holds(cls, folder: Path) -> bool:
        return is_exported(folder)

    @classmethod
    def precision_of(cls, folder: Path) -> str:
        return read_export(folder)["precision"]

    @classmethod
    def describe(cls, folder: Path) -> str:
        return f"ONNX {cls.precision_of(folder)} (`{ONNX_FILE}`), run with ONNX Runtime"

    @classmethod
    def open(cls, folder: Path, device=None,
             threads: int | None = None) -> tuple["OnnxRuntime", ExperimentConfig, dict]:
        model, cfg, meta, info = load_exported(folder, threads)  # always on the CPU: `device` is not used
        return cls(model, Path(folder).parent if Path(folder).is_file() else folder, info), cfg, meta

    export = staticmethod(export_checkpoint)  # `lungsound export --format onnx`

    def logits(self, inputs) -> np.ndarray:
        return self.model.logits(inputs)

    def explainer(self) -> nn.Module:
        if self._explainer is None:
            if not self.can_explain:
                raise LungsoundError(f"this fast {self.title} model has no explanation: it was exported without its "
                                     f"PyTorch weights (--no-torch-weights), and {self.engine} gives no gradients or "
                                     "attention maps", self.folder)
            self._explainer = load_model(self.folder, device="cpu")[0].eval()
        return self._explainer

    def preload(self) -> None:
        if self.can_explain:
            self.explainer()
