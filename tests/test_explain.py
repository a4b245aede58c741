"""Attention rollout, Grad-CAM and the gradient x input time saliency against hand-computed values and toy models with
a known answer."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from lungsound.errors import LungsoundError
from lungsound.inference.explain import (attention_rollout, explain_input, explanation_method, frame_sums, grad_cam,
                               gradient_x_input, normalize01, patch_relevance, patches_to_fbank, rollout,
                               waveform_saliency)
from lungsound.models import create_model, frames_for_duration


def test_rollout_matches_a_hand_computation():
    # Block 1: head 1 sends token 0 half to itself and half to token 1, head 2 is the identity.
    a1 = np.stack([[[0.5, 0.5, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]], np.eye(3)])
    # Block 2: both heads send token 0 entirely to token 2; other tokens attend to themselves.
    a2 = np.stack([[[0.0, 0.0, 1.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]]] * 2)
    # Ahat_1 = rownorm(mean + I): row 0 = [1.75, 0.25, 0] / 2; Ahat_2 row 0 = [1, 0, 1] / 2.
    # R = Ahat_2 Ahat_1: row 0 = 0.5 * [0.875, 0.125, 0] + 0.5 * [0, 0, 1] = [0.4375, 0.0625, 0.5].
    joint = rollout([torch.tensor(a1[None]), a2])
    np.testing.assert_allclose(joint[0], [0.4375, 0.0625, 0.5])
    np.testing.assert_allclose(joint[1:], np.eye(3)[1:])
    np.testing.assert_allclose(joint.sum(axis=1), 1.0)
    np.testing.assert_allclose(patch_relevance(joint, n_prefix=1), [0.0625, 0.5])


def test_rollout_of_identity_attention_is_identity():
    np.testing.assert_allclose(rollout([np.stack([np.eye(5)] * 3)] * 4), np.eye(5))
    with pytest.raises(LungsoundError, match="one input at a time"):
        rollout([np.ones((2, 1, 3, 3))])


def test_patches_to_fbank_averages_overlapping_patches():
    grid = np.array([[1.0, 2.0], [3.0, 4.0]])  # (freq, time) patches of 16 with stride 10 over a 26 x 26 fbank
    heat = patches_to_fbank(grid, frames=28, mel_bins=27)
    assert heat.shape == (28, 27)  # (frames, mel bins)
    assert heat[0, 0] == 1.0  # frame 0, bin 0: only patch (f=0, t=0)
    assert heat[12, 0] == 1.5  # frame 12, bin 0: patches (0, 0) and (0, 1)
    assert heat[0, 12] == 2.0  # bin 12, frame 0: patches (0, 0) and (1, 0)
    assert heat[12, 12] == 2.5  # all four
    assert heat[25, 25] == 4.0 and heat[27, 26] == 4.0  # edge cells nobody covers take the nearest value


def test_normalize01():
    np.testing.assert_allclose(normalize01(np.array([2.0, 4.0, 3.0])), [0.0, 1.0, 0.5])
    assert not normalize01(np.full((3, 3), 7.0)).any()


def test_attention_rollout_of_a_tiny_ast():
    torch.manual_seed(0)
    frames = frames_for_duration(2.0)
    model = create_model("ast_tiny", input_frames=frames).eval()
    x = torch.randn(frames, 128)
    heat = attention_rollout(model, x)
    assert heat.shape == (frames, 128) and heat.min() == 0.0 and heat.max() == 1.0
    # Same as the pure functions applied to the model's own attention maps.
    _, attentions = model.forward_features(x[None], output_attentions=True)
    grid = patch_relevance(rollout(attentions)).reshape(model.grid)
    np.testing.assert_allclose(heat, normalize01(patches_to_fbank(grid, frames)), atol=1e-6)
    assert explain_input(model, x)[1] == "attention-rollout"


class RegionModel(nn.Module):
    """A toy CNN whose class-1 score is the mean of relu(x) over frames 40-59 and bins 80-99 only."""

    def __init__(self):
        super().__init__()
        self.backbone = nn.Module()
        self.backbone.conv = nn.Conv2d(1, 1, 1, bias=False)
        nn.init.ones_(self.backbone.conv.weight)
        self.backbone.global_pool = nn.AdaptiveAvgPool2d(1)
        mask = torch.zeros(1, 1, 100, 128)
        mask[..., 40:60, 80:100] = 1.0
        self.register_buffer("mask", mask)

    def forward(self, x):
        fmap = torch.relu(self.backbone.conv(x[:, None])) * self.mask
        pooled = self.backbone.global_pool(fmap).flatten(1)
        return torch.cat([-pooled, pooled * 100], dim=1)


def test_grad_cam_highlights_the_region_the_model_depends_on():
    x = 1.0 + 0.1 * torch.rand(100, 128)
    heat, target = grad_cam(RegionModel(), x)
    assert target == 1 and heat.shape == (100, 128)
    assert heat[40:60, 80:100].min() > 0.8
    outside = np.ones_like(heat, dtype=bool)
    outside[38:62, 78:102] = False  # allow bilinear spill-over of one cell
    assert heat[outside].max() == 0.0
    # For class 0 the gradient is negative where the features are: ReLU leaves nothing.
    assert grad_cam(RegionModel(), x, target=0)[0].max() == 0.0


def test_grad_cam_on_a_timm_cnn_and_dispatch():
    torch.manual_seed(0)
    model = create_model("resnet18").eval()
    x = torch.randn(198, 128)
    heat, method, target = explain_input(model, x)
    assert method == "grad-cam" and heat.shape == (198, 128)
    assert 0.0 <= heat.min() and heat.max() <= 1.0
    with torch.no_grad():
        assert target == int(model(x[None]).argmax())
    assert all(p.grad is None for p in model.parameters())
    with pytest.raises(LungsoundError, match="no explanation method"):
        explain_input(nn.Linear(128, 4), x)


# ---------------------------------------------------------------------------------------------------------------------
# Time saliency of waveform models (gradient x input)
# ---------------------------------------------------------------------------------------------------------------------


class SpanModel(nn.Module):
    """A toy waveform model whose class-1 logit is sum_i w_i x_i over samples 1600-3199 only (frames 10-19 of 160):
    w = 1 on samples 1600-2399 (frames 10-14) and 2 on samples 2400-3199 (frames 15-19); class 0 is its negative."""

    input_type = "waveform"

    def __init__(self):
        super().__init__()
        w = torch.zeros(8000)
        w[1600:2400], w[2400:3200] = 1.0, 2.0
        self.register_buffer("w", w)
        self.scale = nn.Parameter(torch.ones(()))

    def forward(self, x):
        s = self.scale * (x * self.w).sum(dim=1)
        return torch.stack([-s, s], dim=1)


def test_frame_sums_by_hand():
    np.testing.assert_allclose(frame_sums(np.array([1.0, 2, 3, 4, 5]), 2), [3, 7, 5])  # last frame partial
    np.testing.assert_allclose(frame_sums(np.array([1.0, 2, 3, 4, 5]), 2, n_frames=2), [3, 7])
    np.testing.assert_allclose(frame_sums(np.array([1.0, 2, 3, 4, 5]), 2, n_frames=4), [3, 7, 5, 0])
    assert frame_sums(np.ones(320)).tolist() == [160.0, 160.0]  # 10-ms frames of 160 samples by default


def test_time_saliency_of_a_linear_model_is_its_weights_times_the_input_per_frame():
    model = SpanModel()
    x = torch.full((8000,), 0.5)
    heat, target = waveform_saliency(model, x)
    # |x_i w_i| per sample: 0.5 in frames 10-14, 1.0 in 15-19, 0 elsewhere; per frame 80 and 160; normalised 0.5 and 1.
    expected = np.zeros(50)
    expected[10:15], expected[15:20] = 0.5, 1.0
    assert target == 1 and heat.shape == (50,)
    np.testing.assert_allclose(heat, expected, atol=1e-6)
    relevance, _ = gradient_x_input(model, x, target=1)
    assert relevance.shape == (8000,) and relevance[2000] == 0.5 and relevance[3000] == 1.0 and relevance[5000] == 0
    # Class 0 (logit -s) has the opposite gradient: the same absolute relevance.
    heat0, target0 = waveform_saliency(model, x, target=0)
    assert target0 == 0
    np.testing.assert_allclose(heat0, expected, atol=1e-6)
    # A negative input predicts class 0; the map is unchanged, the model's own gradients are left alone.
    assert waveform_saliency(model, -x)[1] == 0
    assert model.scale.grad is None and model.training
    assert explanation_method(model) == "gradient-x-input"
    heat2, method, target2 = explain_input(model, x)
    assert method == "gradient-x-input" and target2 == 1
    np.testing.assert_allclose(heat2, expected, atol=1e-6)


def test_time_saliency_peaks_where_a_nonlinear_model_listens():
    """Class 1 = sum of x^2 over samples 1600-3199: gradient x input is 2 x_i^2 there and 0 elsewhere, on any input."""

    class Energy(nn.Module):
        input_type = "waveform"

        def forward(self, x):
            e = (x[:, 1600:3200] ** 2).sum(dim=1)
            return torch.stack([torch.zeros_like(e), e], dim=1)

    x = torch.from_numpy(np.random.default_rng(0).standard_normal(8000).astype(np.float32))
    heat, target = waveform_saliency(Energy(), x)
    assert target == 1 and heat.argmax() in range(10, 20) and heat.max() == 1.0
    assert heat[10:20].min() > 0.2 and not heat[:10].any() and not heat[20:].any()


def test_time_saliency_of_a_tiny_speech_model_is_zero_where_the_input_is_zero():
    """On a real (random) wav2vec 2.0, noise in samples 8000-15999 of 32000 and zeros elsewhere: x_i dy/dx_i = 0
    wherever x_i = 0, so only frames 50-99 can be salient; the map is in [0, 1] with its maximum there."""
    torch.manual_seed(0)
    model = create_model("wav2vec2_tiny").eval()
    x = torch.zeros(32000)
    x[8000:16000] = torch.from_numpy(0.1 * np.random.default_rng(1).standard_normal(8000).astype(np.float32))
    heat, target = waveform_saliency(model, x)
    assert heat.shape == (200,) and heat.min() == 0.0 and heat.max() == 1.0
    assert not heat[:50].any() and not heat[100:].any() and (heat[50:100] > 0).mean() > 0.9
    with torch.no_grad():
        assert target == int(model(x[None]).argmax())
    assert all(p.grad is None for p in model.parameters())
    heat2, method, _ = explain_input(model, x, target=(target + 1) % 4)
    assert method == "gradient-x-input" and heat2.shape == (200,) and not np.allclose(heat2, heat)
    with pytest.raises(LungsoundError, match="one waveform"):
        waveform_saliency(model, torch.zeros(2, 32000))
    with pytest.raises(LungsoundError, match="target class 7"):
        waveform_saliency(model, x, target=7)
