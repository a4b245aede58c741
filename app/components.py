"""Figures and texts of the app, built from a `lungsound.inference.Prediction` (no Streamlit in here).

Every figure is a matplotlib `Figure` made without pyplot (thread-safe under Streamlit's script runners), rendered to
PNG by `png` at a fixed resolution and shown with `st.image`. Time runs left to right in seconds on every plot, and
all figures have the same width and margins, so the time axes of the timeline, the waveform and the spectrogram line
up on the page.

The spectrogram is the Kaldi log-mel filterbank the models take as input (128 HTK-mel bands from 20 Hz to 8 kHz, 25 ms
frames every 10 ms; `lungsound.features.fbank`). Its band i has the centre frequency
f_i = 700 (exp(m_i / 1127) - 1) with m_i = m(20 Hz) + (i + 1) d and d = (m(8000 Hz) - m(20 Hz)) / 129, which places the
frequency ticks. The explanation heatmap (values in [0, 1], one per 10 ms frame and band of the segment's own audio, as
`Predictor.explain` folds it back from the padded model input) has its most influential quarter drawn in red over
the segment's span on the whole-recording spectrogram and over the segment's own spectrogram in a zoomed panel. A
waveform model's explanation is a time saliency (one value in [0, 1] per 10-ms frame, `kind` "time"): it is drawn as a
strip (a one-row red image with its curve) directly under the zoomed spectrogram, on the same time axis (shared x), and
the spectrogram itself gets no overlay (that model never sees it).
For display only, each band's log energy is divided by the total weight of its triangular filter,
log(E_i / W_i) = log E_i - log W_i with W_i = sum_k w_ik (energy per unit of filter weight, as an area-normalised mel
filterbank gives): below about 300 Hz the Kaldi filters are narrower than the 31.25 Hz FFT bins and catch very
different amounts of them (W_i alternates between about 0.03 and 0.97), which would otherwise show as stripes. A band
whose filter catches no bin at all (W_i = 0) is drawn as the mean of its two neighbours.
"""

from __future__ import annotations

import io
import math
from functools import lru_cache
from typing import Any, Sequence

import numpy as np
from matplotlib.colors import to_rgb
from matplotlib.figure import Figure

from lungsound.audio import resample
from lungsound.features.fbank import kaldi_fbank
from lungsound.inference.result import THRESHOLD  # the recording-level rule of the summary

CLASS_COLORS = {"normal": "#009E73", "crackle": "#E69F00", "wheeze": "#0072B2", "both": "#CC79A7"}  # Okabe-Ito
CLASS_WORDS = {"normal": "normal", "crackle": "crackles", "wheeze": "wheezes", "both": "crackles and wheezes"}
FRAME_SECONDS = 0.010  # fbank frame shift
DISPLAY_RATE = 16000  # Hz: the displayed spectrogram's audio rate (its top band ends at 8 kHz, half of it)
MEL_BANDS, MEL_LOW, MEL_HIGH = 128, 20.0, DISPLAY_RATE / 2
FREQ_TICKS = (100, 250, 500, 1000, 2000, 4000, 8000)
METHOD_WORDS = {"ce": "cross-entropy (standard supervised training)",
                "patchmix_ce": "Patch-Mix with cross-entropy (Bae et al., Interspeech 2023)",
                "patchmix_cl": "Patch-Mix contrastive learning (Bae et al., Interspeech 2023)",
                "sgscl": "stethoscope-guided supervised contrastive learning (Kim et al., ICASSP 2024)",
                "dat": "domain-adversarial training across stethoscopes (Ganin & Lempitsky, ICML 2015)",
                "compose": "a combination of training objectives"}
PROTOCOL_WORDS = {"paper": "paper (the epoch with the best test score, as in the publications: the test scores are "
                            "optimistic)",
                  "clean": "clean (the epoch was chosen on held-out validation patients: the test scores are unbiased)"}
