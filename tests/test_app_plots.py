"""The app's plots (app/components.py): frequency ticks on the Kaldi band centres, the displayed spectrogram, and time
axes that line up across the timeline, the waveform, the spectrograms and a waveform model's saliency strip."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("streamlit", reason="streamlit is not installed")

from tests.app_support import load_app_module  # noqa: E402


def test_frequency_ticks_sit_on_the_kaldi_band_centres():
    from torchaudio.compliance.kaldi import get_mel_banks

    ui = load_app_module("components")
    _, centres = get_mel_banks(128, 512, 16000.0, 20.0, 0.0, 100.0, -500.0, 1.0)  # centre frequencies in Hz
    assert np.allclose([ui.mel_band_of(float(f)) for f in centres.ravel()], np.arange(128), atol=1e-3)
    # by hand: m(1000 Hz) = 999.99 mel, m(20 Hz) = 31.75 mel, d = 21.770 mel: (999.99 - 31.75) / 21.770 - 1 = 43.48
    assert abs(ui.mel_band_of(1000.0) - 43.48) < 0.01


def test_display_spectrogram_removes_the_low_band_stripes_of_white_noise():
    """White noise has a smooth spectrum (after the fbank's pre-emphasis, rising with frequency), so each band's energy
    follows its filter weight: the raw Kaldi bands below 300 Hz jump up and down from band to band (second differences
    of several nepers, one band has no weight at all), the displayed ones vary smoothly."""
    ui = load_app_module("components")
    noise = np.random.default_rng(0).standard_normal(16000 * 4).astype(np.float32)
    raw = ui.log_mel(noise)
    shown = ui.display_spectrogram(raw)

    def roughness(spec):  # mean |second difference| of the band means over about 20-300 Hz, in nepers
        return float(np.abs(np.diff(spec[:, :20].mean(axis=0), 2)).mean())

    assert roughness(raw) > 3.0
    assert roughness(shown) < 0.4
    assert shown.shape == raw.shape and np.isfinite(shown).all()


def test_time_axes_of_all_plots_line_up(good_recording, expected):
    """The timeline, the waveform and both spectrogram panels put t = 0 and t = duration at the same pixel columns."""
    ui = load_app_module("components")
    classes = list(expected.segments[0].probabilities)
    figures = [ui.timeline_figure(expected.segments, classes, expected.duration, 0),
               ui.waveform_figure(expected.waveform, 16000, expected.segments, 0),
               ui.spectrogram_figure(ui.log_mel(expected.waveform), expected.segments, 0)]
    extents = []
    for fig in figures:
        ax = fig.axes[0]
        fig.canvas.draw()
        x0, x1 = ax.get_xlim()
        assert x0 == 0.0 and abs(x1 - expected.duration) < 0.02
        extents.append(tuple(np.round(ax.get_position().x0 + [0.0], 4)) + (round(ax.get_position().x1, 4),))
    assert len(set(extents)) == 1, extents


def test_time_saliency_strip_shares_the_zoomed_spectrograms_time_axis(expected):
    """A time explanation is drawn as a strip under the enlarged segment: same x limits and pixel columns, values
    from the heatmap, and no red overlay on the spectrograms."""
    from lungsound.inference import Explanation

    ui = load_app_module("components")
    seg = expected.segments[0]
    frames = 150
    heat = np.linspace(0.0, 1.0, frames)
    ex = Explanation(fbank=ui.log_mel(expected.waveform[int(seg.start * 16000):][:16000 * 2])[:frames],
                     heatmap=heat, method="gradient-x-input", start=seg.start, end=seg.start + 1.5, target="wheeze",
                     kind="time")
    fig = ui.spectrogram_figure(ui.log_mel(expected.waveform), expected.segments, 0, ex)
    fig.canvas.draw()
    whole, zoom, strip = fig.axes
    assert zoom.get_xlim() == strip.get_xlim() == (seg.start, seg.start + frames * 0.01)
    assert strip.get_shared_x_axes().joined(zoom, strip)
    assert round(zoom.get_position().x0, 4) == round(strip.get_position().x0, 4) == round(whole.get_position().x0, 4)
    assert strip.get_position().y1 < zoom.get_position().y0  # under it
    np.testing.assert_allclose(strip.lines[0].get_ydata(), heat)
    assert len(whole.images) == 1 and len(zoom.images) == 1  # the spectrograms only, no overlay
    assert "wheezes" in strip.get_title(loc="left") and "waveform model" in ui.explanation_caption(ex)
