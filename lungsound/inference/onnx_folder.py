"""An exported ONNX model folder (`lungsound export`): its files, the checks on loading it, and the ONNX Runtime session
that runs it (the `onnx` runtime, `lungsound.inference.onnx_runtime`, and the export's own check use them).

An exported folder is self-contained: `model.onnx` (the classifier, input `input` of shape (batch, T, 128) fbanks or
(batch, L) waveforms, output `logits` (batch, 4); the batch axis is dynamic), the source checkpoint's `config.yaml` and
`meta.json` (classes, calibration temperature) read with the checkpoint's own readers, `export.json` (precision, the
check measured at export, and `weights_sha256`: the SHA-256 of every weight file the export wrote, model.onnx, any
external data file and model.safetensors) and, unless exported with `--no-torch-weights`, the PyTorch
`model.safetensors`, used only to explain a segment (see docs/onnx.md).

Checks on loading, before any prediction (`load_exported`), each a one-line `LungsoundError`: every weight file that
export.json records and the folder holds must have its recorded digest (a swapped or damaged model.onnx is named);
the graph has one input and one output, and that output gives one score per class (`len(CLASSES)`, 4) where the graph
states its size (a 3- or 5-class graph is refused; the predictor checks the shape of every batch as well). A folder
exported before digests were recorded (no `weights_sha256`) is loaded with a warning that its weights cannot be
checked: it was written by lungsound itself, and exporting again adds the digests.

The session runs on the CPU with intra-op threads = the cores this process may use (`lungsound.inference.batching`),
one inter-op thread, sequential execution and every graph optimisation.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np

from lungsound.data.download import sha256_of
from lungsound.data.labels import CLASSES
from lungsound.errors import LungsoundError, one_line
from lungsound.inference.batching import default_threads
from lungsound.models.build import check_model_input
from lungsound.models.folder import CONFIG_FILE, META_FILE, read_config, read_meta

ONNX_FILE, EXPORT_FILE = "model.onnx", "export.json"
DIGESTS = "weights_sha256"  # export.json: {file name: SHA-256} of the weight files the export wrote
NOT_WEIGHTS = (CONFIG_FILE, META_FILE, EXPORT_FILE)  # read and checked by their own readers
INPUT_NAME, OUTPUT_NAME = "input", "logits"
PRECISIONS = ("fp32", "int8")


def is_exported(folder: str | Path) -> bool:
    """Whether `folder` is an exported model folder (model.onnx, export.json and config.yaml)."""
    folder = Path(folder)
    return all((folder / name).is_file() for name in (ONNX_FILE, EXPORT_FILE, CONFIG_FILE))


def read_export(folder: str | Path, precisions: tuple[str, ...] = PRECISIONS) -> dict:
    """The folder's export.json, checked: a JSON object whose precision is one of `precisions` (ONNX: fp32 or int8)."""
    path = Path(folder) / EXPORT_FILE
    try:
        info = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise LungsoundError(f"not an exported model folder: {EXPORT_FILE} is missing (export one with `lungsound "
                             "export --checkpoint DIR`)", folder) from None
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise LungsoundError(f"corrupt {EXPORT_FILE}: {exc}", folder) from None
    if not isinstance(info, dict) or info.get("precision") not in precisions:
        raise LungsoundError(f"{EXPORT_FILE} must be an object with precision one of {', '.join(precisions)}", folder)
    return info


def weight_digests(folder: Path) -> dict[str, str]:
    """{file name: SHA-256} of the weight files in an exported folder: every file but config.yaml, meta.json and
    export.json (model.onnx, its external data files, model.safetensors)."""
    return {f.name: sha256_of(f) for f in sorted(Path(folder).iterdir()) if f.is_file() and f.name not in NOT_WEIGHTS}


