"""Cycle extraction (methods.md section 2) against hand-computed values."""

from __future__ import annotations

import numpy as np
import pytest

from lungsound.data.annotations import Cycle
from lungsound.data.cycles import CycleConfig, cycle_bounds, extract_cycles, fade_recording, fix_length
from lungsound.errors import LungsoundError

# A small rate keeps the arrays readable: L = 16 samples, fades of 160 / 16 = 10 samples.
SMALL = CycleConfig(sample_rate=160, duration=0.1)


def test_config_lengths():
    assert CycleConfig().length == 128_000 and CycleConfig().fade_samples == 1000
    assert CycleConfig(duration=5).length == 80_000
    assert SMALL.length == 16 and SMALL.fade_samples == 10
    with pytest.raises(LungsoundError, match="pad must be one of repeat, zero"):
        CycleConfig(pad="reflect")


def test_recording_fades_are_linear_ramps():
    out = fade_recording(np.ones(5000, dtype=np.float32), CycleConfig())
    assert out[0] == 0.0 and out[-1] == 0.0
    assert out[999] == pytest.approx(1.0) and out[1000] == 1.0 and out[-1001] == 1.0
    assert out[500] == pytest.approx(500 / 999, rel=1e-6)  # linspace(0, 1, 1000)[500]
    assert out[-500] == pytest.approx(1 - 500 / 999, rel=1e-5)  # linspace(1, 0, 1000)[-500]


def test_cycle_bounds_truncate_like_int():
    assert cycle_bounds(0.1234, 0.5, 16000, 100_000) == (1974, 8000)  # int(1974.4)
    assert cycle_bounds(1.005, 2.0, 16000, 100_000) == (16079, 32000)  # 1.005 * 16000 = 16079.999...
    assert cycle_bounds(5.0, 9.0, 16000, 100_000) == (80000, 100_000)  # clipped to the recording


def test_repeat_pad_tiles_crops_and_fades_out():
    seg = np.array([1.0, 2.0, 3.0], dtype=np.float32)
    expected = np.tile(seg, 6)[:16] * np.concatenate([np.ones(6), np.linspace(1, 0, 10)])
    np.testing.assert_allclose(fix_length(seg, SMALL), expected, rtol=1e-6)
    # A cycle of exactly L samples takes the padding branch too: it keeps its samples but gets the fade-out.
    exact = np.arange(1, 17, dtype=np.float32)
    np.testing.assert_allclose(fix_length(exact, SMALL)[:6], exact[:6])
    assert fix_length(exact, SMALL)[-1] == 0.0


def test_zero_pad_centres_and_long_cycles_truncate():
    seg = np.array([1.0, 2.0, 3.0], dtype=np.float32)
    out = fix_length(seg, CycleConfig(sample_rate=160, duration=0.1, pad="zero"))
    assert out.tolist() == [0] * 6 + [1, 2, 3] + [0] * 7  # offset (16 - 3) // 2 = 6
    long = np.arange(40, dtype=np.float32)
    assert fix_length(long, SMALL).tolist() == list(range(16))  # first L samples, no fade


def test_extract_cycles_applies_recording_fade_then_cuts():
    x = np.ones(64, dtype=np.float32)
    cycles = [Cycle(0.0, 0.05, 0, 0), Cycle(0.05, 0.3, 1, 0)]
    out = extract_cycles(x, cycles, SMALL)
    assert out.shape == (2, 16) and out.dtype == np.float32
    ramp = np.linspace(0, 1, 10)
    # cycle 1 = samples [0:8] of the faded recording (the fade-in ramp), tiled twice, then faded out over its last 10
    fade_out = np.concatenate([np.ones(6), np.linspace(1, 0, 10)])
    np.testing.assert_allclose(out[0], np.tile(ramp[:8], 2) * fade_out, rtol=1e-6, atol=1e-7)
    # cycle 2 = samples [8:48], longer than L: the first 16 of them, untouched by padding
    np.testing.assert_allclose(out[1], np.concatenate([ramp[8:], np.ones(14)]), rtol=1e-6)


def test_cycle_beyond_audio_is_an_error():
    with pytest.raises(LungsoundError, match=r"rec.wav: cycle 2 \(1.000-2.000 s\) lies beyond the audio"):
        extract_cycles(np.ones(100, dtype=np.float32), [Cycle(0.0, 0.5, 0, 0), Cycle(1.0, 2.0, 0, 0)], SMALL,
                       source="rec.wav")
