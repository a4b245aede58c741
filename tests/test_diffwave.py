"""DiffWave: the reference parameter layout, the parameter count and a forward pass worked by hand (section 10)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from lungsound.errors import LungsoundError
from lungsound.generation import DiffWave, DiffWaveConfig, count_parameters


pytestmark = pytest.mark.usefixtures("one_thread")  # see tests/conftest.py


def spec_layout() -> dict[str, tuple[int, ...]]:
    """Every state-dict key of the default model and its shape, written from the spec (not read from the model)."""
    keys = {
        "input_projection.weight": (64, 1, 1), "input_projection.bias": (64,),
        "diffusion_embedding.projection1.weight": (512, 128), "diffusion_embedding.projection1.bias": (512,),
        "diffusion_embedding.projection2.weight": (512, 512), "diffusion_embedding.projection2.bias": (512,),
        "spectrogram_upsampler.conv1.weight": (1, 1, 3, 32), "spectrogram_upsampler.conv1.bias": (1,),
        "spectrogram_upsampler.conv2.weight": (1, 1, 3, 32), "spectrogram_upsampler.conv2.bias": (1,),
    }
    for i in range(30):
        keys.update({
            f"residual_layers.{i}.dilated_conv.weight": (128, 64, 3), f"residual_layers.{i}.dilated_conv.bias": (128,),
            f"residual_layers.{i}.diffusion_projection.weight": (64, 512),
            f"residual_layers.{i}.diffusion_projection.bias": (64,),
            f"residual_layers.{i}.conditioner_projection.weight": (128, 80, 1),
            f"residual_layers.{i}.conditioner_projection.bias": (128,),
            f"residual_layers.{i}.output_projection.weight": (128, 64, 1),
            f"residual_layers.{i}.output_projection.bias": (128,),
        })
    keys.update({"skip_projection.weight": (64, 64, 1), "skip_projection.bias": (64,),
                 "output_projection.weight": (1, 64, 1), "output_projection.bias": (1,)})
    return keys


@pytest.fixture(scope="module")
def full_model() -> DiffWave:
    torch.manual_seed(0)
    return DiffWave()


def test_state_dict_has_exactly_the_reference_keys_and_shapes(full_model):
    state = full_model.state_dict()
    assert {k: tuple(v.shape) for k, v in state.items()} == spec_layout()
    assert len(state) == 10 + 30 * 8 + 4 == 254
    # The step table is a buffer, but not a persistent one: it is not in the state dict.
    assert tuple(full_model.diffusion_embedding.embedding.shape) == (50, 128)
    assert "diffusion_embedding.embedding" not in state


def test_parameter_count_is_2619971(full_model):
    # 128 + (66,048 + 262,656) + 2 x 97 + 30 x (24,704 + 32,832 + 10,368 + 8,320) + 4,160 + 65
    assert count_parameters(full_model) == 2_619_971


def test_dilations_init_and_one_short_forward(full_model):
    for i, layer in enumerate(full_model.residual_layers):
        assert layer.dilated_conv.dilation == (2 ** (i % 10),) and layer.dilated_conv.padding == (2 ** (i % 10),)
    # Kaiming-normal 1x1/dilated convs: std sqrt(2 / fan_in) = sqrt(2 / 192) = 0.102 (PyTorch's default would be 0.042).
    assert abs(full_model.residual_layers[0].dilated_conv.weight.std().item() - math.sqrt(2 / 192)) < 0.005
    assert torch.count_nonzero(full_model.output_projection.weight) == 0
    # So the untrained network predicts its output bias everywhere, for any input.
    out = full_model(torch.randn(2, 512), torch.tensor([0, 49]), torch.rand(2, 80, 2))
    assert out.shape == (2, 1, 512)
    assert torch.allclose(out, full_model.output_projection.bias.expand(2, 1, 512))


def test_step_table_and_fractional_steps():
    model = DiffWave(DiffWaveConfig(residual_layers=1, residual_channels=2))
    table = model.diffusion_embedding.embedding
    assert torch.equal(table[0], torch.cat([torch.zeros(64), torch.ones(64)]))
    # Row 3, k = 0 and k = 63: sin/cos of 3 and of 3 x 10^4.
    want = [math.sin(3.0), math.sin(3e4), math.cos(3.0), math.cos(3e4)]
    assert torch.allclose(table[3, [0, 63, 64, 127]], torch.tensor(want), atol=1e-3)
    emb = model.diffusion_embedding
    assert torch.allclose(emb.lookup(torch.tensor([2.25])), 0.75 * table[2] + 0.25 * table[3], atol=1e-6)
    assert torch.equal(emb.lookup(torch.tensor([7.0, 49.0])), table[[7, 49]])
    assert torch.equal(emb.lookup(torch.tensor([7])), table[[7]])
    with pytest.raises(ValueError, match=r"\[0, 49\]"):
        emb.lookup(torch.tensor([49.5]))


def _set(layer, weight, bias):
    with torch.no_grad():
        layer.weight.copy_(torch.as_tensor(weight, dtype=torch.float32).reshape(layer.weight.shape))
        layer.bias.copy_(torch.as_tensor(bias, dtype=torch.float32).reshape(layer.bias.shape))


def test_a_two_layer_one_channel_forward_worked_by_hand():
    model = DiffWave(DiffWaveConfig(residual_layers=2, residual_channels=1, n_mels=1, noise_steps=2,
                                    dilation_cycle_length=2))
    _set(model.input_projection, [1.0], [0.0])                                  # h0 = relu(x)
    _set(model.diffusion_embedding.projection1, torch.zeros(512, 128), torch.zeros(512))
    _set(model.diffusion_embedding.projection2, torch.zeros(512, 512), torch.full((512,), 2.0))  # d = silu(2)
    _set(model.spectrogram_upsampler.conv1, torch.zeros(3, 32), [0.0])
    _set(model.spectrogram_upsampler.conv2, torch.zeros(3, 32), [-1.0])         # cond = leaky_relu(-1, 0.4) = -0.4
    for layer in model.residual_layers:
        _set(layer.diffusion_projection, torch.eye(1, 512) * 0.5, [0.0])        # + 0.5 d
        _set(layer.dilated_conv, [[0, 1, 0], [0, 2, 0]], [0.0, 0.0])           # centre tap: (y, 2y)
        _set(layer.conditioner_projection, [1.0, 0.0], [0.0, 0.0])             # cond into the gate half only
        _set(layer.output_projection, [1.0, 3.0], [0.0, 0.0])                  # residual g, skip 3g
    _set(model.skip_projection, [1.0], [0.0])
    _set(model.output_projection, [1.0], [0.5])

    x = np.linspace(-1.0, 1.0, 256)
    d = 2.0 / (1.0 + math.exp(-2.0))  # silu(2) = 1.76159
    sigmoid = lambda v: 1.0 / (1.0 + np.exp(-v))  # noqa: E731
    h = np.maximum(x, 0.0)
    skips = 0.0
    for _ in range(2):
        y = h + 0.5 * d
        g = sigmoid(y - 0.4) * np.tanh(2.0 * y)  # first half (with the conditioner) gates, second half filters
        h, skips = (h + g) / math.sqrt(2.0), skips + 3.0 * g
    want = np.maximum(skips / math.sqrt(2.0), 0.0) + 0.5

    got = model(torch.tensor(x, dtype=torch.float32)[None], torch.tensor([1]), torch.zeros(1, 1, 1))
    assert got.shape == (1, 1, 256)
    assert np.abs(got[0, 0].detach().numpy() - want).max() < 1e-5
    # By hand at x = -1 (h0 = 0): y1 = 0.8808, g1 = sigmoid(0.4808) tanh(1.7616) = 0.5825, h1 = 0.4119,
    # y2 = 1.2927, g2 = sigmoid(0.8927) tanh(2.5854) = 0.7014, out = 3 (g1 + g2) / sqrt(2) + 0.5 = 3.2237.
    assert abs(got[0, 0, 0].item() - 3.2237) < 1e-3


def test_class_conditioning_adds_a_128d_class_embedding_before_the_projections():
    model = DiffWave(DiffWaveConfig(residual_layers=1, residual_channels=2, num_classes=4))
    assert tuple(model.state_dict()["diffusion_embedding.class_embedding.weight"].shape) == (4, 128)
    emb = model.diffusion_embedding
    step, label = torch.tensor([5, 5]), torch.tensor([0, 3])
    inside = emb.embedding[[5, 5]] + emb.class_embedding.weight[[0, 3]]
    want = torch.nn.functional.silu(emb.projection2(torch.nn.functional.silu(emb.projection1(inside))))
    assert torch.allclose(emb(step, label), want)
    assert not torch.allclose(emb(step, label)[0], emb(step, label)[1])
    with pytest.raises(ValueError, match="no class embedding"):
        DiffWave(DiffWaveConfig(residual_layers=1, residual_channels=2)).diffusion_embedding(step, label)


def test_shapes_and_configs_are_checked():
    model = DiffWave(DiffWaveConfig(residual_layers=1, residual_channels=2))
    with pytest.raises(ValueError, match="T = 256 x F"):
        model(torch.zeros(1, 500), torch.tensor([0]), torch.zeros(1, 80, 2))
    with pytest.raises(LungsoundError, match="hop_samples must be 256"):
        DiffWaveConfig(hop_samples=300)
    with pytest.raises(LungsoundError, match="unknown DiffWave config keys \\['layers'\\]"):
        DiffWaveConfig.from_dict({"layers": 3})