SELECTED_SHADE = "#fff3b0"
MAX_WAVEFORM_POINTS = 4000
HEAT_SHOWN = 0.25  # share of the explanation heatmap drawn (its most influential quarter)
FIG_WIDTH = 11.0  # inches; every figure has the same width and margins
DPI = 110  # PNG resolution: sharp on screen at the page's width, and half the rendering time of st.pyplot's 200


# ----------------------------------------------------------------------------------------------------------- texts
READING_RULE = (f"How to read this: a finding is reported when at least one segment gives it more than "
                f"{100 * THRESHOLD:.0f}% (crackles count 'crackles' plus 'crackles and wheezes', wheezes likewise).")


def percent(p: float) -> str:
    return f"{100.0 * p:.0f}%"


def class_name(label: str) -> str:
    return CLASS_WORDS.get(label, label)


def segment_label(index: int, segment: Any) -> str:
    """'Segment 3: 4.2-6.9 s, most likely crackles (71%)' for the segment picker."""
    label, p = top_class(segment.probabilities)
    return (f"Segment {index + 1}: {segment.start:.1f}-{segment.end:.1f} s, most likely {class_name(label)} "
            f"({percent(p)})")


def top_class(probabilities: dict[str, float]) -> tuple[str, float]:
    label = max(probabilities, key=probabilities.get)
    return label, float(probabilities[label])


def segments_table(segments: Sequence[Any], classes: Sequence[str]) -> list[dict[str, Any]]:
    """One row per segment: number, start, end, the most likely class, and every class probability in percent."""
    rows = []
    for i, seg in enumerate(segments):
        label, _ = top_class(seg.probabilities)
        row = {"segment": i + 1, "start (s)": round(seg.start, 2), "end (s)": round(seg.end, 2),
               "most likely": class_name(label)}
        row.update({f"{c} (%)": round(100.0 * seg.probabilities[c], 1) for c in classes})
        rows.append(row)
    return rows


def segmentation_text(method: str, n_segments: int) -> str:
    how = {"cycles": "the breathing cycles of the annotation file you gave",
           "breath": "breathing cycles detected from the sound's loudness envelope",
           "windows": "fixed overlapping windows (no clear breathing cycles were found)"}.get(method, method)
    return f"{n_segments} segment{'s' if n_segments != 1 else ''}, cut by {how}."


def calibration_text(calibrated: bool, temperature: float) -> str:
    if calibrated:
        return (f"Probabilities are calibrated (temperature scaling, T = {temperature:.2f}): on held-out patients, "
                "findings given about 70% were present about 70% of the time.")
    return ("Probabilities are NOT calibrated: read them as the model's relative confidence, not as a chance of the "
            "finding.")


def no_explanation_fast(title: str, engine: str) -> str:
    """Instead of the explanation of a model exported (to `title`, run by `engine`) without its PyTorch weights."""
    return (f"**This fast model has no explanation.** It was exported to {title} without the original PyTorch "
            f"weights, and {engine} gives no gradients or attention maps, so the page cannot show what the model "
            "used. The probabilities above are unaffected. Export it again without `--no-torch-weights`, or pick the "
            "original model, to see explanations.")


def fast_model_caption(runtime: str) -> str:
    """Under the spectrogram of an exported model: where the probabilities and the explanation come from."""
    return (f"The probabilities come from the fast exported model ({runtime}); the explanation of the selected "
            "segment was computed with the original PyTorch weights, for that segment only.")


def is_time_explanation(explanation: Any) -> bool:
    return getattr(explanation, "kind", "time-frequency") == "time"


def explanation_caption(explanation: Any) -> str:
    """What the explanation under the spectrogram shows, in words ("" when there is none)."""
    if explanation is None:
        return ""
    target = getattr(explanation, "target", "")
    output = f" towards its output '{class_name(target)}'" if target else ""
    if is_time_explanation(explanation):
        return (f"Time saliency of a waveform model ({explanation.method}): this model hears the raw waveform, not the "
                f"spectrogram. The red strip under the enlarged segment shows how much each 10-ms stretch of the sound "
                f"moved the model{output} (gradient x input, darker = more); the spectrogram above it is for "
                f"orientation only.")
    return (f"Red on the spectrogram: the time-frequency regions the model relied on most{output} "
            f"({explanation.method}).")


