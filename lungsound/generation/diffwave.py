"""DiffWave as a mel-conditioned neural vocoder (docs/methods.md section 10).

Kong et al., "DiffWave: A Versatile Diffusion Model for Audio Synthesis", ICLR 2021.
[AFT] Kim et al., "Adversarial Fine-tuning using Generated Respiratory Sound to Address Class Imbalance", NeurIPS 2023
DGM4H workshop, arXiv 2311.06480.

The network predicts the noise ``eps_hat(x_t, t, mel)`` in a noisy waveform ``x_t`` (B, T) at diffusion step ``t``,
given the [AFT] log-mel ``mel`` (B, 80, F) with ``T = 256 F``. With C = 64 residual channels and L = 30 layers:

    step embedding  e(t)[k] = sin(t 10^(4k/63)), e(t)[64 + k] = cos(t 10^(4k/63)), k = 0..63 (a table of the
                    ``noise_steps`` integer steps; a fractional step t + w uses (1 - w) e(t) + w e(t + 1))
                    d = SiLU(W2 SiLU(W1 (e(t) [+ c(y)]) + b1) + b2), W1: 128 -> 512, W2: 512 -> 512
                    (c(y): an optional 128-d class embedding, the layout of the [AFT] code's ``class_condition``)
    mel upsampler   u = LeakyReLU_0.4(ConvT2(LeakyReLU_0.4(ConvT1(mel)))), each ConvTranspose2d(1, 1, [3, 32],
                    stride [1, 16], padding [1, 8]): frequency kept, time x16, twice -> (B, 80, 256 F)
    input           h_0 = ReLU(Conv1x1(x_t))  (B, C, T)
    layer i         y = DilConv_i(h_i + P_i d) + Cond_i(u)
                        DilConv_i: C -> 2C, kernel 3, dilation 2^(i mod 10); P_i: 512 -> C; Cond_i: 80 -> 2C (1x1)
                    g = sigmoid(y[:C]) * tanh(y[C:])  (the first half gates, the second half is the filter)
                    [r, s_i] = Out_i(g)  (Out_i: C -> 2C, 1x1; the first half is the residual, the second the skip)
                    h_{i+1} = (h_i + r) / sqrt(2)
    output          eps_hat = Conv1x1_out(ReLU(Conv1x1_skip(sum_i s_i / sqrt(L))))  (B, 1, T)

Every 1x1 and dilated Conv1d starts from Kaiming-normal weights (DiffWave's init) and the output convolution from
zero weights, so an untrained model predicts a constant (the output bias). Parameter names and shapes follow the public
reference layout (a state dict written by the [AFT] authors' trainer loads with ``strict=True``); the embedding table
is a non-persistent buffer, so it is in neither the state dict nor the parameter count (2,619,971 for the default
config: 128 + 328,704 + 194 + 30 x 76,224 + 4,160 + 65).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from lungsound.documents import Field
from lungsound.errors import LungsoundError

EMBED_DIM, HIDDEN_DIM, UPSAMPLE = 128, 512, 256
# Every size a config may give, wherever it comes from (an experiment file, a vocoder.json, an imported checkpoint's
# params or the shape of its class table): bounded, so that a file cannot ask for terabytes. Dilations are
# 2^(i mod cycle), so the cycle bounds the padding (2^15 samples at most).
SIZE_BOUNDS = {
    "residual_layers": Field(int, 1, 256), "residual_channels": Field(int, 1, 1024),
    "dilation_cycle_length": Field(int, 1, 16), "n_mels": Field(int, 1, 512), "noise_steps": Field(int, 1, 10_000),
    "num_classes": Field(int, 1, 1000, optional=True),
}


@dataclass
class DiffWaveConfig:
    """Sizes of the vocoder; the defaults are [AFT]'s (section 10); each within `SIZE_BOUNDS`."""

    residual_layers: int = 30
    residual_channels: int = 64
    dilation_cycle_length: int = 10
    n_mels: int = 80
    noise_steps: int = 50  # rows of the step-embedding table = number of training steps
    hop_samples: int = 256  # fixed by the two x16 upsampling convolutions
    num_classes: int | None = None  # class conditioning (a class embedding added to the step embedding); off by default

    def __post_init__(self) -> None:
        for name, spec in SIZE_BOUNDS.items():
            problem = spec.problem(getattr(self, name))
            if problem:
                raise LungsoundError(f"DiffWave {name} {problem}")
        if self.hop_samples != UPSAMPLE:
            raise LungsoundError(f"DiffWave hop_samples must be {UPSAMPLE} (the mel upsampler is x16 x16), "
                                 f"got {self.hop_samples!r}")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: Any, path: str | Path | None = None) -> "DiffWaveConfig":
        """A config from a mapping; unknown keys and bad values are one-line errors naming `path`."""
        if not isinstance(data, dict):
            raise LungsoundError(f"the DiffWave config must be a mapping, got {type(data).__name__}", path)
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise LungsoundError(f"unknown DiffWave config keys {unknown} (known: {sorted(known)})", path)
        try:
            return cls(**data)
        except LungsoundError as exc:
            raise LungsoundError(exc.problem, path) from None


