"""Waveform gain and noise of the AST + SAM recipe (lungsound.data.wave_augment, docs/methods.md section 14): each with
its probability, deterministic per (seed, epoch, item), featurised after the augmentation, training cycles only."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from lungsound.config import load_config
from lungsound.data.wave_augment import AugmentedWaveforms, WaveAugment
from lungsound.errors import LungsoundError
from lungsound.training.data import build_run_data

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")
WAVE = np.linspace(-0.5, 0.5, 1600, dtype=np.float32)


def test_gain_alone_scales_the_whole_cycle_by_one_factor_in_range():
    augment = WaveAugment(gain=0.1, gain_p=1.0)
    gains = []
    for i in range(200):
        out = augment(WAVE, epoch=1, index=i)
        ratio = out[WAVE != 0] / WAVE[WAVE != 0]
        np.testing.assert_allclose(ratio, ratio[0], rtol=1e-6)  # one factor for the cycle
        gains.append(float(ratio[0]))
    assert 0.9 <= min(gains) < 0.92 and 1.08 < max(gains) <= 1.1  # U(0.9, 1.1)


def test_each_part_is_applied_with_its_probability():
    augment = WaveAugment(gain=0.1, gain_p=0.5, noise=1e-4, noise_p=0.5, seed=3)
    gained = noised = 0
    n = 2000
    for i in range(n):
        out = augment(WAVE, epoch=2, index=i)
        residual = out - WAVE * (out[-1] / WAVE[-1])  # what one gain factor does not explain
        is_noised = np.abs(residual).max() > 1e-6
        noised += is_noised
        gained += not np.isclose(out[-1] / WAVE[-1], 1.0, atol=2e-3)  # the noise moves the last ratio by < 1e-3
        if is_noised and i < 20:
            assert 0.5e-4 < residual.std() < 2e-4  # sigma 1e-4
    assert abs(gained / n - 0.5) < 0.05 and abs(noised / n - 0.5) < 0.05
    assert np.array_equal(WaveAugment(noise=1e-4, noise_p=1.0)(WAVE, 1, 1), WaveAugment(noise=1e-4, noise_p=1.0)(WAVE, 1, 1))
    assert not np.array_equal(WaveAugment(noise=1e-4, noise_p=1.0)(WAVE, 1, 1), WaveAugment(noise=1e-4, noise_p=1.0)(WAVE, 2, 1))
    assert np.array_equal(WaveAugment(gain=0.1, gain_p=0.0, noise=1e-4, noise_p=0.0)(WAVE, 1, 1), WAVE)  # p 0: untouched
    assert not WaveAugment().active and WaveAugment(noise=1e-4).active and not WaveAugment(gain=0.1, gain_p=0.0).active


def test_the_training_split_is_featurised_from_augmented_waveforms_and_validation_is_not(small_icbhi):
    base = [f"data.root={small_icbhi}", "data.duration=2.0", "model.name=ast_tiny", "train.protocol=clean",
            "data.val_fraction=0.25"]
    plain = build_run_data(load_config(None, base), progress=False)
    off = AugmentedWaveforms(build_run_data(load_config(None, [*base, "data.input=waveform", "model.name=wav2vec2_tiny",
                                                                "augment.specaug=false"]), progress=False).train,
                             plain.train.fbank_cfg, WaveAugment())
    assert len(off) == len(plain.train) and np.array_equal(off.labels, plain.train.labels)
    torch.testing.assert_close(off[3].x, plain.train[3].x, rtol=0, atol=1e-4)  # no draw: the cached fbank itself
    data = build_run_data(load_config(None, [*base, "augment.wave_gain=0.1", "augment.wave_gain_p=1.0"]), progress=False)
    assert isinstance(data.train, AugmentedWaveforms) and np.array_equal(data.train.labels, plain.train.labels)
    assert list(data.train.class_counts()) == list(plain.train.class_counts())
    data.train.set_epoch(1)
    first = data.train[3].x
    assert first.shape == plain.train[3].x.shape and not torch.allclose(first, plain.train[3].x, atol=1e-3)
    # A gain g shifts the log-mel fbank by 2 ln g everywhere (normalised: / (2 std)), up to the energy floor.
    shift = (first - plain.train[3].x).flatten()
    median = float(shift.median())
    assert float((abs(shift - median) < 1e-3).float().mean()) > 0.95  # one shift for nearly every bin
    assert 0 < abs(median) <= 2 * np.log(1.1) / (2 * 4.5689974) + 1e-4  # |ln g| <= ln 1.1
    data.train.set_epoch(2)
    assert not torch.equal(data.train[3].x, first)  # a fresh draw each epoch
    assert not isinstance(data.val, AugmentedWaveforms)
    torch.testing.assert_close(data.val[0].x, plain.val[0].x)  # validation and test never augmented


@pytest.mark.parametrize("override,message", [
    ("augment.wave_gain=1.0", "augment.wave_gain must be in [0, 1), got 1.0"),
    ("augment.wave_gain_p=1.5", "augment.wave_gain_p must be in [0, 1], got 1.5"),
    ("augment.wave_noise=-1e-4", "augment.wave_noise must be >= 0, got -0.0001"),
    ("augment.wave_noise_p=-0.5", "augment.wave_noise_p must be in [0, 1], got -0.5"),
])
def test_bad_waveform_augmentation_settings_are_one_line_errors(override, message):
    with pytest.raises(LungsoundError) as info:
        load_config(None, [override])
    assert message in str(info.value) and "\n" not in str(info.value)


def test_waveform_augmentation_with_generated_clips_is_refused():
    with pytest.raises(LungsoundError, match=r"generated clips \(data.generated\) have none to augment"):
        load_config(None, ["augment.wave_noise=1e-4", "data.generated=/tmp/somewhere"])
