"""The `openvino` runtime (`lungsound.inference.runtimes`): a folder written by `lungsound export --format openvino`
(`lungsound.inference.openvino_export`), run with OpenVINO on the CPU (`lungsound.inference.openvino_folder`).

It runs the folder's compiled model in fp32, bf16, int8 or int8+bf16; every precision takes batches of any size (an
int8 folder's scales are static, so a segment's result does not depend on its batch). Explanations use the folder's
PyTorch weights, loaded on first use, as for an ONNX export (`OnnxRuntime`, whose folder handling this class shares):
OpenVINO gives no gradients or attention maps.
"""

from __future__ import annotations

from pathlib import Path

from lungsound.config import ExperimentConfig
from lungsound.inference.onnx_folder import EXPORT_FILE
from lungsound.inference.onnx_runtime import OnnxRuntime
from lungsound.inference.openvino_export import export_openvino
from lungsound.inference.openvino_folder import (BIN_FILE, XML_FILE, is_openvino_folder, load_openvino,
                                                 read_openvino_export)
from lungsound.inference.runtimes import RUNTIMES
from lungsound.models.folder import CONFIG_FILE, META_FILE, MODEL_FILE

WORDS = {"fp32": "OpenVINO, exported model computed in 32-bit floats (the same results, faster on a CPU)",
         "bf16": "OpenVINO, exported model computed in bfloat16 on the CPU's bf16 units (faster; probabilities may "
                 "differ slightly from the original)",
         "int8": "OpenVINO, exported model quantised to 8 bits with calibrated scales (fastest and smaller; "
                 "probabilities may differ slightly from the original)",
         "int8+bf16": "OpenVINO, exported model quantised to 8 bits with calibrated scales, the rest in bfloat16 "
                      "(fastest; probabilities may differ slightly from the original)"}


@RUNTIMES.register("openvino")
class OpenVinoRuntime(OnnxRuntime):
    """The `openvino` runtime (`lungsound.inference.runtimes.Runtime`): an exported folder's `OpenVinoModel`, and its
    PyTorch weights for explanations."""

    name, title, engine, exported = "openvino", "OpenVINO", "OpenVINO", True
    files = (XML_FILE, BIN_FILE, EXPORT_FILE, CONFIG_FILE, META_FILE, MODEL_FILE)
    max_batch = None  # static scales: any batch gives each segment the same result

    @property
    def label(self) -> str:
        return f"OpenVINO {self.precision}"

    @property
    def words(self) -> str:
        return WORDS.get(self.precision, self.label)

    @classmethod
    def holds(cls, folder: Path) -> bool:
        return is_openvino_folder(folder)

    @classmethod
    def precision_of(cls, folder: Path) -> str:
        return read_openvino_export(folder)["precision"]

    @classmethod
    def describe(cls, folder: Path) -> str:
        return f"OpenVINO {cls.precision_of(folder)} (`{XML_FILE}` and `{BIN_FILE}`), run with OpenVINO"

    @classmethod
    def open(cls, folder: Path, device=None,
             threads: int | None = None) -> tuple["OpenVinoRuntime", ExperimentConfig, dict]:
        model, cfg, meta, info = load_openvino(folder, threads)  # always on the CPU: `device` is not used
        return cls(model, folder, info), cfg, meta

    export = staticmethod(export_openvino)  # `lungsound export --format openvino`
