"""The vocoder's diffusion: schedules, fast-step alignment, the training loss, the samplers, the crops (section 10)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from lungsound.errors import LungsoundError
from lungsound.generation import (
    FAST_BETAS, TRAIN_BETAS, DiffWave, DiffWaveConfig, fast_steps, random_crop, reverse_process, sample, training_loss,
)


pytestmark = pytest.mark.usefixtures("one_thread")  # see tests/conftest.py


def cumulative(betas):
    """a_t = prod_{i<=t} (1 - beta_i), by a plain loop."""
    out, level = [], 1.0
    for b in betas:
        level *= 1.0 - b
        out.append(level)
    return out


class Stub(nn.Module):
    """eps_hat = `value` everywhere; records every call's (x, step, mel, class_label)."""

    def __init__(self, value: float = 0.0):
        super().__init__()
        self.value = value
        self.anchor = nn.Parameter(torch.zeros(()))  # puts the stub on a device
        self.calls = []

    def forward(self, x, step, mel, class_label=None):
        self.calls.append((x.clone(), step.clone(), mel.clone(), class_label))
        return torch.full((x.shape[0], 1, x.shape[1]), self.value, device=x.device)


def test_schedules():
    assert len(TRAIN_BETAS) == 50 and TRAIN_BETAS[0] == 1e-4 and TRAIN_BETAS[-1] == 0.05
    assert TRAIN_BETAS[1] == pytest.approx(1e-4 + (0.05 - 1e-4) / 49)
    assert list(FAST_BETAS) == [1e-4, 1e-3, 0.01, 0.05, 0.2, 0.5]


def test_fast_steps_by_hand():
    a = cumulative(np.linspace(1e-4, 0.05, 50))
    big_a = cumulative([1e-4, 1e-3, 0.01, 0.05, 0.2, 0.5])
    want = []
    for level in big_a:
        t = max(i for i in range(49) if a[i + 1] <= level <= a[i])
        want.append(t + (math.sqrt(a[t]) - math.sqrt(level)) / (math.sqrt(a[t]) - math.sqrt(a[t + 1])))
    got = fast_steps(TRAIN_BETAS, FAST_BETAS)
    assert got == pytest.approx(want, abs=1e-9)
    # The values themselves: A_0 = a_0 = 0.9999 exactly, so T_0 = 0; the last (A_5 = 0.3758) lands near step 43.
    assert got == pytest.approx([0.0, 0.89413, 4.08665, 10.45182, 22.99249, 42.91864], abs=1e-4)
    assert fast_steps(TRAIN_BETAS, TRAIN_BETAS) == pytest.approx(list(range(50)), abs=1e-9)
    with pytest.raises(LungsoundError, match="outside the training noise levels"):
        fast_steps(TRAIN_BETAS, [1e-4, 0.9])


def test_training_loss_is_l1_between_eps_and_the_prediction():
    batch, frames = 64, 2
    audio = torch.linspace(-0.5, 0.5, frames * 256).repeat(batch, 1)
    mel = torch.rand(batch, 80, frames)
    stub = Stub(0.25)
    loss = training_loss(stub, audio, mel, generator=torch.Generator().manual_seed(3))
    (x_t, t, seen_mel, _), = stub.calls
    assert t.dtype == torch.int64 and 0 <= t.min() and t.max() <= 49 and len(set(t.tolist())) > 20
    assert torch.equal(seen_mel, mel)
    # Documented draw order: t first, then eps.
    g = torch.Generator().manual_seed(3)
    assert torch.equal(t, torch.randint(0, 50, (batch,), generator=g))
    eps = torch.randn(audio.shape, generator=g)
    a = torch.tensor(cumulative(TRAIN_BETAS), dtype=torch.float64)[t].unsqueeze(1)
    assert torch.allclose(x_t.double(), a.sqrt() * audio.double() + (1 - a).sqrt() * eps.double(), atol=1e-6)
    assert loss.item() == pytest.approx((eps - 0.25).abs().mean().item(), rel=1e-6)
    assert (eps - 0.25).abs().mean().item() != pytest.approx(eps.abs().mean().item(), rel=1e-2)  # 0.25 matters


def test_one_step_reverse_process_in_closed_form():
    # S = 1, b = 0.19: A_0 = 0.81, x = clamp((x_T - 0.19 / sqrt(0.19) * 0.5) / 0.9) = clamp((x_T - 0.21794) / 0.9).
    stub = Stub(0.5)
    got = reverse_process(stub, torch.zeros(3, 80, 2), [0.19], [7.5], generator=torch.Generator().manual_seed(5))
    x_start = torch.randn((3, 512), generator=torch.Generator().manual_seed(5))
    assert torch.allclose(got, ((x_start - 0.217945) / 0.9).clamp(-1, 1), atol=1e-5)
    assert torch.equal(stub.calls[0][1], torch.tensor([7.5, 7.5, 7.5]))


