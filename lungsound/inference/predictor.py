"""Whole-recording inference with a trained model: load, segment, classify, calibrate, summarise, explain.

A recording (a file, an upload's bytes, or an array) is decoded to float mono and resampled to 16 kHz; each segment is
then cut and padded exactly as the training cycles were (methods.md section 2: fade-in/out of the whole recording,
samples [int(start sr), int(end sr)), fixed length L = duration sr with the model's `repeat` or `zero` padding) and turned
into the model's input (Kaldi fbank with the AST normalisation, methods.md section 3, or the waveform for waveform
models). Class probabilities are softmax(logits / T) with the temperature T stored by `lungsound.calibration`
(T = 1 when the checkpoint is uncalibrated). The recording-level rule is in `lungsound.inference.result`.

Segments: "cycles" (the annotated cycles, as in training), "breath" (detected breathing cycles covering the recording,
`lungsound.inference.segmentation`), "windows" (sliding windows of the model's duration, hop half a window, the last one
ending at the end), "auto" (cycles with an annotation, else breath, else windows).

Input checks (each a `LungsoundError` naming the file): not audio / empty / corrupt (from `lungsound.audio`), longer
than `max_seconds` (120 s by default), shorter than 1 s, digital silence (peak amplitude below 1e-6), a constant level
(a DC offset with no sound: every sample within 1e-6 of the mean). A recording with more than 1% of its samples at full
scale (|x| >= 0.999) is analysed but gets a "heavily clipped" warning. Warnings the decoder raises about the file (a
truncated WAV) go into `Prediction.warnings` as well (without the file name), not to Python's warnings.

Explanations (`explain`, built by `lungsound.inference.explaining`): attention rollout (AST) or Grad-CAM (CNN) over the
spectrogram, or a gradient x input time saliency for waveform models (`lungsound.explain`).
"""

from __future__ import annotations

import math
import os
import re
import tempfile
import warnings as pywarnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

from lungsound.audio import decode_bytes, load_audio, resample
from lungsound.config import ExperimentConfig
from lungsound.data.cycles import CycleConfig, cycle_bounds, fade_recording, fix_length
from lungsound.data.labels import CLASSES
from lungsound.errors import LungsoundError
from lungsound.explain import METHODS, explanation_method
from lungsound.features.fbank import FbankConfig, compute_features_batch
from lungsound.inference.explaining import explain_segment
from lungsound.inference.result import Explanation, Prediction, Segment, summarize
from lungsound.inference.segmentation import (BreathConfig, Span, annotated_cycles, detect_breath_cycles,
                                              sliding_windows)

SAMPLE_RATE = 16000
MIN_SECONDS = 1.0
SILENCE_PEAK = 1e-6
CLIP_LEVEL, CLIP_FRACTION = 0.999, 0.01
SEGMENTATIONS = ("auto", "cycles", "breath", "windows")

INPUT_WORDS = {False: "spectrogram (128-band Kaldi log-mel filterbank, 10-ms frames)",
               True: "raw waveform (16 kHz samples)"}
INTENDED_USE = ("Research and teaching demonstration: shows which breathing cycles of a chest recording a model trained "
                "on the ICBHI 2017 database considers to contain crackles or wheezes. Not a medical device; not for "
                "diagnosis or treatment decisions.")


