"""An exported OpenVINO model folder (`lungsound export --format openvino`): its files, the CPU's capabilities that
decide its precision, the checks on loading it, and the compiled model that runs it (the `openvino` runtime,
`lungsound.inference.openvino_runtime`, and the export's own check use them).

The folder holds `model.xml` (the graph, OpenVINO's IR: input `input` (batch, T, 128) fbanks or (batch, L) waveforms,
output `logits` (batch, 4), the batch axis dynamic) and `model.bin` (its weights: float32, or float32 with NNCF's
int8 FakeQuantize scales for an int8 export), the checkpoint's `config.yaml` and `meta.json` (classes, the calibration
temperature), `export.json` (precision, what was measured at export, the SHA-256 of every weight file:
model.xml, model.bin and model.safetensors) and, unless exported with `--no-torch-weights`, the PyTorch
`model.safetensors`, used only to explain a segment.

Precisions (`PRECISIONS`, export.json's `precision`): `fp32`, `bf16` (float32 weights computed in bfloat16 on a CPU
with native bf16: AVX512-BF16 or AMX), `int8` (NNCF post-training quantisation with static scales; the layers it
leaves in float run in float32) and `int8+bf16` (those layers in bfloat16). The compute precision is OpenVINO's
`INFERENCE_PRECISION_HINT` when the model is compiled (`INFERENCE`): the graph on disk is the same for fp32 and bf16.
A bf16 folder opened on a CPU without native bf16 runs in float32, with a warning (OpenVINO would emulate bf16
slowly, or not at all).

Checks on loading, before any prediction (`load_openvino`), each a one-line `LungsoundError` naming the file: every
weight file export.json records must have its recorded digest (a tampered or truncated model.xml or model.bin is
named), the graph must be readable by OpenVINO, take one input and give one output of one score per class.

The model is compiled for the CPU with `threads` inference threads (the cores this process may use,
`lungsound.inference.batching`), one stream and the latency hint.
"""

from __future__ import annotations

import warnings
from functools import lru_cache
from pathlib import Path

import numpy as np

from lungsound.data.labels import CLASSES
from lungsound.errors import LungsoundError, one_line
from lungsound.inference.batching import default_threads
from lungsound.inference.onnx_folder import EXPORT_FILE, as_batch, read_export, read_exported_config, verify_weights
from lungsound.models.folder import CONFIG_FILE

XML_FILE, BIN_FILE = "model.xml", "model.bin"
PRECISIONS = ("fp32", "bf16", "int8", "int8+bf16")
INFERENCE = {"fp32": "f32", "bf16": "bf16", "int8": "f32", "int8+bf16": "bf16"}  # OpenVINO's compute precision
CHOICES = ("f32", "bf16", "auto")  # `lungsound export --precision`
NATIVE_BF16 = ("avx512_bf16", "amx_bf16")  # the x86 instruction sets that compute bf16 in hardware
LISTED_FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_bf16", "amx_int8")


def is_openvino_folder(folder: str | Path) -> bool:
    """Whether `folder` holds an OpenVINO export (model.xml, model.bin, export.json and config.yaml)."""
    folder = Path(folder)
    return all((folder / name).is_file() for name in (XML_FILE, BIN_FILE, EXPORT_FILE, CONFIG_FILE))


def read_openvino_export(folder: str | Path) -> dict:
    """The folder's export.json, checked: its precision is one of `PRECISIONS`."""
    return read_export(folder, PRECISIONS)


@lru_cache(maxsize=1)
def _core():
    import openvino as ov  # imported when a model is read, so that importing lungsound stays light

    return ov.Core()


@lru_cache(maxsize=1)
def cpu_instructions() -> dict:
    """What this CPU offers for inference: OpenVINO's `OPTIMIZATION_CAPABILITIES` of the CPU device, the x86 flags of
    `LISTED_FLAGS` it has (from /proc/cpuinfo, where there is one) and its name."""
    core = _core()
    try:
        flags = set(Path("/proc/cpuinfo").read_text().split())
    except OSError:
        flags = None
    return {"device": str(core.get_property("CPU", "FULL_DEVICE_NAME")),
            "openvino_capabilities": [str(c) for c in core.get_property("CPU", "OPTIMIZATION_CAPABILITIES")],
            "flags": None if flags is None else [f for f in LISTED_FLAGS if f in flags]}


