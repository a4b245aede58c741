"""What a prediction returns: per-segment probabilities, the recording-level summary, and explanations.

Recording-level rule (documented for clinicians and tested):

- Per segment i, with calibrated class probabilities p_i (normal, crackle, wheeze, both), the probability that it
  contains crackles is c_i = p_i(crackle) + p_i(both), and wheezes w_i = p_i(wheeze) + p_i(both).
- Crackles are *present* in the recording when c_i > 0.5 for at least one segment; wheezes likewise with w_i.
- Label: "both" when both are present, "crackles" or "wheezes" when one is, else "normal".
- Probability of the label: max_i c_i (crackles), max_i w_i (wheezes), min(max_i c_i, max_i w_i) (both: the weaker of the
  two findings), and min_i p_i(normal) for normal (the least normal-looking segment).
- `probabilities`: the mean of the segment probabilities (each segment weighs the same; sums to 1).
- `crackle_segments` / `wheeze_segments`: how many segments have c_i > 0.5 / w_i > 0.5.
- Probabilities that are not finite are no evidence of anything: `summarize` refuses them (a NaN fails every
  threshold and would otherwise read as "normal").
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from lungsound.data.labels import CLASSES
from lungsound.errors import LungsoundError

THRESHOLD = 0.5
UNITS = {  # segmentation -> (singular, plural) name of a segment in the summary sentence
    "cycles": ("annotated breathing cycle", "annotated breathing cycles"),
    "breath": ("detected breathing cycle", "detected breathing cycles"),
    "windows": ("analysis window", "analysis windows"),
}


@dataclass
class Segment:
    """One analysed stretch of the recording: seconds from its start, and the calibrated class probabilities."""

    start: float
    end: float
    probabilities: dict[str, float]

    def to_dict(self) -> dict:
        return {"start": self.start, "end": self.end, "probabilities": dict(self.probabilities)}


@dataclass
class Prediction:
    """The result of `Predictor.predict` for one recording."""

    file: str
    duration: float
    sample_rate: int  # of the source (the model works at its own rate, `Predictor.sample_rate`)
    segmentation: str  # cycles | breath | windows (what was actually used)
    segments: list[Segment]
    summary: dict
    warnings: list[str] = field(default_factory=list)
    waveform: np.ndarray | None = field(default=None, repr=False)  # float32 mono at `Predictor.sample_rate`
    metadata: dict | None = None  # what a metadata model read (age, sex, location, device; None unknown), else None

    def to_dict(self) -> dict:
        """JSON-ready: {"file", "duration", "summary", "warnings", "segments": [{"start", "end", "probabilities"}]},
        and "metadata" for a model that reads it."""
        out = {"file": self.file, "duration": self.duration, "summary": dict(self.summary),
               "warnings": list(self.warnings), "segments": [s.to_dict() for s in self.segments]}
        return out if self.metadata is None else {**out, "metadata": dict(self.metadata)}


@dataclass
class Explanation:
    """What the model used in one segment, aligned with the segment's spectrogram `fbank` (frames x mel bins).

    `kind` "time-frequency" (attention rollout, Grad-CAM of a spectrogram model): `heatmap` is (T, 128) in [0, 1], one
    value per frame and band. `kind` "time" (gradient x input of a waveform model): `heatmap` is (T,) in [0, 1], one
    value per 10-ms frame, frame k being samples [160 k, 160 k + 160) of the segment - the stretch the app draws
    `fbank` frame k over. Both cover the audio of the segment from `start` to `end` seconds (the first model-duration seconds of a
    longer segment); frames are 10 ms apart. `target` is the class explained (Grad-CAM, gradient x input) or predicted
    (attention rollout).
    """

    fbank: np.ndarray  # (T, 128) log mel energies, not normalised (for display; a waveform model never sees it)
    heatmap: np.ndarray  # (T, 128) or (T,) in [0, 1]
    method: str  # attention-rollout | grad-cam | gradient-x-input
    start: float
    end: float
    target: str = ""
    kind: str = "time-frequency"  # time-frequency | time


def summarize(segments: list[Segment], segmentation: str) -> dict:
    """The recording-level summary of the module docstring, with a one-sentence `text` for a clinician."""
    probs = np.array([[s.probabilities[c] for c in CLASSES] for s in segments], dtype=np.float64)
    if not np.isfinite(probs).all():  # NaN > 0.5 is False: it would read as "normal"
        raise LungsoundError("segment probabilities contain NaN or infinite values: no finding can be made from them")
    normal, crackle, wheeze, both = (CLASSES.index(c) for c in ("normal", "crackle", "wheeze", "both"))
    c = probs[:, crackle] + probs[:, both]
    w = probs[:, wheeze] + probs[:, both]
    n_c, n_w = int((c > THRESHOLD).sum()), int((w > THRESHOLD).sum())
    if n_c and n_w:
        label, probability = "both", float(min(c.max(), w.max()))
    elif n_c:
        label, probability = "crackles", float(c.max())
    elif n_w:
        label, probability = "wheezes", float(w.max())
    else:
        label, probability = "normal", float(probs[:, normal].min())
    mean = probs.mean(axis=0)
    return {"label": label, "probability": probability,
            "probabilities": {name: float(v) for name, v in zip(CLASSES, mean)},
            "text": _sentence(segments, segmentation, label, c, w, probs[:, normal]),
            "crackle_segments": n_c, "wheeze_segments": n_w}


def _sentence(segments: list[Segment], segmentation: str, label: str, c: np.ndarray, w: np.ndarray,
              p_normal: np.ndarray) -> str:
    one, many = UNITS[segmentation]
    total = len(segments)

    def unit(n: int) -> str:
        return one if n == 1 else many

    def finding(scores: np.ndarray) -> tuple[int, str]:
        i = int(scores.argmax())
        return int((scores > THRESHOLD).sum()), (f"highest confidence {_pct(scores[i])}, "
                                                 f"at {_span(segments[i])}")

    if label == "normal":
        i = int(p_normal.argmin())
        where = "the" if total == 1 else f"any of the {total}"
        return (f"No crackles or wheezes detected in {where} {unit(total)} (least certain: "
                f"{_pct(p_normal[i])} normal, at {_span(segments[i])}).")
    if label in ("crackles", "wheezes"):
        n, detail = finding(c if label == "crackles" else w)
        return f"{label.capitalize()} detected in {n} of {total} {unit(total)} ({detail})."
    (n_c, detail_c), (n_w, detail_w) = finding(c), finding(w)
    return (f"Crackles and wheezes detected: crackles in {n_c} of {total} {unit(total)} ({detail_c}), "
            f"wheezes in {n_w} ({detail_w}).")


def _pct(p: float) -> str:
    return f"{100 * p:.0f}%"


def _span(s: Segment) -> str:
    return f"{s.start:.1f}-{s.end:.1f} s"