class Predictor:
    """A trained classifier ready to analyse whole recordings (see the module docstring)."""

    classes = tuple(CLASSES)

    def __init__(self, model: nn.Module, cfg: ExperimentConfig, meta: dict, device: str | torch.device | None = None,
                 *, window: float | None = None, hop: float | None = None, breath: BreathConfig = BreathConfig(),
                 batch_size: int = 16, source: str = ""):
        self.device = torch.device(device if device is not None else ("cuda" if torch.cuda.is_available() else "cpu"))
        self.model = model.to(self.device).eval()
        self.cfg, self.meta, self.source = cfg, dict(meta), source
        self.cycle_cfg = CycleConfig(sample_rate=SAMPLE_RATE, duration=cfg.data.duration, pad=cfg.data.pad)
        self.fbank_cfg = FbankConfig() if cfg.data.input == "fbank" else None
        self.window = cfg.data.duration if window is None else float(window)
        self.hop, self.breath, self.batch_size = hop, breath, int(batch_size)
        calibration = self.meta.get("calibration") or {}
        self.temperature = float(calibration.get("temperature", 1.0))
        if not (math.isfinite(self.temperature) and self.temperature > 0):
            raise LungsoundError(f"calibration temperature must be a positive number, got {self.temperature!r}", source)

    # --- loading -----------------------------------------------------------------------------------------------------

    @classmethod
    def from_checkpoint(cls, path: str | os.PathLike, device: str | torch.device | None = None, **kwargs) -> "Predictor":
        """Load a model folder written by `lungsound.training.checkpoint.save_model`."""
        from lungsound.training.checkpoint import load_model

        model, cfg, meta = load_model(path, device="cpu")
        return cls(model, cfg, meta, device, source=kwargs.pop("source", str(path)), **kwargs)

    @classmethod
    def from_mlflow(cls, uri: str, device: str | torch.device | None = None, **kwargs) -> "Predictor":
        """Load `runs:/<id>/<path>`, a bare run id (its "model" artifact) or `models:/<name>/<version>` (or
        `models:/<name>@<alias>`) from the MLflow store of `lungsound.tracking` ($MLFLOW_TRACKING_URI)."""
        from lungsound.tracking import download_artifacts

        run_id, artifact = resolve_model_uri(uri)
        with tempfile.TemporaryDirectory(prefix="lungsound-model-") as tmp:
            folder = download_artifacts(run_id, artifact, tmp)
            return cls.from_checkpoint(folder, device, source=uri, **kwargs)

    # --- properties --------------------------------------------------------------------------------------------------

    @property
    def calibrated(self) -> bool:
        return "temperature" in (self.meta.get("calibration") or {})

    @property
    def card(self) -> dict:
        """Facts for a model card: what the model is, what it was trained and tested on, and what not to use it for."""
        from lungsound.data.default import MARKER

        root = self.cfg.data.root
        synthetic = root is None or (Path(root) / MARKER).exists()
        metrics = self.meta.get("metrics") or {}
        test = {k: float(metrics[f"test_{k}"]) for k in ("sp", "se", "score") if f"test_{k}" in metrics}
        calibration = self.meta.get("calibration")
        limitations = [
            "Trained on single annotated respiratory cycles; detected cycles or windows may be cut differently.",
            "ICBHI 2017 is small (126 patients, 4 stethoscopes); other devices, sites and populations may be "
            "classified less accurately.",
            "Published ICBHI 4-class scores are about 60-68% with sensitivity near 40-45%: many abnormal cycles are "
            "missed.",
            "Probabilities are calibrated on held-out patients." if calibration else
            "Probabilities are not calibrated: treat them as scores, not frequencies.",
        ]
        if synthetic:
            limitations.insert(0, "Trained on synthetic sounds, not on real patients: for demonstrating the software only.")
        method = explanation_method(self.model)
        return {
            "name": self.cfg.name, "model": self.cfg.model.name,
            "method": self.meta.get("method", self.cfg.method.name),
            "protocol": self.meta.get("protocol", self.cfg.train.protocol),
            "trained_on": root if root is not None else "built-in synthetic ICBHI-format data set",
            "synthetic": synthetic, "selected_epoch": self.meta.get("selected_epoch"), "seed": self.meta.get("seed"),
            "test_scores": test or None, "calibration": calibration, "temperature": self.temperature,
            "segment_seconds": self.cfg.data.duration, "source": self.source,
            "input": INPUT_WORDS[self.fbank_cfg is None], "explanation_method": method,
            "explanation": METHODS[method][1] if method else "none for this kind of model",
            "intended_use": INTENDED_USE, "limitations": limitations,
        }

    # --- prediction --------------------------------------------------------------------------------------------------

    def predict(self, source, sample_rate: int | None = None, *, annotation=None, segmentation: str = "auto",
                name: str | None = None, max_seconds: float | None = 120.0) -> Prediction:
        """Analyse one recording: a path, the bytes of an uploaded file (`name` labels it), or a 1-D float array at
        `sample_rate`. `annotation` is an ICBHI .txt path or a list of (start, end) seconds."""
        if segmentation not in SEGMENTATIONS:
            raise LungsoundError(f"segmentation must be one of {', '.join(SEGMENTATIONS)}, got {segmentation!r}")
        with pywarnings.catch_warnings(record=True) as caught:
            pywarnings.simplefilter("always")
            label, native, native_sr = _read(source, sample_rate, name, max_seconds)
        warnings = _about_file(caught, label) + _check_signal(native, native_sr, label)
        x = resample(native, native_sr, SAMPLE_RATE)
        duration = len(x) / SAMPLE_RATE
        used, spans, more = self._segments(x, duration, annotation, segmentation, label)
        probs = self._classify(x, spans)
        segments = [Segment(float(a), float(b), {c: float(p) for c, p in zip(CLASSES, row)})
                    for (a, b), row in zip(spans, probs)]
        return Prediction(file=label, duration=float(duration), sample_rate=int(native_sr), segmentation=used,
                          segments=segments, summary=summarize(segments, used), warnings=warnings + more, waveform=x)

    def _segments(self, x: np.ndarray, duration: float, annotation, segmentation: str,
                  label: str) -> tuple[str, list[Span], list[str]]:
        if segmentation == "cycles" and annotation is None:
            raise LungsoundError("segmentation 'cycles' needs an annotation (an ICBHI .txt file or (start, end) list)",
                                 label)
        if annotation is not None and segmentation in ("auto", "cycles"):
            spans, warnings = annotated_cycles(annotation, duration, label)
            return "cycles", spans, warnings
        if segmentation in ("auto", "breath"):
            spans = detect_breath_cycles(x, SAMPLE_RATE, self.breath)
            if spans:
                return "breath", spans, []
            note = "no breathing rhythm found in the sound envelope; the recording was analysed in sliding windows"
            return "windows", sliding_windows(duration, self.window, self.hop), [note]
        return "windows", sliding_windows(duration, self.window, self.hop), []

    def model_inputs(self, x: np.ndarray, spans: list[Span]) -> torch.Tensor:
        """The model's input for each span of a 16 kHz recording: (n, T, 128) fbanks, or (n, L) waveforms."""
        faded = fade_recording(x, self.cycle_cfg)
        waves = np.stack([fix_length(_cut(faded, a, b), self.cycle_cfg) for a, b in spans])
        if self.fbank_cfg is None:
            return torch.from_numpy(waves)
        return compute_features_batch(waves, self.fbank_cfg)

    @torch.inference_mode()
    def _classify(self, x: np.ndarray, spans: list[Span]) -> np.ndarray:
        out = []
        for i in range(0, len(spans), self.batch_size):
            batch = self.model_inputs(x, spans[i:i + self.batch_size]).to(self.device)
            logits = self.model(batch).float()
            out.append(torch.softmax(logits / self.temperature, dim=1).cpu().numpy())
        return np.concatenate(out).astype(np.float64)

    # --- explanation -------------------------------------------------------------------------------------------------

    def explain(self, pred: Prediction, segment_index: int) -> Explanation:
        """What the model used in one segment, for the predicted class: attention rollout (AST) or Grad-CAM (CNN) over
        the spectrogram, or a gradient x input time saliency (waveform models; `kind` "time").

        The model sees the segment padded to its fixed duration; the heatmap is folded back onto the segment's own
        frames (repeat padding: the mean over the copies), so it lines up with `start`-`end` and the segment's `fbank`
        (`lungsound.inference.explaining`).
        """
        if pred.waveform is None:
            raise LungsoundError("this prediction holds no waveform to explain", pred.file)
        if not 0 <= segment_index < len(pred.segments):
            raise LungsoundError(f"segment index {segment_index} out of range (0..{len(pred.segments) - 1})", pred.file)
        seg = pred.segments[segment_index]
        x = self.model_inputs(pred.waveform, [(seg.start, seg.end)])[0].to(self.device)
        predicted = max(seg.probabilities, key=seg.probabilities.get)
        piece = _cut(fade_recording(pred.waveform, self.cycle_cfg), seg.start, seg.end)
        return explain_segment(self.model, x, piece, seg.start, self.cycle_cfg, self.fbank_cfg,
                               CLASSES.index(predicted))


