"""Whole-recording inference with a trained model: load, segment, classify, calibrate, summarise, explain.

A recording (a file, an upload's bytes, or an array) is decoded to float mono and resampled to the model's sample rate
(`ModelSpec.sample_rate`, 16 kHz for every model so far); each segment is then cut and padded exactly as the training
cycles were (docs/methods.md section 2: fade-in/out of the whole recording, samples [int(start sr), int(end sr)), fixed
length L = duration sr with the model's `repeat` or `zero` padding) and turned into the model's input (Kaldi fbank
with the AST normalisation, docs/methods.md section 3, or the waveform for waveform models). Class probabilities are
softmax(logits / T) with the temperature T stored by `lungsound.evaluation.calibration` (T = 1 when the checkpoint is
uncalibrated). The recording-level rule is in `lungsound.inference.result`.

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

Explanations (`explain`, built by `lungsound.inference.explaining`): the model's own method (`ModelSpec.explanation`):
attention rollout (AST) or Grad-CAM (CNN) over the spectrogram, or a gradient x input time saliency for waveform
models (`lungsound.inference.explain`).

Runtimes: the predictor holds one runtime (`backend`, `lungsound.inference.runtimes`): `torch` runs the PyTorch model
of a checkpoint folder, `onnx` the `model.onnx` of a folder written by `lungsound export` with ONNX Runtime
(`lungsound.inference.onnx_runtime`), fp32 or int8, `openvino` an OpenVINO folder of the same command
(`lungsound.inference.openvino_runtime`: fp32, bf16, int8 or int8+bf16, any batch size). Either way the segments of a recording are featurised a bounded
chunk at a time and classified in batches sized to memory (at most the runtime's `max_batch`), on intra-op threads =
cores (`lungsound.inference.batching`), so memory does not grow with the recording beyond its waveform (resampling
and the breath detector work in bounded blocks too). Logits of another shape than (segments, classes) and non-finite
probabilities (a model that returns NaN) are an error for that recording, never a finding. An exported model has no
gradients or attention maps: its explanation is computed with the folder's PyTorch weights, loaded on first use, for
the one segment asked for; a folder exported without them has no explanation (`can_explain` is False and `explain`
says so in one line).

Sources (`lungsound.inference.sources`): `from_checkpoint` (a folder), `from_mlflow` (an MLflow run or registered
model), `from_pretrained` (any reference: a folder, a Hugging Face hub id pushed by `lungsound push`, cached by
`huggingface_hub`, or an MLflow model; see docs/sharing.md) and `from_source` (an opened `Source`), which the others
end in. A model loaded from MLflow shows the external validations logged to its run on its card.
"""

from __future__ import annotations

import os
import warnings as pywarnings

import numpy as np
import torch
from torch import nn

from lungsound.audio import resample
from lungsound.config import ExperimentConfig
from lungsound.data.cycles import CycleConfig, cycle_bounds, fade_recording, fix_length
from lungsound.data.labels import CLASSES
from lungsound.errors import LungsoundError
from lungsound.evaluation.calibration import check_temperature
from lungsound.features.fbank import FbankConfig, compute_features_batch
from lungsound.inference.batching import batch_size_for, chunk_size, torch_threads
from lungsound.inference.card import card_facts
from lungsound.inference.explaining import explain_segment
from lungsound.inference.reading import _about_file, _check_signal, _read
from lungsound.inference.result import Explanation, Prediction, Segment, summarize
from lungsound.inference.runtimes import DEFAULT_RUNTIME, Runtime, TorchRuntime, runtime_for
from lungsound.inference.segmentation import (BreathConfig, Span, annotated_cycles, detect_breath_cycles,
                                              sliding_windows)
from lungsound.inference.sources import FOLDER, MLFLOW, Source, open_source
from lungsound.models.clap_prompt import all_unknown, check_metadata
from lungsound.models.conditioning import bind_metadata
from lungsound.models.registry import model_spec

SEGMENTATIONS = ("auto", "cycles", "breath", "windows")