def model_card_markdown(card: dict[str, Any]) -> str:
    """The model card as Markdown: a table of facts (input, explanation, data, method, protocol, scores, calibration),
    then the intended use and the limitations as lists."""
    rows = [("Model", f"{card.get('name', 'unnamed')}" + (f" ({card['model']})" if card.get("model") else "")),
            ("Model input", card.get("input")),
            ("Explanation shown", card.get("explanation")),
            ("Runs on", card.get("runtime_words") or card.get("runtime")),
            ("Trained on", card.get("trained_on")),
            ("Training method", METHOD_WORDS.get(card.get("method"), card.get("method"))),
            ("Epoch selection", PROTOCOL_WORDS.get(card.get("protocol"), card.get("protocol"))),
            ("Test scores (ICBHI metric)", _scores_text(card.get("test_scores"))),
            ("Calibration", _calibration_text(card.get("calibration"))),
            ("Audio per segment", f"{card['segment_seconds']:g} s" if _is_number(card.get("segment_seconds"))
             else None),
            ("Selected epoch, seed", ", ".join(str(card[k]) for k in ("selected_epoch", "seed")
                                               if card.get(k) is not None) or None),
            ("Loaded from", f"`{card['source']}`" if card.get("source") else None)]
    table = "| About this model | |\n|---|---|\n" + "\n".join(
        f"| {title} | {str(value).replace('|', '/')} |" for title, value in rows if value not in (None, ""))
    parts = [table]
    if card.get("synthetic"):
        parts.append("**The training data is synthetic**: these scores say nothing about real patients.")
    from lungsound.external.card import card_sections  # a non-official split, external validation figures

    parts.extend(card_sections(card))
    for key, title in (("intended_use", "Intended use"), ("limitations", "Limitations")):
        value = card.get(key)
        items = value if isinstance(value, (list, tuple)) else [value] if value else []
        if items:
            parts.append(f"**{title}**\n\n" + "\n".join(f"- {v}" for v in items))
    return "\n\n".join(parts)


def _scores_text(scores: Any) -> str | None:
    if not isinstance(scores, dict) or not scores:
        return None
    names = {"sp": "specificity (normal cycles)", "se": "sensitivity (abnormal cycles)", "score": "score (their mean)"}
    return ", ".join(f"{names.get(k, k)} {float(v):.1f}%" for k, v in scores.items() if _is_number(v))


def _calibration_text(calibration: Any) -> str:
    if not isinstance(calibration, dict) or "temperature" not in calibration:
        return "none: the probabilities are the model's raw confidences"
    text = f"temperature scaling, T = {float(calibration['temperature']):.2f}"
    if _is_number(calibration.get("ece_before")) and _is_number(calibration.get("ece_after")):
        text += (f"; expected calibration error {100 * calibration['ece_before']:.1f}% before, "
                 f"{100 * calibration['ece_after']:.1f}% after")
    return text + (f" (fitted on {calibration['n']} held-out cycles)" if calibration.get("n") else "")


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(float(v))


