"""Whole-recording inference with a trained model: load, segment, classify, calibrate, summarise, explain.

A recording (a file, an upload's bytes, or an array) is decoded to float mono and resampled to 16 kHz; each segment is
then cut and padded exactly as the training cycles were (methods.md section 2: fade-in/out of the whole recording,
samples [int(start sr), int(end sr)), fixed length L = duration sr with the model's `repeat` or `zero` padding) and turned
into the model's input (Kaldi fbank with the AST normalisation, methods.md section 3, or the waveform for waveform
models). Class probabilities are softmax(logits / T) with the temperature T stored by `lungsound.evaluation.calibration`
(T = 1 when the checkpoint is uncalibrated). The recording-level rule is in `lungsound.inference.result`.

Segments: "cycles" (the annotated cycles, as in training), "breath" (detected breathing cycles covering the recording,
`lungsound.inference.segmentation`), "windows" (sliding windows of the model's duration, hop half a window, the last one
ending at the end), "auto" (cycles with an annotation, else breath, else windows).

Input checks (each a `LungsoundError` naming the file): not audio / empty / corrupt / non-finite or mostly absurd
sample values (from `lungsound.audio`; a few corrupt float values beyond +-16 are clipped to +-1 with a warning),
longer than `max_seconds` (120 s by default), shorter than 1 s, digital silence (peak amplitude below 1e-6), a constant
level (a DC offset with no sound: every sample within 1e-6 of the mean). A recording with more than 1% of its samples
at full scale (|x| >= 0.999) is analysed but gets a "heavily clipped" warning. Warnings the decoder raises about the
file (a truncated WAV, clipped corrupt values) go into `Prediction.warnings` as well (without the file name), not to
Python's warnings.

Explanations (`explain`, built by `lungsound.inference.explaining`): attention rollout (AST) or Grad-CAM (CNN) over the
spectrogram, or a gradient x input time saliency for waveform models (`lungsound.inference.explain`).

Runtimes: `runtime="torch"` runs the PyTorch model of a checkpoint folder; `runtime="onnx"` runs the `model.onnx` of a
folder written by `lungsound export` with ONNX Runtime (`lungsound.inference.onnx_runtime`), fp32 or int8. Either way
the segments of a recording are featurised a bounded chunk at a time and classified in batches sized to memory, on
intra-op threads = cores (`lungsound.inference.batching`), so memory does not grow with the recording beyond its
waveform (resampling and the breath detector work in bounded blocks too). Logits of another shape than (segments,
classes) and non-finite probabilities (a model that returns NaN) are an error for that recording, never a finding.
An ONNX model has no gradients or attention maps: its explanation is computed with the folder's PyTorch weights,
loaded on first use, for the one segment asked for; a folder exported without them has no explanation (`can_explain`
is False and `explain` says so in one line).

Sources: `from_checkpoint` (a folder), `from_mlflow` (an MLflow run or registered model) and `from_pretrained` (a
folder or a Hugging Face hub id pushed by `lungsound push`, cached by `huggingface_hub`; see docs/sharing.md).
"""

from __future__ import annotations

import os
import tempfile
import warnings as pywarnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

from lungsound.audio import resample
from lungsound.evaluation.calibration import check_temperature
from lungsound.config import ExperimentConfig
from lungsound.data.cycles import CycleConfig, cycle_bounds, fade_recording, fix_length
from lungsound.data.labels import CLASSES
from lungsound.errors import LungsoundError
from lungsound.inference.explain import METHODS, explanation_method
from lungsound.features.fbank import FbankConfig, compute_features_batch
from lungsound.inference.batching import batch_size_for, chunk_size, default_threads, torch_threads
from lungsound.inference.explaining import explain_segment
from lungsound.inference.model_uri import resolve_model_uri
from lungsound.inference.onnx_runtime import OnnxModel
from lungsound.inference.reading import _about_file, _check_signal, _read
from lungsound.inference.result import Explanation, Prediction, Segment, summarize
from lungsound.inference.segmentation import (BreathConfig, Span, annotated_cycles, detect_breath_cycles,
                                              sliding_windows)

SAMPLE_RATE = 16000
SEGMENTATIONS = ("auto", "cycles", "breath", "windows")
RUNTIMES = ("torch", "onnx")

INPUT_WORDS = {False: "spectrogram (128-band Kaldi log-mel filterbank, 10-ms frames)",
               True: "raw waveform (16 kHz samples)"}
INTENDED_USE = ("Research and teaching demonstration: shows which breathing cycles of a chest recording a model trained "
                "on the ICBHI 2017 database considers to contain crackles or wheezes. Not a medical device; not for "
                "diagnosis or treatment decisions.")


