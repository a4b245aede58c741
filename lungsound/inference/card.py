"""The facts of a model card that the app's card (`Predictor.card`) and a pushed model's README.md
(`lungsound.sharing.card`) share, so both say the same words: what the model takes as input, how its output is
explained, what it is meant for, and what it cannot do.

What a model *is* comes from its registration (`lungsound.models.model_spec(name)`: input kind, sample rate, fbank
frame rate, explanation method), how it runs from its runtime (`lungsound.inference.runtimes`), what it was trained
and tested on from the folder's config.yaml and meta.json. Nothing here decides by a model's or a runtime's name.
"""

from __future__ import annotations

from pathlib import Path

from lungsound.config import ExperimentConfig
from lungsound.data.default import MARKER
from lungsound.inference.explain import METHODS
from lungsound.models.registry import ModelSpec

INTENDED_USE = ("Research and teaching demonstration: shows which breathing cycles of a chest recording a model trained "
                "on the ICBHI 2017 database considers to contain crackles or wheezes. Not a medical device; not for "
                "diagnosis or treatment decisions.")


def input_words(spec: ModelSpec) -> str:
    """What the model takes, e.g. "spectrogram (128-band Kaldi log-mel filterbank, 10-ms frames)" or "raw waveform
    (16 kHz samples)"."""
    if spec.input == "waveform":
        words = f"raw waveform ({spec.sample_rate / 1000:g} kHz samples)"
        return words + (" and the patient's age, sex, chest location and device, as one sentence"
                        if spec.uses_metadata else "")
    return f"spectrogram (128-band Kaldi log-mel filterbank, {1000 / spec.frames_per_second:g}-ms frames)"


def explanation_words(method: str | None, runtime) -> str:
    """How a segment's output is explained (`method`: a key of `lungsound.inference.explain.METHODS`, None when there
    is no explanation), with a note on the PyTorch weights for an exported `runtime`."""
    if method is None:
        return (f"none: this fast {runtime.title} model was exported without its PyTorch weights" if runtime.exported
                else "none for this kind of model")
    return METHODS[method].words + (", computed with the folder's PyTorch weights for the segment shown"
                                    if runtime.exported else "")


def trained_on_synthetic(cfg: ExperimentConfig) -> bool:
    """Whether a model's training data was the built-in synthetic set (data.root null, or a folder it marks)."""
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


def card_facts(cfg: ExperimentConfig, meta: dict, spec: ModelSpec, runtime, *, method: str | None,
               temperature: float, source: str) -> dict:
    """The facts of the app's model card: what the model is, what it was trained and tested on, how it runs and is
    explained, and what not to use it for."""
    root = cfg.data.root
    synthetic = trained_on_synthetic(cfg)
    metrics = meta.get("metrics") or {}
    test = {k: float(metrics[f"test_{k}"]) for k in ("sp", "se", "score") if f"test_{k}" in metrics}
    calibration = meta.get("calibration")
    return {
        "name": cfg.name, "model": cfg.model.name, "method": meta.get("method", cfg.method.name),
        "protocol": meta.get("protocol", cfg.train.protocol),
        "trained_on": root if root is not None else "built-in synthetic ICBHI-format data set",
        "synthetic": synthetic, "selected_epoch": meta.get("selected_epoch"), "seed": meta.get("seed"),
        "test_scores": test or None, "calibration": calibration, "temperature": temperature,
        "split": cfg.data.split, "evaluations": meta.get("evaluations") or None,
        "segment_seconds": cfg.data.duration, "source": source,
        "input": input_words(spec), "explanation_method": method,
        "explanation": explanation_words(method, runtime), "runtime": runtime.label, "runtime_words": runtime.words,
        "intended_use": INTENDED_USE, "limitations": model_limitations(synthetic, bool(calibration)),
    }