# --------------------------------------------------------------------------------------------------------- figures
def png(fig: Figure) -> bytes:
    """The figure as PNG bytes (what the page shows)."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI, facecolor="white")
    return buf.getvalue()


def log_mel(waveform: np.ndarray, sample_rate: int = DISPLAY_RATE) -> np.ndarray:
    """The (frames, 128) Kaldi log-mel spectrogram of a waveform at `sample_rate` (resampled to the display's 16 kHz
    first when it is another), not normalised (`kaldi_fbank`)."""
    x = np.asarray(waveform, dtype=np.float32)
    return kaldi_fbank(resample(x, sample_rate, DISPLAY_RATE) if sample_rate != DISPLAY_RATE else x).numpy()


def _figure(height: float, rows: int = 1) -> tuple[Figure, Any]:
    """A figure whose plot area spans the same horizontal range in every figure, so their time axes line up."""
    fig = Figure(figsize=(FIG_WIDTH, height))
    axes = fig.subplots(rows, 1)
    fig.subplots_adjust(left=0.075, right=0.985, top=1.0 - 0.35 / height, bottom=0.55 / height,
                        hspace=0.9 / (height / rows) if rows > 1 else 0.0)
    return fig, axes


def _mark_segments(ax, segments: Sequence[Any], selected: int | None, color: str = "#555555") -> None:
    """Segment boundaries as dotted lines, the selected segment shaded."""
    for i, seg in enumerate(segments):
        if i == selected:
            ax.axvspan(seg.start, seg.end, color=SELECTED_SHADE, alpha=0.35, zorder=0, lw=0)
        for t in (seg.start, seg.end):
            ax.axvline(t, color=color, lw=0.8, ls=":", zorder=3)


def waveform_figure(waveform: np.ndarray, sample_rate: int, segments: Sequence[Any],
                    selected: int | None = None) -> Figure:
    """The recording's amplitude over time (min/max envelope when long), with the segment boundaries."""
    fig, ax = _figure(2.2)
    x = np.asarray(waveform, dtype=np.float32)
    duration = len(x) / sample_rate
    if len(x) > 2 * MAX_WAVEFORM_POINTS:
        bins = np.array_split(x, MAX_WAVEFORM_POINTS)
        t = np.linspace(0.0, duration, MAX_WAVEFORM_POINTS)
        ax.fill_between(t, [b.min() for b in bins], [b.max() for b in bins], color="#34495e", lw=0)
    else:
        ax.plot(np.arange(len(x)) / sample_rate, x, color="#34495e", lw=0.6)
    _mark_segments(ax, segments, selected)
    ax.set_xlim(0.0, duration)
    ax.set_xlabel("time (s)")
    ax.set_ylabel("amplitude")
    ax.set_title("Waveform (dotted lines: segment boundaries, shaded: the selected segment)", fontsize=10, loc="left")
    return fig


def timeline_figure(segments: Sequence[Any], classes: Sequence[str], duration: float,
                    selected: int | None = None) -> Figure:
    """Class probabilities per segment as stacked bars over each segment's time span."""
    fig, ax = _figure(2.6)
    starts = np.array([s.start for s in segments])
    ends = np.array([s.end for s in segments])
    # Overlapping segments (sliding windows) are drawn up to where the next one starts, so bars do not hide each other.
    rights = np.minimum(ends, np.append(starts[1:], np.inf))
    widths = np.maximum(rights - starts, 1e-3) * 0.97
    bottom = np.zeros(len(segments))
    for c in classes:
        p = np.array([s.probabilities[c] for s in segments])
        ax.bar(starts, p, width=widths, bottom=bottom, align="edge", color=CLASS_COLORS.get(c), label=class_name(c),
               edgecolor="white", lw=0.4)
        bottom += p
    if selected is not None and 0 <= selected < len(segments):
        ax.bar(starts[selected], 1.0, width=widths[selected], align="edge", fill=False, edgecolor="black", lw=1.6)
    ax.axhline(0.5, color="black", lw=0.6, ls="--", alpha=0.5)
    ax.set_xlim(0.0, duration)
    ax.set_ylim(0.0, 1.0)
    ax.set_yticks([0, 0.25, 0.5, 0.75, 1.0], ["0%", "25%", "50%", "75%", "100%"])
    ax.set_xlabel("time (s)")
    ax.set_ylabel("probability")
    ax.set_title("Probability of each finding per segment (black frame: selected)", fontsize=10, loc="left")
    ax.legend(loc="lower right", bbox_to_anchor=(1.0, 1.0), ncols=len(classes), frameon=False, fontsize=9,
              borderaxespad=0.1)
    return fig


def _mel(f: float) -> float:
    return 1127.0 * math.log(1.0 + f / 700.0)