def _conv1d(*args: Any, **kwargs: Any) -> nn.Conv1d:
    layer = nn.Conv1d(*args, **kwargs)
    nn.init.kaiming_normal_(layer.weight)
    return layer


def step_table(steps: int) -> torch.Tensor:
    """The (steps, 128) sinusoidal table: row t = [sin(t 10^(4k/63)), cos(t 10^(4k/63))], k = 0..63."""
    t = torch.arange(steps).unsqueeze(1)
    freqs = 10.0 ** (torch.arange(64).unsqueeze(0) * 4.0 / 63.0)
    angles = t * freqs
    return torch.cat([torch.sin(angles), torch.cos(angles)], dim=1)


class StepEmbedding(nn.Module):
    """e(t) (interpolated for fractional t), plus an optional class embedding, through two Linear + SiLU."""

    def __init__(self, steps: int, num_classes: int | None = None):
        super().__init__()
        self.register_buffer("embedding", step_table(steps), persistent=False)
        if num_classes is not None:
            self.class_embedding = nn.Embedding(num_classes, EMBED_DIM)
        self.projection1 = nn.Linear(EMBED_DIM, HIDDEN_DIM)
        self.projection2 = nn.Linear(HIDDEN_DIM, HIDDEN_DIM)

    def lookup(self, step: torch.Tensor) -> torch.Tensor:
        step = step.reshape(-1).to(self.embedding.device)
        last = self.embedding.shape[0] - 1
        if bool((step < 0).any()) or bool((step > last).any()):
            raise ValueError(f"diffusion steps must lie in [0, {last}], got {step.min().item()}..{step.max().item()}")
        if not step.is_floating_point():
            return self.embedding[step.long()]
        low, high = torch.floor(step).long(), torch.ceil(step).long()
        weight = (step - low).to(self.embedding.dtype).unsqueeze(1)
        return self.embedding[low] + (self.embedding[high] - self.embedding[low]) * weight

    def forward(self, step: torch.Tensor, class_label: torch.Tensor | None = None) -> torch.Tensor:
        x = self.lookup(step)
        if class_label is not None:
            if not hasattr(self, "class_embedding"):
                raise ValueError("this DiffWave has no class embedding (num_classes is None) but got class labels")
            x = x + self.class_embedding(class_label.reshape(-1).to(x.device).long())
        return F.silu(self.projection2(F.silu(self.projection1(x))))


