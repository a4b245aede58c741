"""An exported model folder (`lungsound export`) and the ONNX Runtime session that runs it.

An exported folder is self-contained: `model.onnx` (the classifier, input `input` of shape (batch, T, 128) fbanks or
(batch, L) waveforms, output `logits` (batch, 4); the batch axis is dynamic), the source checkpoint's `config.yaml` and
`meta.json` (classes, calibration temperature) read with the checkpoint's own readers, `export.json` (precision, the
check measured at export) and, unless exported with `--no-torch-weights`, the PyTorch `model.safetensors`, used only to
explain a segment (see docs/onnx.md).

The session runs on the CPU with intra-op threads = the cores this process may use (`lungsound.inference.batching`),
one inter-op thread, sequential execution and every graph optimisation.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from lungsound.errors import LungsoundError

ONNX_FILE, EXPORT_FILE = "model.onnx", "export.json"
INPUT_NAME, OUTPUT_NAME = "input", "logits"
PRECISIONS = ("fp32", "int8")


def is_exported(folder: str | Path) -> bool:
    """Whether `folder` is an exported model folder (model.onnx, export.json and config.yaml)."""
    folder = Path(folder)
    return all((folder / name).is_file() for name in (ONNX_FILE, EXPORT_FILE, "config.yaml"))


def read_export(folder: str | Path) -> dict:
    """The folder's export.json, checked: a JSON object whose precision is fp32 or int8."""
    path = Path(folder) / EXPORT_FILE
    try:
        info = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise LungsoundError(f"not an exported model folder: {EXPORT_FILE} is missing (export one with `lungsound "
                             "export --checkpoint DIR`)", folder) from None
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise LungsoundError(f"corrupt {EXPORT_FILE}: {exc}", folder) from None
    if not isinstance(info, dict) or info.get("precision") not in PRECISIONS:
        raise LungsoundError(f"{EXPORT_FILE} must be an object with precision one of {', '.join(PRECISIONS)}", folder)
    return info


class OnnxModel:
    """An ONNX Runtime session of an exported classifier: `logits(x)` for a float32 batch, in one call."""

    def __init__(self, path: str | Path, threads: int | None = None, precision: str = "fp32"):
        import onnxruntime as ort

        from lungsound.inference.batching import default_threads

        self.path, self.precision = Path(path), precision
        self.threads = int(threads or default_threads())
        options = ort.SessionOptions()
        options.intra_op_num_threads = self.threads
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.log_severity_level = 3  # errors only: ORT's notes about the graph are not the user's business
        try:
            self.session = ort.InferenceSession(str(self.path), options, providers=["CPUExecutionProvider"])
        except Exception as exc:  # onnxruntime raises its own exception types for corrupt or foreign files
            detail = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            raise LungsoundError(f"cannot load {self.path.name} with ONNX Runtime: {detail[:300]}",
                                 self.path.parent) from None
        inputs = self.session.get_inputs()
        if len(inputs) != 1:
            raise LungsoundError(f"{self.path.name} takes {len(inputs)} inputs; a lungsound export takes one",
                                 self.path.parent)
        self.input_name, self.input_shape = inputs[0].name, list(inputs[0].shape)

    def logits(self, x) -> np.ndarray:
        """(B, C) float32 logits of a float32 batch (numpy array or CPU tensor) of the model's input shape."""
        x = np.ascontiguousarray(x.detach().cpu().numpy() if hasattr(x, "detach") else x, dtype=np.float32)
        want = self.input_shape[1:]
        if x.ndim != len(self.input_shape) or any(isinstance(w, int) and w != g for w, g in zip(want, x.shape[1:])):
            raise LungsoundError(f"{self.path.name} takes a batch of shape {['batch', *want]}, got {list(x.shape)}",
                                 self.path.parent)
        return self.session.run(None, {self.input_name: x})[0].astype(np.float32, copy=False)

    @property
    def size_bytes(self) -> int:
        return self.path.stat().st_size


def load_exported(folder: str | Path, threads: int | None = None):
    """(OnnxModel, config, meta, export info) of an exported folder; each problem is a one-line `LungsoundError`."""
    from lungsound.models.build import check_model_input
    from lungsound.models.folder import CONFIG_FILE, read_config, read_meta

    folder = Path(folder)
    if folder.is_file():
        folder = folder.parent
    if not folder.is_dir():
        raise LungsoundError("no such model folder", folder)
    if not (folder / ONNX_FILE).is_file():
        raise LungsoundError(f"no {ONNX_FILE} here, so it cannot run with the onnx runtime: export the checkpoint "
                             f"first (lungsound export --checkpoint {folder}) or use --runtime torch", folder)
    if not (folder / CONFIG_FILE).is_file():
        raise LungsoundError(f"not an exported model folder: {CONFIG_FILE} is missing", folder)
    info = read_export(folder)
    cfg, meta = read_config(folder), read_meta(folder)
    try:
        check_model_input(cfg)
    except LungsoundError as exc:
        raise LungsoundError(f"{CONFIG_FILE} describes no usable model: {exc}", folder) from None
    return OnnxModel(folder / ONNX_FILE, threads, info["precision"]), cfg, meta, info