def native_bf16() -> tuple[bool, str]:
    """(whether this CPU computes bf16 in hardware, the reason in words): AVX512-BF16 or AMX among its flags; where the
    flags cannot be read, OpenVINO's BF16 capability."""
    cpu = cpu_instructions()
    if cpu["flags"] is not None:
        have = [f for f in NATIVE_BF16 if f in cpu["flags"]]
        return bool(have), (f"the CPU has {' and '.join(have)}" if have else
                            "the CPU has neither AVX512-BF16 nor AMX")
    has = "BF16" in cpu["openvino_capabilities"]
    return has, f"OpenVINO {'lists' if has else 'does not list'} BF16 among the CPU's capabilities"


def resolve_precision(requested: str) -> tuple[str, str]:
    """(the compute precision, "f32" or "bf16", why) for `lungsound export --precision f32|bf16|auto`: auto is bf16
    where the CPU has native bf16 and f32 elsewhere."""
    if requested not in CHOICES:
        raise LungsoundError(f"--precision must be one of {', '.join(CHOICES)}, got {requested!r}")
    if requested != "auto":
        return requested, f"{requested} as asked"
    native, why = native_bf16()
    return ("bf16" if native else "f32"), f"auto: {'bf16' if native else 'f32'}, because {why}"


class OpenVinoModel:
    """An exported classifier compiled for the CPU: `logits(x)` of a float32 batch of any size, in one call."""

    def __init__(self, path: str | Path, threads: int | None = None, precision: str = "fp32",
                 classes: int = len(CLASSES)):
        self.path, self.precision = Path(path), precision
        self.threads = int(threads or default_threads())
        self.inference = INFERENCE[precision]
        if self.inference == "bf16" and not native_bf16()[0]:
            warnings.warn(f"{self.path.parent}: this {precision} model runs in float32 here: {native_bf16()[1]}",
                          stacklevel=3)
            self.inference = "f32"
        core = _core()
        weights = self.path.with_suffix(".bin")
        try:
            model = core.read_model(str(self.path), str(weights))
        except Exception as exc:  # OpenVINO raises RuntimeError for a damaged graph or weights file
            raise LungsoundError(f"cannot read {self.path.name}/{weights.name} with OpenVINO: {one_line(exc)}",
                                 self.path.parent) from None
        if len(model.inputs) != 1 or len(model.outputs) != 1:
            raise LungsoundError(f"{self.path.name} takes {len(model.inputs)} inputs and gives {len(model.outputs)} "
                                 "outputs; a lungsound export takes one and gives one", self.path.parent)
        shape = model.outputs[0].get_partial_shape()
        if shape.rank.is_dynamic or len(shape) != 2 or (shape[1].is_static and shape[1].get_length() != classes):
            raise LungsoundError(f"{self.path.name} gives outputs of shape {shape}; a lungsound classifier gives "
                                 f"(batch, {classes}), one score per class ({', '.join(CLASSES)})", self.path.parent)
        self.input_shape = [d.get_length() if d.is_static else "batch" for d in model.inputs[0].get_partial_shape()]
        config = {"INFERENCE_PRECISION_HINT": self.inference, "INFERENCE_NUM_THREADS": self.threads,
                  "NUM_STREAMS": 1, "PERFORMANCE_HINT": "LATENCY"}
        try:
            self.compiled = core.compile_model(model, "CPU", config)
        except Exception as exc:
            raise LungsoundError(f"OpenVINO cannot compile {self.path.name} for this CPU: {one_line(exc)}",
                                 self.path.parent) from None
        self.request = self.compiled.create_infer_request()

    def logits(self, x) -> np.ndarray:
        """(B, C) float32 logits of a float32 batch (numpy array or CPU tensor) of the model's input shape."""
        self.request.infer({0: as_batch(x, self.input_shape, self.path)})
        return np.array(self.request.get_output_tensor(0).data, dtype=np.float32)


def load_openvino(folder: str | Path, threads: int | None = None) -> tuple[OpenVinoModel, object, dict, dict]:
    """(the compiled model, config, meta, export.json) of an OpenVINO export folder, checked as the module docstring
    says; each problem a one-line `LungsoundError` naming the folder and the file."""
    folder = Path(folder)
    if not folder.is_dir():
        raise LungsoundError("no such model folder", folder)
    for name in (XML_FILE, BIN_FILE, CONFIG_FILE):
        if not (folder / name).is_file():
            raise LungsoundError(f"not an OpenVINO export folder: {name} is missing", folder)
    info = read_openvino_export(folder)
    verify_weights(folder, info, XML_FILE)
    cfg, meta = read_exported_config(folder)
    return OpenVinoModel(folder / XML_FILE, threads, info["precision"]), cfg, meta, info