class Predictor:
    """A trained classifier ready to analyse whole recordings (see the module docstring)."""

    classes = tuple(CLASSES)

    def __init__(self, model: Runtime | nn.Module, cfg: ExperimentConfig, meta: dict,
                 device: str | torch.device | None = None, *, window: float | None = None, hop: float | None = None,
                 breath: BreathConfig = BreathConfig(), batch_size: int | None = None, threads: int | None = None,
                 source: str = ""):
        """`model` is an opened runtime (`lungsound.inference.runtimes`) or a PyTorch classifier, then run by the torch
        runtime on `device` (CUDA when available) with `threads`. `batch_size` None sizes batches to memory; `threads`
        None = the cores."""
        self.backend: Runtime = TorchRuntime(model, device, threads) if isinstance(model, nn.Module) else model
        self.cfg, self.meta, self.source = cfg, dict(meta), source
        self.spec = model_spec(cfg.model.name)
        self.sample_rate = self.spec.sample_rate  # of the model's input, and of `Prediction.waveform`
        self.cycle_cfg = CycleConfig(sample_rate=self.sample_rate, duration=cfg.data.duration, pad=cfg.data.pad)
        self.fbank_cfg = FbankConfig(sample_rate=self.sample_rate) if self.spec.input == "fbank" else None
        self.window = cfg.data.duration if window is None else float(window)
        self.hop, self.breath = hop, breath
        self.batch_size = int(batch_size) if batch_size else batch_size_for(cfg)
        if self.backend.max_batch is not None:
            self.batch_size = min(self.batch_size, self.backend.max_batch)
        if self.batch_size < 1:
            raise LungsoundError(f"batch_size must be at least 1, got {batch_size!r}", source)
        if self.spec.uses_metadata and self.backend.exported:
            raise LungsoundError(f"model {cfg.model.name!r} reads each recording's metadata, which the "
                                 f"{self.backend.label} runtime cannot pass: use the torch runtime", source)
        try:
            self.temperature = check_temperature((self.meta.get("calibration") or {}).get("temperature", 1.0))
        except LungsoundError as exc:
            raise LungsoundError(exc.problem, source) from None

    # --- loading -----------------------------------------------------------------------------------------------------

    @classmethod
    def from_source(cls, source: Source, device: str | torch.device | None = None, runtime: str | None = None,
                    **kwargs) -> "Predictor":
        """Load an opened model reference (`lungsound.inference.sources.open_source`) with `runtime` (None: the one the
        folder was made for, `runtime_for`). A temporary folder (an MLflow download) may go away afterwards; an MLflow
        model's card gets the external validations logged to its run."""
        engine, cfg, meta = runtime_for(source.folder, runtime).open(source.folder, device, kwargs.pop("threads", None))
        if source.temporary:
            engine.preload()
        measured = source.evaluations()  # logged to the run after training: not in the downloaded meta.json
        if measured:
            meta = {**meta, "evaluations": {**(meta.get("evaluations") or {}), **measured}}
        return cls(engine, cfg, meta, source=kwargs.pop("source", None) or source.label, **kwargs)

    @classmethod
    def from_checkpoint(cls, path: str | os.PathLike, device: str | torch.device | None = None,
                        runtime: str | None = DEFAULT_RUNTIME, **kwargs) -> "Predictor":
        """Load a model folder written by `lungsound.models.folder.save_model` (runtime "torch"), or one written
        by `lungsound export` (runtime "onnx"; with "torch" its PyTorch weights, when it holds them; None: the
        runtime the folder was made for)."""
        with open_source(path, FOLDER) as source:
            return cls.from_source(source, device, runtime, **kwargs)

    @classmethod
    def from_mlflow(cls, uri: str, device: str | torch.device | None = None, runtime: str | None = DEFAULT_RUNTIME,
                    **kwargs) -> "Predictor":
        """Load `runs:/<id>/<path>`, a bare run id (its "model" artifact) or `models:/<name>/<version|latest>` (or
        `models:/<name>@<alias>`) from the MLflow store of `lungsound.tracking` ($MLFLOW_TRACKING_URI)."""
        with open_source(uri, MLFLOW) as source:
            return cls.from_source(source, device, runtime, **kwargs)

    @classmethod
    def from_pretrained(cls, model: str | os.PathLike, device: str | torch.device | None = None,
                        runtime: str | None = None, **kwargs) -> "Predictor":
        """Load any model reference (`lungsound.inference.sources`): a model folder, a Hugging Face hub id
        `USER/NAME[@revision]` (or `hf://USER/NAME`) pushed by `lungsound push` (downloaded once into the hub cache,
        read from there afterwards, offline too; an existing local path always wins), or an MLflow model. `runtime`
        None: the one the folder was made for ("onnx" for a folder written by `lungsound export`, else "torch")."""
        with open_source(model) as source:
            return cls.from_source(source, device, runtime, **kwargs)

    # --- properties --------------------------------------------------------------------------------------------------

    @property
    def runtime(self) -> str:
        """The registered name of the runtime ("torch", "onnx", ...)."""
        return self.backend.name

    @property
    def runtime_label(self) -> str:
        """'PyTorch', 'ONNX Runtime fp32', 'ONNX Runtime int8', ..."""
        return self.backend.label

    @property
    def exported(self) -> bool:
        """Whether the model is an export run by another runtime than PyTorch (its explanations use the PyTorch
        weights)."""
        return self.backend.exported

    @property
    def model(self):
        """What the runtime runs: the PyTorch module (torch), the ONNX Runtime session's wrapper (onnx), ..."""
        return self.backend.model

    @property
    def device(self) -> torch.device:
        return self.backend.device

    @property
    def threads(self) -> int:
        return self.backend.threads

    @property
    def export_info(self) -> dict | None:
        """The export.json of an exported folder."""
        return self.backend.info

    @property
    def explanation_method(self) -> str | None:
        """The explanation `explain` gives (the model's own, a key of `lungsound.inference.explain.METHODS`), or None
        when the runtime has none."""
        return self.spec.explanation if self.backend.can_explain else None

    @property
    def can_explain(self) -> bool:
        return self.explanation_method is not None

    @property
    def uses_metadata(self) -> bool:
        """Whether the model reads the recording's metadata (`predict(..., metadata=...)`; BTS's `clap_bts`)."""
        return self.spec.uses_metadata

    @property
    def calibrated(self) -> bool:
        return "temperature" in (self.meta.get("calibration") or {})

    @property
    def card(self) -> dict:
        """Facts for a model card: what the model is, what it was trained and tested on, and what not to use it for
        (`lungsound.inference.card`)."""
        return card_facts(self.cfg, self.meta, self.spec, self.backend, method=self.explanation_method,
                          temperature=self.temperature, source=self.source)

    # --- prediction --------------------------------------------------------------------------------------------------

    def predict(self, source, sample_rate: int | None = None, *, annotation=None, segmentation: str = "auto",
                name: str | None = None, max_seconds: float | None = 120.0, metadata: dict | None = None) -> Prediction:
        """Analyse one recording: a path, the bytes of an uploaded file (`name` labels it), or a 1-D float array at
        `sample_rate`. `annotation` is an ICBHI .txt path or a list of (start, end) seconds. `metadata` (age, sex,
        location, device; a missing or blank one unknown) is what a model that reads it (`uses_metadata`) is given;
        without it every field is unknown and the result's warnings say so. Other models ignore it."""
        if segmentation not in SEGMENTATIONS:
            raise LungsoundError(f"segmentation must be one of {', '.join(SEGMENTATIONS)}, got {segmentation!r}")
        meta = check_metadata(metadata) if self.spec.uses_metadata else None
        with pywarnings.catch_warnings(record=True) as caught:
            pywarnings.simplefilter("always")
            label, native, native_sr = _read(source, sample_rate, name, max_seconds)
        warnings = _about_file(caught, label) + _check_signal(native, native_sr, label)
        x = resample(native, native_sr, self.sample_rate)
        del native  # the recording at its own rate is not needed any more (a long one is large)
        duration = len(x) / self.sample_rate
        used, spans, more = self._segments(x, duration, annotation, segmentation, label)
        probs = self._classify(x, spans, label, meta)
        segments = [Segment(float(a), float(b), {c: float(p) for c, p in zip(CLASSES, row)})
                    for (a, b), row in zip(spans, probs)]
        return Prediction(file=label, duration=float(duration), sample_rate=int(native_sr), segmentation=used,
                          segments=segments, summary=summarize(segments, used),
                          warnings=warnings + more + _metadata_notes(meta), waveform=x, metadata=meta)

    def _segments(self, x: np.ndarray, duration: float, annotation, segmentation: str,
                  label: str) -> tuple[str, list[Span], list[str]]:
        if segmentation == "cycles" and annotation is None:
            raise LungsoundError("segmentation 'cycles' needs an annotation (an ICBHI .txt file or (start, end) list)",
                                 label)
        if annotation is not None and segmentation in ("auto", "cycles"):
            spans, warnings = annotated_cycles(annotation, duration, label)
            return "cycles", spans, warnings
        if segmentation in ("auto", "breath"):
            spans = detect_breath_cycles(x, self.sample_rate, self.breath)
            if spans:
                return "breath", spans, []
            note = "no breathing rhythm found in the sound envelope; the recording was analysed in sliding windows"
            return "windows", sliding_windows(duration, self.window, self.hop), [note]
        return "windows", sliding_windows(duration, self.window, self.hop), []

    def model_inputs(self, x: np.ndarray, spans: list[Span]) -> torch.Tensor:
        """The model's input for each span of a recording at `sample_rate`: (n, T, 128) fbanks, or (n, L) waveforms."""
        return self._inputs(fade_recording(x, self.cycle_cfg), spans)

    def _inputs(self, faded: np.ndarray, spans: list[Span]) -> torch.Tensor:
        waves = np.stack([fix_length(self._cut(faded, a, b), self.cycle_cfg) for a, b in spans])
        if self.fbank_cfg is None:
            return torch.from_numpy(waves)
        return compute_features_batch(waves, self.fbank_cfg)

    def _classify(self, x: np.ndarray, spans: list[Span], label: str = "", meta: dict | None = None) -> np.ndarray:
        """Calibrated class probabilities (n, C) of every span, made and classified `chunk_size(batch_size)` spans at a
        time, so memory does not grow with the recording. Logits of the wrong shape, and probabilities that are not
        finite (a NaN from the model), are a one-line error naming the file: never a finding."""
        faded = fade_recording(x, self.cycle_cfg)
        chunk = chunk_size(self.batch_size)
        probs = []
        for i in range(0, len(spans), chunk):
            part = spans[i:i + chunk]
            logits = self.logits(self._inputs(faded, part), meta)
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

    def logits(self, inputs: torch.Tensor | np.ndarray, metadata: dict | None = None) -> np.ndarray:
        """(n, C) float32 logits of n model inputs, in batches of `batch_size`, on `threads` intra-op threads; a model
        that reads metadata gets `metadata` (`check_metadata`; None: every field unknown) for every input."""
        inputs = torch.as_tensor(inputs)
        if not self.spec.uses_metadata:
            return np.concatenate([self.backend.logits(inputs[i:i + self.batch_size])
                                   for i in range(0, len(inputs), self.batch_size)])
        meta, out = check_metadata(metadata), []
        with torch_threads(self.threads), torch.inference_mode():
            for i in range(0, len(inputs), self.batch_size):
                part = inputs[i:i + self.batch_size].to(self.device)
                out.append(self.backend.model(part, meta=[meta] * len(part)).float().cpu().numpy())
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
        model = self.backend.explainer()
        if self.spec.uses_metadata:  # the metadata the prediction was made with (lungsound.models.conditioning)
            model = bind_metadata(model, [pred.metadata], "clean")
        seg = pred.segments[segment_index]
        x = self.model_inputs(pred.waveform, [(seg.start, seg.end)])[0].to(next(model.parameters()).device)
        predicted = max(seg.probabilities, key=seg.probabilities.get)
        piece = self._cut(fade_recording(pred.waveform, self.cycle_cfg), seg.start, seg.end)
        with torch_threads(self.threads):
            return explain_segment(model, x, piece, seg.start, self.cycle_cfg, self.fbank_cfg,
                                   CLASSES.index(predicted), self.spec.explanation)

    def _cut(self, faded: np.ndarray, start: float, end: float) -> np.ndarray:
        """Samples of a span as training cuts cycles (int() truncation), at least one sample."""
        lo, hi = cycle_bounds(start, end, self.sample_rate, len(faded))
        lo = min(lo, len(faded) - 1)
        return faded[lo:max(hi, lo + 1)]


def _metadata_notes(meta: dict | None) -> list[str]:
    """What a result says about the metadata a metadata model was given (nothing for other models)."""
    if meta is None:
        return []
    if all_unknown(meta):
        return ["no metadata was given: the model read age, sex, chest location and device as unknown (it was trained "
                "with them; pass them for the result it was measured at)"]
    unknown = [k for k, v in meta.items() if v is None]
    return [f"metadata {', '.join(unknown)} unknown: the model read {'it' if len(unknown) == 1 else 'them'} as "
            "unknown"] if unknown else []
