"""Segmenting a recording (sliding windows, breath detection, span regularisation) and the recording-level summary rule
of `lungsound.inference`: pure functions, checked on hand-made signals and on the real ICBHI annotations."""

from __future__ import annotations

import numpy as np
import pytest

from lungsound.data.annotations import read_annotation
from lungsound.errors import LungsoundError
from lungsound.inference import (Segment, breath_envelope, breath_period, detect_breath_cycles, regularize,
                                 sliding_windows, summarize)

SR = 16000
CLASSES = ("normal", "crackle", "wheeze", "both")


def breathing(period: float = 3.0, duration: float = 21.0, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Noise shaped like breathing: a loud inspiration, a softer expiration after a short dip, then a quiet pause.

    Returns (signal at 16 kHz, true cycle boundaries = the middles of the pauses).
    """
    rng = np.random.default_rng(seed)
    t = np.arange(int(duration * SR)) / SR
    phase = (t % period) / period
    env = np.full_like(t, 0.02)
    insp = phase < 0.4
    env[insp] = np.maximum(env[insp], np.sin(np.pi * phase[insp] / 0.4) ** 2)
    exp = (phase >= 0.42) & (phase < 0.8)
    env[exp] = np.maximum(env[exp], 0.5 * np.sin(np.pi * (phase[exp] - 0.42) / 0.38) ** 2)
    x = 0.2 * env * rng.standard_normal(len(t))
    truth = np.arange(0, duration, period) + 0.9 * period
    return x.astype(np.float32), truth[truth < duration - 0.5]



# ---------------------------------------------------------------------------------------------------------------------
# Segmentation
# ---------------------------------------------------------------------------------------------------------------------


def test_sliding_windows_cover_and_end_at_the_end():
    assert sliding_windows(10.0, 4.0) == [(0.0, 4.0), (2.0, 6.0), (4.0, 8.0), (6.0, 10.0)]
    assert sliding_windows(9.0, 4.0, hop=4.0) == [(0.0, 4.0), (4.0, 8.0), (5.0, 9.0)]
    assert sliding_windows(3.0, 4.0) == [(0.0, 3.0)]
    with pytest.raises(LungsoundError, match="hop"):
        sliding_windows(10.0, 4.0, hop=5.0)


def test_regularize_merges_short_and_splits_long_spans():
    spans = [(0.0, 0.4), (0.4, 3.0), (3.0, 3.5), (3.5, 6.0), (6.0, 24.0)]
    out = regularize(spans, min_len=1.0, max_len=8.0)
    assert out == [(0.0, 3.0), (3.0, 6.0), (6.0, 12.0), (12.0, 18.0), (18.0, 24.0)]


@pytest.mark.parametrize("period", [2.5, 3.0, 4.5])
def test_breath_detection_finds_known_cycle_boundaries(period):
    x, truth = breathing(period=period, duration=22.0, seed=int(period * 10))
    assert breath_period(breath_envelope(x, SR)) == pytest.approx(period, abs=0.15)
    spans = detect_breath_cycles(x, SR)
    inner = np.array([a for a, _ in spans[1:]])
    assert len(inner) == len(truth), (inner, truth)
    assert np.max(np.abs(inner - truth)) < 0.3
    assert spans[0][0] == 0.0 and spans[-1][1] == pytest.approx(22.0)


def test_breath_detection_gives_up_without_a_rhythm():
    rng = np.random.default_rng(1)
    steady = 0.1 * rng.standard_normal(15 * SR).astype(np.float32)
    tone = 0.3 * np.sin(2 * np.pi * 300 * np.arange(15 * SR) / SR).astype(np.float32)
    assert detect_breath_cycles(steady, SR) == []
    assert detect_breath_cycles(tone, SR) == []


def test_breath_detection_agrees_with_icbhi_annotations(icbhi_dir):
    """Detected cycles within the annotated stretch vs annotated cycles, on every real recording with audio."""
    wavs = sorted((icbhi_dir / "audio_and_txt_files").glob("*.wav"))
    if not wavs:
        pytest.skip("no ICBHI audio in ../shared/data/icbhi/audio_and_txt_files")
    from lungsound.audio import load_audio

    ratios = []
    for wav in wavs:
        x, _ = load_audio(wav, SR)
        cycles = read_annotation(wav.with_suffix(".txt"))
        spans = detect_breath_cycles(x, SR)
        inside = sum(1 for a, b in spans if cycles[0].start <= (a + b) / 2 <= cycles[-1].end)
        ratios.append(inside / len(cycles))
    ratios = np.array(ratios)
    within = np.mean((ratios >= 0.5) & (ratios <= 2.0))
    print(f"breath detection vs annotation on {len(wavs)} recordings: median count ratio {np.median(ratios):.2f}, "
          f"within a factor 2: {100 * within:.0f}%")
    assert within >= 0.8
    assert 0.7 <= np.median(ratios) <= 1.4


# ---------------------------------------------------------------------------------------------------------------------
# Summary rule
# ---------------------------------------------------------------------------------------------------------------------


def _segs(rows):
    return [Segment(2.0 * i, 2.0 * i + 2.0, dict(zip(CLASSES, r))) for i, r in enumerate(rows)]


def test_summary_rule_crackles_wheezes_both_normal():
    s = summarize(_segs([[0.7, 0.1, 0.1, 0.1], [0.2, 0.5, 0.1, 0.2]]), "breath")
    assert (s["label"], s["crackle_segments"], s["wheeze_segments"]) == ("crackles", 1, 0)
    assert s["probability"] == pytest.approx(0.7)
    assert s["probabilities"]["normal"] == pytest.approx(0.45)
    assert s["text"] == "Crackles detected in 1 of 2 detected breathing cycles (highest confidence 70%, at 2.0-4.0 s)."

    s = summarize(_segs([[0.1, 0.1, 0.2, 0.6], [0.3, 0.0, 0.6, 0.1], [0.9, 0.05, 0.05, 0.0]]), "cycles")
    assert (s["label"], s["crackle_segments"], s["wheeze_segments"]) == ("both", 1, 2)
    assert s["probability"] == pytest.approx(0.7)  # min(max crackle 0.7, max wheeze 0.8)
    assert s["text"].startswith("Crackles and wheezes detected: crackles in 1 of 3 annotated breathing cycles")

    s = summarize(_segs([[0.4, 0.3, 0.1, 0.2], [0.8, 0.1, 0.1, 0.0]]), "windows")
    assert (s["label"], s["probability"]) == ("normal", pytest.approx(0.4))  # c = 0.5 is not > 0.5
    assert s["text"] == ("No crackles or wheezes detected in any of the 2 analysis windows "
                         "(least certain: 40% normal, at 0.0-2.0 s).")
