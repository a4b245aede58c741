"""Whole-recording inference for the clinician demo and `lungsound predict`.

``Predictor.from_pretrained(reference)`` (a folder, a Hugging Face hub id or an MLflow model, read by
``lungsound.inference.sources``), ``Predictor.from_checkpoint(folder)`` and ``Predictor.from_mlflow(uri)`` load a
trained model; ``predict(source)`` cuts a recording into breathing cycles (annotated, detected or sliding windows), classifies
each one exactly as training cycles were prepared, applies the stored temperature calibration and summarises the
recording; ``explain(pred, i)`` gives a spectrogram heatmap (AST, CNN) or a time saliency (waveform models) for one
segment (``lungsound.inference.explaining``). The model runs on one of the ``RUNTIMES``
(``lungsound.inference.runtimes``): ``torch``, or ``onnx`` for a folder written by ``lungsound export``
(``lungsound.inference.onnx_export``), run with ONNX Runtime (``lungsound.inference.onnx_runtime``, the folder and its
session in ``lungsound.inference.onnx_folder``), or ``openvino`` for an OpenVINO folder of the same command
(``lungsound.inference.openvino_export``: fp32, bf16 or NNCF-calibrated int8), run with OpenVINO
(``lungsound.inference.openvino_runtime``, ``lungsound.inference.openvino_folder``).
"""

# Every runtime module is imported here, so that importing anything of lungsound.inference registers them all.
from lungsound.inference.runtimes import DEFAULT_RUNTIME, RUNTIMES, Runtime, runtime_for
from lungsound.inference.onnx_folder import OnnxModel, is_exported
from lungsound.inference.onnx_runtime import OnnxRuntime
from lungsound.inference.openvino_runtime import OpenVinoRuntime
from lungsound.inference.predictor import SEGMENTATIONS, Predictor
from lungsound.inference.result import Explanation, Prediction, Segment, summarize
from lungsound.inference.segmentation import (BreathConfig, annotated_cycles, breath_envelope, breath_period,
                                              detect_breath_cycles, regularize, sliding_windows)
from lungsound.inference.sources import Source, open_source, resolve_model, resolve_model_uri

__all__ = [
    "BreathConfig", "DEFAULT_RUNTIME", "Explanation", "OnnxModel", "OnnxRuntime", "OpenVinoRuntime", "Prediction", "Predictor",
    "RUNTIMES", "Runtime", "SEGMENTATIONS", "Segment", "Source", "annotated_cycles", "breath_envelope",
    "breath_period", "detect_breath_cycles", "is_exported", "open_source", "regularize", "resolve_model",
    "resolve_model_uri", "runtime_for", "sliding_windows", "summarize",
]
