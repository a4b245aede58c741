"""Attention rollout and Grad-CAM against hand-computed values and toy models with a known answer."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from lungsound.errors import LungsoundError
from lungsound.explain import (attention_rollout, explain_input, grad_cam, normalize01, patch_relevance,
                               patches_to_fbank, rollout)
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