def mel_band_of(frequency: float) -> float:
    """Fractional index of the mel band centred on `frequency` (Hz); see the module docstring."""
    d = (_mel(MEL_HIGH) - _mel(MEL_LOW)) / (MEL_BANDS + 1)
    return (_mel(frequency) - _mel(MEL_LOW)) / d - 1.0


def _frequency_axis(ax) -> None:
    ticks = [f for f in FREQ_TICKS if mel_band_of(f) >= 0]
    ax.set_yticks([mel_band_of(f) + 0.5 for f in ticks], [f"{f / 1000:g} k" if f >= 1000 else str(f) for f in ticks])
    ax.set_ylabel("frequency (Hz)")


def _overlay(heatmap: np.ndarray, color: str = "#e41a1c", strength: float = 0.8) -> np.ndarray:
    """RGBA image (bands, frames, 4) of one colour over the top HEAT_SHOWN share of the heatmap.

    Opacity is strength * clip((h - q) / (max - q), 0, 1) with q the (1 - HEAT_SHOWN) quantile of h, so the regions
    that mattered most stand out and the rest of the spectrogram stays readable.
    """
    h = np.clip(np.nan_to_num(np.asarray(heatmap, dtype=np.float32)), 0.0, 1.0).T
    q, top = float(np.quantile(h, 1.0 - HEAT_SHOWN)), float(h.max())
    h = np.clip((h - q) / max(top - q, 1e-6), 0.0, 1.0)
    rgba = np.zeros(h.shape + (4,), dtype=np.float32)
    rgba[..., :3] = to_rgb(color)
    rgba[..., 3] = strength * h
    return rgba


@lru_cache(maxsize=1)
def _filter_weights() -> np.ndarray:
    """W_i, the total weight of each of the 128 Kaldi mel filters over the FFT bins (see the module docstring)."""
    from torchaudio.compliance.kaldi import get_mel_banks

    banks, _ = get_mel_banks(MEL_BANDS, 512, float(DISPLAY_RATE), MEL_LOW, 0.0, 100.0, -500.0, 1.0)
    return banks.sum(dim=1).numpy().astype(np.float64)


def display_spectrogram(fbank: np.ndarray) -> np.ndarray:
    """log(E_i / W_i) of a (frames, 128) Kaldi log-mel spectrogram, empty bands filled from their neighbours."""
    weights = _filter_weights()
    spec = np.array(fbank, dtype=np.float64)
    full = np.flatnonzero(weights > 0)
    spec[:, full] -= np.log(weights[full])
    for band in np.flatnonzero(weights <= 0):
        neighbours = full[np.argsort(np.abs(full - band), kind="stable")[:2]]
        spec[:, band] = spec[:, neighbours].mean(axis=1)
    return spec.astype(np.float32)


def _spectrogram(ax, spectrogram: np.ndarray, start: float = 0.0) -> float:
    """Draw a (frames, bands) log-mel spectrogram from `start` seconds in grey; returns its end in seconds."""
    spec = display_spectrogram(spectrogram)
    lo, hi = np.percentile(spec, [2, 99.5])
    end = start + spec.shape[0] * FRAME_SECONDS
    ax.imshow(spec.T, origin="lower", aspect="auto", cmap="gray_r", vmin=lo, vmax=hi, interpolation="nearest",
              extent=(start, end, 0.0, spec.shape[1]))
    return end