def test_fast_sampler_with_a_zero_predictor_follows_the_recursion():
    stub, mel = Stub(0.0), torch.rand(2, 80, 3)
    got = sample(stub, mel, "fast", generator=torch.Generator().manual_seed(11))
    assert got.shape == (2, 768)
    # eps_hat = 0: x <- clamp(x / sqrt(1 - b_s) + sigma_s z_s), s = 5..0, sigma_s = sqrt((1 - A_{s-1}) / (1 - A_s) b_s).
    g = torch.Generator().manual_seed(11)
    x = torch.randn((2, 768), generator=g).double()
    big_a = cumulative(FAST_BETAS)
    for s in range(5, -1, -1):
        x = x / math.sqrt(1 - FAST_BETAS[s])
        if s > 0:
            x = x + math.sqrt((1 - big_a[s - 1]) / (1 - big_a[s]) * FAST_BETAS[s]) * torch.randn((2, 768), generator=g)
        x = x.clamp(-1, 1)
    assert torch.allclose(got.double(), x, atol=1e-5)
    steps = [call[1][0].item() for call in stub.calls]
    assert steps == pytest.approx(fast_steps(TRAIN_BETAS, FAST_BETAS)[::-1], abs=1e-5)
    assert all(torch.equal(call[2], mel) for call in stub.calls)


def test_full_sampler_uses_every_training_step_as_an_integer():
    stub = Stub(0.0)
    sample(stub, torch.rand(1, 80, 1), "full", generator=torch.Generator().manual_seed(0))
    assert [call[1].item() for call in stub.calls] == list(range(49, -1, -1))
    assert stub.calls[0][1].dtype == torch.int64
    with pytest.raises(LungsoundError, match="unknown sampling schedule 'slow'"):
        sample(stub, torch.rand(1, 80, 1), "slow")


def test_a_tiny_diffwave_gives_seeded_clips_of_256_f_samples_in_range():
    torch.manual_seed(0)
    model = DiffWave(DiffWaveConfig(residual_layers=2, residual_channels=4))
    torch.nn.init.normal_(model.output_projection.weight, std=1.0)  # not the zero init, so the model matters
    mel = torch.rand(2, 80, 4)
    one = sample(model, mel, generator=torch.Generator().manual_seed(1))
    two = sample(model, mel, generator=torch.Generator().manual_seed(1))
    other = sample(model, mel, generator=torch.Generator().manual_seed(2))
    assert one.shape == (2, 1024) and one.abs().max() <= 1.0
    assert torch.equal(one, two) and not torch.allclose(one, other)
    labelled = DiffWave(DiffWaveConfig(residual_layers=1, residual_channels=4, num_classes=4))
    assert sample(labelled, mel, class_label=torch.tensor([0, 3])).shape == (2, 1024)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_same_seed_same_clip_on_cpu_and_cuda():
    cpu = sample(Stub(0.0), torch.rand(2, 80, 3), generator=torch.Generator().manual_seed(4))
    cuda = sample(Stub(0.0).cuda(), torch.rand(2, 80, 3), generator=torch.Generator().manual_seed(4))
    assert cuda.is_cuda and torch.allclose(cpu, cuda.cpu(), atol=1e-5)


def test_random_crop_keeps_audio_and_mel_aligned():
    audio = torch.arange(64000, dtype=torch.float32)
    mel = torch.arange(251, dtype=torch.float32).repeat(80, 1)  # every frame holds its own index
    g = torch.Generator().manual_seed(0)
    starts = set()
    for _ in range(2000):
        a, m = random_crop(audio, mel, generator=g)
        start = int(m[0, 0])
        starts.add(start)
        assert m.shape == (80, 62) and a.shape == (62 * 256,)
        assert torch.equal(m[0], torch.arange(start, start + 62, dtype=torch.float32))
        want = torch.arange(start * 256, (start + 62) * 256, dtype=torch.float32)
        want[want >= 64000] = 0.0  # the last frame reaches past the recording: zero padding
        assert torch.equal(a, want)
    assert min(starts) == 0 and max(starts) == 251 - 62  # every start in {0..189} is possible


def test_random_crop_pads_a_short_cycle_with_zeros():
    audio, mel = torch.ones(40 * 256 - 100), torch.ones(80, 40)
    a, m = random_crop(audio, mel, generator=torch.Generator().manual_seed(0))
    assert a.shape == (15872,) and m.shape == (80, 62)
    assert a.sum().item() == 40 * 256 - 100 and a[:40 * 256 - 100].min() == 1.0
    assert m[:, :40].min() == 1.0 and m[:, 40:].abs().sum() == 0.0