class MelUpsampler(nn.Module):
    """(B, n_mels, F) -> (B, n_mels, 256 F): two ConvTranspose2d (time x16 each), each followed by LeakyReLU(0.4)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.ConvTranspose2d(1, 1, [3, 32], stride=[1, 16], padding=[1, 8])
        self.conv2 = nn.ConvTranspose2d(1, 1, [3, 32], stride=[1, 16], padding=[1, 8])

    def forward(self, mel: torch.Tensor) -> torch.Tensor:
        x = F.leaky_relu(self.conv1(mel.unsqueeze(1)), 0.4)
        return F.leaky_relu(self.conv2(x), 0.4).squeeze(1)


class ResidualLayer(nn.Module):
    """One gated WaveNet layer; returns ((h + r) / sqrt(2), skip)."""

    def __init__(self, n_mels: int, channels: int, dilation: int):
        super().__init__()
        self.dilated_conv = _conv1d(channels, 2 * channels, 3, padding=dilation, dilation=dilation)
        self.diffusion_projection = nn.Linear(HIDDEN_DIM, channels)
        self.conditioner_projection = _conv1d(n_mels, 2 * channels, 1)
        self.output_projection = _conv1d(channels, 2 * channels, 1)

    def forward(self, h: torch.Tensor, step: torch.Tensor, cond: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        y = self.dilated_conv(h + self.diffusion_projection(step).unsqueeze(-1)) + self.conditioner_projection(cond)
        gate, signal = y.chunk(2, dim=1)
        residual, skip = self.output_projection(torch.sigmoid(gate) * torch.tanh(signal)).chunk(2, dim=1)
        return (h + residual) * (1.0 / math.sqrt(2.0)), skip


class DiffWave(nn.Module):
    """``model(audio (B, T), diffusion_step (B,), spectrogram (B, n_mels, F), class_label=None) -> eps_hat (B, 1, T)``.

    T must equal 256 F. ``diffusion_step`` may be integer (a table row) or floating (interpolated between rows), of
    shape (B,), (1,) or a scalar (shared by the batch).
    """

    def __init__(self, config: DiffWaveConfig | None = None):
        super().__init__()
        self.config = config = config or DiffWaveConfig()
        channels = config.residual_channels
        self.input_projection = _conv1d(1, channels, 1)
        self.diffusion_embedding = StepEmbedding(config.noise_steps, config.num_classes)
        self.spectrogram_upsampler = MelUpsampler()
        self.residual_layers = nn.ModuleList(
            ResidualLayer(config.n_mels, channels, 2 ** (i % config.dilation_cycle_length))
            for i in range(config.residual_layers))
        self.skip_projection = _conv1d(channels, channels, 1)
        self.output_projection = _conv1d(channels, 1, 1)
        nn.init.zeros_(self.output_projection.weight)

    def forward(self, audio: torch.Tensor, diffusion_step: torch.Tensor | float | int, spectrogram: torch.Tensor,
                class_label: torch.Tensor | None = None) -> torch.Tensor:
        if audio.dim() != 2 or spectrogram.dim() != 3 or spectrogram.shape[1] != self.config.n_mels:
            raise ValueError(f"DiffWave needs audio (B, T) and a mel (B, {self.config.n_mels}, F), got "
                             f"{tuple(audio.shape)} and {tuple(spectrogram.shape)}")
        if audio.shape[-1] != spectrogram.shape[-1] * UPSAMPLE or audio.shape[0] != spectrogram.shape[0]:
            raise ValueError(f"DiffWave needs T = {UPSAMPLE} x F samples per mel, got audio {tuple(audio.shape)} "
                             f"for a mel {tuple(spectrogram.shape)}")
        if not isinstance(diffusion_step, torch.Tensor):
            diffusion_step = torch.tensor(diffusion_step)
        steps = self.diffusion_embedding(diffusion_step, class_label)
        cond = self.spectrogram_upsampler(spectrogram)
        h = F.relu(self.input_projection(audio.unsqueeze(1)))
        skip = None
        for layer in self.residual_layers:
            h, s = layer(h, steps, cond)
            skip = s if skip is None else skip + s
        h = F.relu(self.skip_projection(skip * (1.0 / math.sqrt(len(self.residual_layers)))))
        return self.output_projection(h)


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