def verify_weights(folder: str | Path, info: dict, model_file: str = ONNX_FILE) -> None:
    """Every weight file export.json records (`DIGESTS`) that the folder holds has its recorded SHA-256, else a
    one-line error naming the file; an export without digests only warns (see the module docstring)."""
    folder = Path(folder)
    recorded = info.get(DIGESTS)
    if recorded is None:
        warnings.warn(f"{folder}: {EXPORT_FILE} records no digest of {model_file} (exported by an older lungsound), so "
                      "a swapped or damaged graph cannot be told: export the checkpoint again to have it checked",
                      stacklevel=3)
        return
    if not isinstance(recorded, dict) or model_file not in recorded or not all(
            isinstance(k, str) and Path(k).name == k and k not in ("", ".", "..") and isinstance(v, str)
            for k, v in recorded.items()):
        raise LungsoundError(f"{EXPORT_FILE}: {DIGESTS!r} must map the folder's weight file names ({model_file} among "
                             "them) to SHA-256 digests", folder)
    for name, digest in recorded.items():
        path = folder / name
        if path.is_file() and sha256_of(path) != digest.lower():
            raise LungsoundError(f"{name} is not the file this folder was exported with: its SHA-256 differs from the "
                                 f"one {EXPORT_FILE} records (swapped or damaged; export the checkpoint again)", folder)


def as_batch(x, input_shape: list, path: Path) -> np.ndarray:
    """A float32 batch (numpy array or CPU tensor) as a contiguous array, checked against the graph's `input_shape`
    (its fixed sizes; the batch axis is free): another shape is a one-line error naming the model file."""
    x = np.ascontiguousarray(x.detach().cpu().numpy() if hasattr(x, "detach") else x, dtype=np.float32)
    want = input_shape[1:]
    if x.ndim != len(input_shape) or any(isinstance(w, int) and w != g for w, g in zip(want, x.shape[1:])):
        raise LungsoundError(f"{path.name} takes a batch of shape {['batch', *want]}, got {list(x.shape)}", path.parent)
    return x


class OnnxModel:
    """An ONNX Runtime session of an exported classifier: `logits(x)` for a float32 batch, in one call. The graph must
    have one input and one output giving `classes` scores per item (where its shape says so)."""

    def __init__(self, path: str | Path, threads: int | None = None, precision: str = "fp32",
                 classes: int = len(CLASSES)):
        import onnxruntime as ort  # an optional dependency, imported when a session is made

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
            raise LungsoundError(f"cannot load {self.path.name} with ONNX Runtime: {one_line(exc)}",
                                 self.path.parent) from None
        inputs = self.session.get_inputs()
        if len(inputs) != 1:
            raise LungsoundError(f"{self.path.name} takes {len(inputs)} inputs; a lungsound export takes one",
                                 self.path.parent)
        self.input_name, self.input_shape = inputs[0].name, list(inputs[0].shape)
        outputs = self.session.get_outputs()
        if len(outputs) != 1:
            raise LungsoundError(f"{self.path.name} gives {len(outputs)} outputs; a lungsound export gives one, "
                                 f"{OUTPUT_NAME!r} (batch, {classes})", self.path.parent)
        shape = list(outputs[0].shape)
        if len(shape) != 2 or (isinstance(shape[1], int) and shape[1] != classes):
            raise LungsoundError(f"{self.path.name} gives outputs of shape {shape}; a lungsound classifier gives "
                                 f"(batch, {classes}), one score per class ({', '.join(CLASSES)})", self.path.parent)

    def logits(self, x) -> np.ndarray:
        """(B, C) float32 logits of a float32 batch (numpy array or CPU tensor) of the model's input shape."""
        x = as_batch(x, self.input_shape, self.path)
        return self.session.run(None, {self.input_name: x})[0].astype(np.float32, copy=False)

    @property
    def size_bytes(self) -> int:
        return self.path.stat().st_size


def load_exported(folder: str | Path, threads: int | None = None):
    """(OnnxModel, config, meta, export info) of an exported folder; each problem is a one-line `LungsoundError`."""
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
    verify_weights(folder, info)
    cfg, meta = read_exported_config(folder)
    return OnnxModel(folder / ONNX_FILE, threads, info["precision"]), cfg, meta, info


def read_exported_config(folder: Path):
    """The config and meta of an exported folder, the config checked as a usable model (one line naming the file)."""
    cfg, meta = read_config(folder), read_meta(folder)
    try:
        check_model_input(cfg)
    except LungsoundError as exc:
        raise LungsoundError(f"{CONFIG_FILE} describes no usable model: {exc}", folder) from None
    return cfg, meta