def spectrogram_figure(spectrogram: np.ndarray, segments: Sequence[Any], selected: int | None = None,
                       explanation: Any = None) -> Figure:
    """Log-mel spectrogram of the whole recording with the segment boundaries and the selected segment's explanation.

    `spectrogram` is (frames, 128) at 10 ms per frame. With an explanation a second panel zooms into that segment; a
    time explanation (waveform models) is a strip under that panel, sharing its time axis.
    """
    timed = explanation is not None and is_time_explanation(explanation)
    if explanation is None:
        fig, ax = _figure(3.0)
    elif not timed:
        fig, (ax, zoom) = _figure(6.0, 2)
    else:
        fig, (ax, zoom, strip) = _figure_with_strip(7.2)
    duration = _spectrogram(ax, spectrogram)
    _mark_segments(ax, segments, None, color="#1f78b4")
    if selected is not None and 0 <= selected < len(segments):
        seg = segments[selected]
        ax.axvspan(seg.start, seg.end, ymin=0.0, ymax=0.03, color="black")
        if explanation is not None and not timed:
            _heat(ax, explanation)
    ax.set_xlim(0.0, duration)
    ax.set_xlabel("time (s)")
    _frequency_axis(ax)
    ax.set_title("Spectrogram of the recording (blue dotted lines: segment boundaries, black bar: the selected segment"
                 + (", red: what the model used most)" if explanation is not None and not timed else ")"),
                 fontsize=10, loc="left")
    if explanation is None:
        return fig
    _spectrogram(zoom, explanation.fbank, explanation.start)
    zoom.set_xlim(explanation.start, explanation.start + len(explanation.fbank) * FRAME_SECONDS)
    _frequency_axis(zoom)
    target = getattr(explanation, "target", "")
    span = f"Selected segment, {explanation.start:.1f}-{explanation.end:.1f} s, enlarged"
    if timed:
        zoom.tick_params(labelbottom=False)
        zoom.set_title(span + ": the model hears the raw waveform; its time saliency is the strip below",
                       fontsize=10, loc="left")
        _time_strip(strip, explanation)
        return fig
    _heat(zoom, explanation)
    zoom.set_xlabel("time (s)")
    zoom.set_title(span + ": red = the regions the model relied on most"
                   + (f" for its output '{class_name(target)}'" if target else "")
                   + f" ({explanation.method})", fontsize=10, loc="left")
    return fig


def _figure_with_strip(height: float) -> tuple[Figure, tuple[Any, Any, Any]]:
    """Like `_figure` with two panels, the second one with a thin strip right under it that shares its x axis."""
    fig = Figure(figsize=(FIG_WIDTH, height))
    outer = fig.add_gridspec(2, 1, left=0.075, right=0.985, top=1.0 - 0.35 / height, bottom=0.55 / height,
                             hspace=0.9 / 3.0, height_ratios=[2.6, 3.4])
    inner = outer[1].subgridspec(2, 1, height_ratios=[2.6, 0.8], hspace=0.3)
    ax = fig.add_subplot(outer[0])
    zoom = fig.add_subplot(inner[0])
    strip = fig.add_subplot(inner[1], sharex=zoom)
    return fig, (ax, zoom, strip)


def _time_strip(ax, explanation: Any) -> None:
    """A (T,) time saliency in [0, 1] as a one-row red image with its curve, from the explanation's start."""
    heat = np.clip(np.nan_to_num(np.asarray(explanation.heatmap, dtype=np.float32).ravel()), 0.0, 1.0)
    end = explanation.start + len(heat) * FRAME_SECONDS
    ax.imshow(heat[None, :], origin="lower", aspect="auto", cmap="Reds", vmin=0.0, vmax=1.0, interpolation="nearest",
              extent=(explanation.start, end, 0.0, 1.0))
    t = explanation.start + (np.arange(len(heat)) + 0.5) * FRAME_SECONDS
    ax.plot(t, heat, color="#67000d", lw=0.8)
    ax.set_ylim(0.0, 1.0)
    ax.set_yticks([0.0, 1.0], ["0", "1"])
    ax.set_ylabel("saliency", fontsize=9)
    ax.set_xlabel("time (s)")
    target = getattr(explanation, "target", "")
    ax.set_title(f"Time saliency ({explanation.method})" + (f" for its output '{class_name(target)}'" if target else "")
                 + ": darker red = the 10-ms stretches that moved the output most", fontsize=9, loc="left", pad=2)


def _heat(ax, explanation: Any) -> None:
    heat = np.asarray(explanation.heatmap)
    ax.imshow(_overlay(heat), origin="lower", aspect="auto", interpolation="bilinear",
              extent=(explanation.start, explanation.start + len(heat) * FRAME_SECONDS, 0.0, heat.shape[1]))
