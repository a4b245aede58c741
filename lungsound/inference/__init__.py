"""Whole-recording inference for the clinician demo and `lungsound predict`.

``Predictor.from_checkpoint(folder)`` / ``Predictor.from_mlflow(uri)`` load a trained model; ``predict(source)`` cuts a
recording into breathing cycles (annotated, detected or sliding windows), classifies each one exactly as training cycles
were prepared, applies the stored temperature calibration and summarises the recording; ``explain(pred, i)`` gives a
spectrogram heatmap (AST, CNN) or a time saliency (waveform models) for one segment
(``lungsound.inference.explaining``). ``runtime="onnx"`` runs a folder written by ``lungsound export``
(``lungsound.inference.onnx_export``) with ONNX Runtime.
"""

from lungsound.inference.onnx_runtime import OnnxModel, is_exported
from lungsound.inference.predictor import RUNTIMES, SEGMENTATIONS, Predictor, resolve_model_uri
from lungsound.inference.result import Explanation, Prediction, Segment, summarize
from lungsound.inference.segmentation import (BreathConfig, annotated_cycles, breath_envelope, breath_period,
                                              detect_breath_cycles, regularize, sliding_windows)

__all__ = [
    "BreathConfig", "Explanation", "OnnxModel", "Prediction", "Predictor", "RUNTIMES", "SEGMENTATIONS", "Segment",
    "annotated_cycles", "breath_envelope", "breath_period", "detect_breath_cycles", "is_exported", "regularize",
    "resolve_model_uri", "sliding_windows", "summarize",
]