# ---------------------------------------------------------------------------------------------------------------------
# Helpers
# ---------------------------------------------------------------------------------------------------------------------


def resolve_model_uri(uri: str) -> tuple[str, str]:
    """(run id, artifact path) of `runs:/<id>/<path>`, a bare run id, or a registered `models:/<name>/<version>`."""
    uri = str(uri).strip()
    if uri.startswith("runs:/"):
        run_id, _, path = uri[len("runs:/"):].strip("/").partition("/")
        if not run_id:
            raise LungsoundError(f"no run id in {uri!r}; expected runs:/<run id>/model")
        return run_id, path or "model"
    if uri.startswith("models:/"):
        return _registered(uri)
    if not re.fullmatch(r"[0-9a-zA-Z_-]+", uri):
        raise LungsoundError(f"not an MLflow run id or model URI: {uri!r} (expected a run id, runs:/<id>/model or "
                             "models:/<name>/<version>)")
    return uri, "model"


def _registered(uri: str) -> tuple[str, str]:
    from lungsound.tracking import client, tracking_uri

    ref = uri[len("models:/"):].strip("/")
    mlf = client()
    try:
        if "@" in ref:
            name, alias = ref.rsplit("@", 1)
            version = mlf.get_model_version_by_alias(name, alias)
        else:
            name, _, number = ref.rpartition("/")
            if not name or not number:
                raise LungsoundError(f"expected models:/<name>/<version> or models:/<name>@<alias>, got {uri!r}")
            version = mlf.get_model_version(name, number)
    except LungsoundError:
        raise
    except Exception as exc:  # mlflow's own exception types
        raise LungsoundError(f"registered model {uri!r} not found in {tracking_uri()}: {exc}") from None
    source = str(version.source or "")
    if source.startswith("runs:/"):
        return resolve_model_uri(source)
    if not version.run_id:
        raise LungsoundError(f"registered model {uri!r} has no source run to load it from (source {source!r})")
    return version.run_id, "model"