class Predictor:
    """A trained classifier ready to analyse whole recordings (see the module docstring)."""

    classes = tuple(CLASSES)

    def __init__(self, model: nn.Module | OnnxModel, cfg: ExperimentConfig, meta: dict,
                 device: str | torch.device | None = None, *, window: float | None = None, hop: float | None = None,
                 breath: BreathConfig = BreathConfig(), batch_size: int | None = None, threads: int | None = None,
                 source: str = "", explainer=None):
        """`model` is a PyTorch classifier or an `OnnxModel` (then `explainer`, a PyTorch model or a function loading
        one, gives explanations). `batch_size` None sizes batches to memory; `threads` None = the cores."""
        self.runtime = "onnx" if isinstance(model, OnnxModel) else "torch"
        self.threads = int(threads or default_threads())
        if self.runtime == "onnx":
            self.device, self.onnx, self.model = torch.device("cpu"), model, None
            self._explainer = explainer
        else:
            device = device if device is not None else ("cuda" if torch.cuda.is_available() else "cpu")
            self.device = torch.device(device)
            self.onnx, self.model = None, model.to(self.device).eval()
            self._explainer = self.model
        self.cfg, self.meta, self.source = cfg, dict(meta), source
        self.export_info: dict | None = None  # export.json of an exported folder
        self.cycle_cfg = CycleConfig(sample_rate=SAMPLE_RATE, duration=cfg.data.duration, pad=cfg.data.pad)
        self.fbank_cfg = FbankConfig() if cfg.data.input == "fbank" else None
        self.window = cfg.data.duration if window is None else float(window)
        self.hop, self.breath = hop, breath
        self.batch_size = int(batch_size) if batch_size else batch_size_for(cfg)
        if self.runtime == "onnx" and model.precision == "int8":
            self.batch_size = 1  # one activation scale per batch tensor: see lungsound.inference.onnx_export
        if self.batch_size < 1:
            raise LungsoundError(f"batch_size must be at least 1, got {batch_size!r}", source)
        try:
            self.temperature = check_temperature((self.meta.get("calibration") or {}).get("temperature", 1.0))
        except LungsoundError as exc:
            raise LungsoundError(exc.problem, source) from None

    # --- loading -----------------------------------------------------------------------------------------------------

    @classmethod
    def from_checkpoint(cls, path: str | os.PathLike, device: str | torch.device | None = None,
                        runtime: str = "torch", **kwargs) -> "Predictor":
        """Load a model folder written by `lungsound.models.folder.save_model` (runtime "torch"), or one written
        by `lungsound export` (runtime "onnx"; with "torch" its PyTorch weights, when it holds them)."""
        from lungsound.inference.onnx_runtime import is_exported, load_exported
        from lungsound.models.folder import MODEL_FILE, load_model

        if runtime not in RUNTIMES:
            raise LungsoundError(f"runtime must be one of {', '.join(RUNTIMES)}, got {runtime!r}")
        folder = Path(path).parent if Path(path).is_file() else Path(path)
        source = kwargs.pop("source", str(path))
        if runtime == "onnx":
            model, cfg, meta, info = load_exported(folder, kwargs.get("threads"))
            weights = folder / MODEL_FILE
            explainer = (lambda: load_model(folder, device="cpu")[0]) if weights.is_file() else None
            predictor = cls(model, cfg, meta, device, source=source, explainer=explainer, **kwargs)
            predictor.export_info = info
            return predictor
        if is_exported(folder) and not (folder / MODEL_FILE).is_file():
            raise LungsoundError("this exported folder holds only the ONNX model (no PyTorch weights): use the onnx "
                                 "runtime (--runtime onnx)", folder)
        model, cfg, meta = load_model(folder, device="cpu")
        return cls(model, cfg, meta, device, source=source, **kwargs)

    @classmethod
    def from_mlflow(cls, uri: str, device: str | torch.device | None = None, **kwargs) -> "Predictor":
        """Load `runs:/<id>/<path>`, a bare run id (its "model" artifact) or `models:/<name>/<version|latest>` (or
        `models:/<name>@<alias>`) from the MLflow store of `lungsound.tracking` ($MLFLOW_TRACKING_URI)."""
        from lungsound.tracking import download_artifacts

        run_id, artifact = resolve_model_uri(uri)
        with tempfile.TemporaryDirectory(prefix="lungsound-model-") as tmp:
            folder = download_artifacts(run_id, artifact, tmp)
            predictor = cls.from_checkpoint(folder, device, source=uri, **kwargs)
            if predictor.runtime == "onnx" and callable(predictor._explainer):  # the folder goes away: load it now
                predictor._explainer = predictor._explainer()
        from lungsound.external.record import evaluations_of_run

        measured = evaluations_of_run(run_id)  # logged to the run after training: not in the downloaded meta.json
        if measured:
            predictor.meta = {**predictor.meta, "evaluations": {**(predictor.meta.get("evaluations") or {}), **measured}}
        return predictor

    @classmethod
    def from_pretrained(cls, model: str | os.PathLike, device: str | torch.device | None = None,
                        runtime: str | None = None, **kwargs) -> "Predictor":
        """Load a model folder, or a Hugging Face hub id `USER/NAME[@revision]` (or `hf://USER/NAME`) pushed by
        `lungsound push`: downloaded once into the hub cache, read from there afterwards, offline too
        (`lungsound.sharing.hub`; an existing local path always wins). `runtime` None: "onnx" for a folder written by
        `lungsound export`, else "torch"."""
        from lungsound.inference.onnx_runtime import is_exported
        from lungsound.sharing.hub import resolve_model

        folder, source = resolve_model(model)
        if runtime is None:
            runtime = "onnx" if is_exported(folder) else "torch"
        return cls.from_checkpoint(folder, device, runtime=runtime, source=kwargs.pop("source", source), **kwargs)

    # --- properties --------------------------------------------------------------------------------------------------

    @property
    def runtime_label(self) -> str:
        """'PyTorch', 'ONNX Runtime fp32' or 'ONNX Runtime int8'."""
        return "PyTorch" if self.runtime == "torch" else f"ONNX Runtime {self.onnx.precision}"

    @property
    def explanation_method(self) -> str | None:
        """The explanation `explain` gives (a key of `lungsound.inference.explain.METHODS`), or None when there is none."""
        if self.runtime == "torch":
            return explanation_method(self.model)
        if self._explainer is None:
            return None
        if isinstance(self._explainer, nn.Module):
            return explanation_method(self._explainer)
        return _method_by_name(self.cfg.model.name)

    @property
    def can_explain(self) -> bool:
        return self.explanation_method is not None

    @property
    def calibrated(self) -> bool:
        return "temperature" in (self.meta.get("calibration") or {})

    @property
    def card(self) -> dict:
        """Facts for a model card: what the model is, what it was trained and tested on, and what not to use it for."""
        root = self.cfg.data.root
        synthetic = trained_on_synthetic(self.cfg)
        metrics = self.meta.get("metrics") or {}
        test = {k: float(metrics[f"test_{k}"]) for k in ("sp", "se", "score") if f"test_{k}" in metrics}
        calibration = self.meta.get("calibration")
        limitations = model_limitations(synthetic, bool(calibration))
        method = self.explanation_method
        if method is None:
            explanation = ("none: this fast ONNX model was exported without its PyTorch weights"
                           if self.runtime == "onnx" else "none for this kind of model")
        else:
            explanation = METHODS[method][1] + (", computed with the folder's PyTorch weights for the segment shown"
                                                if self.runtime == "onnx" else "")
        return {
            "name": self.cfg.name, "model": self.cfg.model.name,
            "method": self.meta.get("method", self.cfg.method.name),
            "protocol": self.meta.get("protocol", self.cfg.train.protocol),
            "trained_on": root if root is not None else "built-in synthetic ICBHI-format data set",
            "synthetic": synthetic, "selected_epoch": self.meta.get("selected_epoch"), "seed": self.meta.get("seed"),
            "test_scores": test or None, "calibration": calibration, "temperature": self.temperature,
            "split": self.cfg.data.split, "evaluations": self.meta.get("evaluations") or None,
            "segment_seconds": self.cfg.data.duration, "source": self.source,
            "input": INPUT_WORDS[self.fbank_cfg is None], "explanation_method": method,
            "explanation": explanation, "runtime": self.runtime_label,
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
        del native  # the recording at its own rate is not needed any more (a long one is large)
        duration = len(x) / SAMPLE_RATE
        used, spans, more = self._segments(x, duration, annotation, segmentation, label)
        probs = self._classify(x, spans, label)
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
        return self._inputs(fade_recording(x, self.cycle_cfg), spans)

    def _inputs(self, faded: np.ndarray, spans: list[Span]) -> torch.Tensor:
        waves = np.stack([fix_length(_cut(faded, a, b), self.cycle_cfg) for a, b in spans])
        if self.fbank_cfg is None:
            return torch.from_numpy(waves)
        return compute_features_batch(waves, self.fbank_cfg)

    def _classify(self, x: np.ndarray, spans: list[Span], label: str = "") -> np.ndarray:
        """Calibrated class probabilities (n, C) of every span, made and classified `chunk_size(batch_size)` spans at a
        time, so memory does not grow with the recording. Logits of the wrong shape, and probabilities that are not
        finite (a NaN from the model), are a one-line error naming the file: never a finding."""
        faded = fade_recording(x, self.cycle_cfg)
        chunk = chunk_size(self.batch_size)
        probs = []
        for i in range(0, len(spans), chunk):
            part = spans[i:i + chunk]
            logits = self.logits(self._inputs(faded, part))
            if logits.shape != (len(part), len(CLASSES)):
                raise LungsoundError(f"the model gives outputs of shape {list(logits.shape)} for {len(part)} segments; "
                                     f"a lungsound classifier gives {len(CLASSES)} per segment, one per class "
                                     f"({', '.join(CLASSES)})", self.source)
            probs.append(torch.softmax(torch.from_numpy(logits) / self.temperature, dim=1).numpy().astype(np.float64))
        probs = np.concatenate(probs)
        bad = np.flatnonzero(~np.isfinite(probs).all(axis=1))
        if len(bad):
            a, b = spans[bad[0]]
            raise LungsoundError(f"the model gives non-finite (NaN or infinite) probabilities for {len(bad)} of "
                                 f"{len(spans)} segments, the first at {a:.1f}-{b:.1f} s: no finding can be made from "
                                 "them", label)
        return probs

    def logits(self, inputs: torch.Tensor | np.ndarray) -> np.ndarray:
        """(n, C) float32 logits of n model inputs, in batches of `batch_size`, on `threads` intra-op threads."""
        inputs = torch.as_tensor(inputs)
        out = []
        if self.runtime == "onnx":
            for i in range(0, len(inputs), self.batch_size):
                out.append(self.onnx.logits(inputs[i:i + self.batch_size]))
            return np.concatenate(out)
        with torch_threads(self.threads), torch.inference_mode():
            for i in range(0, len(inputs), self.batch_size):
                out.append(self.model(inputs[i:i + self.batch_size].to(self.device)).float().cpu().numpy())
        return np.concatenate(out)

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
        model = self._explain_model()
        seg = pred.segments[segment_index]
        x = self.model_inputs(pred.waveform, [(seg.start, seg.end)])[0].to(next(model.parameters()).device)
        predicted = max(seg.probabilities, key=seg.probabilities.get)
        piece = _cut(fade_recording(pred.waveform, self.cycle_cfg), seg.start, seg.end)
        with torch_threads(self.threads):
            return explain_segment(model, x, piece, seg.start, self.cycle_cfg, self.fbank_cfg,
                                   CLASSES.index(predicted))

    def _explain_model(self) -> nn.Module:
        """The PyTorch model explanations use: the model itself, or for the onnx runtime the folder's PyTorch weights
        (loaded on first use)."""
        if self._explainer is None:
            raise LungsoundError("this fast ONNX model has no explanation: it was exported without its PyTorch weights "
                                 "(--no-torch-weights), and ONNX Runtime gives no gradients or attention maps",
                                 self.source)
        if not isinstance(self._explainer, nn.Module):
            self._explainer = self._explainer().eval()
        return self._explainer


# ---------------------------------------------------------------------------------------------------------------------
# Helpers
# ---------------------------------------------------------------------------------------------------------------------


def trained_on_synthetic(cfg: ExperimentConfig) -> bool:
    """Whether a model's training data was the built-in synthetic set (data.root null, or a folder it marks)."""
    from lungsound.data.default import MARKER

    return cfg.data.root is None or (Path(cfg.data.root) / MARKER).exists()


def model_limitations(synthetic: bool, calibrated: bool) -> list[str]:
    """What every model card says the model cannot do (the app's card and a pushed model's README.md)."""
    limitations = [
        "Trained on single annotated respiratory cycles; detected cycles or windows may be cut differently.",
        "ICBHI 2017 is small (126 patients, 4 stethoscopes); other devices, sites and populations may be "
        "classified less accurately.",
        "Published ICBHI 4-class scores are about 60-68% with sensitivity near 40-45%: many abnormal cycles are "
        "missed.",
        "Probabilities are calibrated on held-out patients." if calibrated else
        "Probabilities are not calibrated: treat them as scores, not frequencies.",
    ]
    if synthetic:
        limitations.insert(0, "Trained on synthetic sounds, not on real patients: for demonstrating the software only.")
    return limitations


def _method_by_name(name: str) -> str:
    """The explanation method of a model by its registered name (no need to build it): AST, speech or CNN."""
    from lungsound.models import SPEECH_MODELS

    if name.startswith("ast"):
        return "attention-rollout"
    return "gradient-x-input" if name in SPEECH_MODELS else "grad-cam"


def _cut(faded: np.ndarray, start: float, end: float) -> np.ndarray:
    """Samples of a span as training cuts cycles (int() truncation), at least one sample."""
    lo, hi = cycle_bounds(start, end, SAMPLE_RATE, len(faded))
    lo = min(lo, len(faded) - 1)
    return faded[lo:max(hi, lo + 1)]