def _read(source, sample_rate: int | None, name: str | None, max_seconds: float | None) -> tuple[str, np.ndarray, int]:
    """(label for messages, float32 mono samples at the native rate, native rate)."""
    if isinstance(source, (str, os.PathLike)):
        label = name or str(source)
        x, sr = load_audio(source, None, max_seconds=max_seconds)
        return label, x, sr
    if isinstance(source, (bytes, bytearray, memoryview)):
        label = name or "upload"
        x, sr = decode_bytes(bytes(source), label, None, max_seconds)
        return label, x, sr
    if isinstance(source, np.ndarray):
        label = name or "array"
        if sample_rate is None:
            raise LungsoundError("an array needs its sample_rate", label)
        if source.ndim != 1 or not np.issubdtype(source.dtype, np.floating):
            raise LungsoundError(f"expected a 1-D float array of samples, got {source.dtype} {source.shape}", label)
        if source.size == 0:
            raise LungsoundError("contains no audio (0 samples)", label)
        if not np.all(np.isfinite(source)):
            raise LungsoundError("contains NaN or infinite samples", label)
        if max_seconds is not None and source.size / sample_rate > max_seconds:
            raise LungsoundError(f"too long: {source.size / sample_rate:.2f} s exceeds the limit of "
                                 f"max_seconds={max_seconds:g} s", label)
        return label, source.astype(np.float32), int(sample_rate)
    raise LungsoundError(f"cannot analyse a {type(source).__name__}: give a file path, the file's bytes or a 1-D array")


def _about_file(caught: list, label: str) -> list[str]:
    """The messages of the decoder's warnings about this file (they start with its name, dropped here); any other
    warning is passed on to Python's warnings unchanged."""
    mine = []
    for w in caught:
        text = str(w.message)
        if issubclass(w.category, UserWarning) and text.startswith(f"{label}: "):
            mine.append(text[len(label) + 2:])
        else:
            pywarnings.warn_explicit(w.message, w.category, w.filename, w.lineno, source=w.source)
    return mine


def _check_signal(x: np.ndarray, sr: int, label: str) -> list[str]:
    """Errors for too short, silent and constant recordings; a warning for heavy clipping."""
    seconds = len(x) / sr
    if seconds < MIN_SECONDS:
        raise LungsoundError(f"too short: {seconds:.2f} s of audio; at least {MIN_SECONDS:g} s is needed", label)
    peak = float(np.max(np.abs(x)))
    if peak < SILENCE_PEAK:
        raise LungsoundError(f"silent: the recording is digital silence (peak amplitude {peak:.1e})", label)
    mean = float(np.mean(x, dtype=np.float64))
    swing = float(np.max(np.abs(x.astype(np.float64) - mean)))
    if swing < SILENCE_PEAK:
        raise LungsoundError(f"constant: the recording is a flat level of {mean:.3g} (a DC offset) with no sound "
                             f"(every sample within {swing:.1e} of it)", label)
    clipped = float(np.mean(np.abs(x) >= CLIP_LEVEL))
    if clipped > CLIP_FRACTION:
        return [f"heavily clipped: {100 * clipped:.1f}% of the samples are at full scale; the sound is distorted and "
                "the probabilities may be unreliable"]
    return []


def _cut(faded: np.ndarray, start: float, end: float) -> np.ndarray:
    """Samples of a span as training cuts cycles (int() truncation), at least one sample."""
    lo, hi = cycle_bounds(start, end, SAMPLE_RATE, len(faded))
    lo = min(lo, len(faded) - 1)
    return faded[lo:max(hi, lo + 1)]
