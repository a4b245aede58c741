"""Noise schedules, the training loss and the samplers of the DiffWave vocoder (docs/methods.md section 10).

Kong et al., "DiffWave: A Versatile Diffusion Model for Audio Synthesis", ICLR 2021.
[AFT] Kim et al., "Adversarial Fine-tuning using Generated Respiratory Sound to Address Class Imbalance", NeurIPS 2023
DGM4H workshop, arXiv 2311.06480.

Training (N = 50 steps, beta = linspace(1e-4, 0.05, 50), :data:`TRAIN_BETAS`), with a_t = prod_{i<=t} (1 - beta_i):

    t ~ U{0, ..., N-1} per example,  eps ~ N(0, I),  x_t = sqrt(a_t) x_0 + sqrt(1 - a_t) eps,
    loss = mean |eps - eps_hat(x_t, t, mel)|                                           (L1)

Fast sampling (DiffWave's alignment of a short schedule to the training one; :data:`FAST_BETAS`, S = 6 steps): with
b_s the inference betas, alpha_s = 1 - b_s and A_s = prod_{j<=s} alpha_j, find t with a_{t+1} <= A_s <= a_t and use the
fractional step

    T_s = t + (sqrt(a_t) - sqrt(A_s)) / (sqrt(a_t) - sqrt(a_{t+1}))                    (:func:`fast_steps`)

Reverse process (:func:`sample`): x ~ N(0, I) of 256 F samples; for s = S-1 down to 0

    x = (x - b_s / sqrt(1 - A_s) * eps_hat(x, T_s, mel)) / sqrt(alpha_s)
    if s > 0:  x = x + sigma_s z,  z ~ N(0, I),  sigma_s = sqrt((1 - A_{s-1}) / (1 - A_s) * b_s)
    x = clamp(x, -1, 1)                                                                 (at every step)

The full 50-step sampler is the same with the training betas and T_s = s. All noise is drawn on the CPU from the given
generator (the start noise first, then z for s = S-1, ..., 1) and moved to the model's device, so a seed gives the same
noise on CPU and CUDA.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from lungsound.errors import LungsoundError

TRAIN_BETAS: tuple[float, ...] = tuple(float(b) for b in np.linspace(1e-4, 0.05, 50))
FAST_BETAS: tuple[float, ...] = (1e-4, 1e-3, 0.01, 0.05, 0.2, 0.5)
CROP_FRAMES, HOP = 62, 256


def noise_levels(betas: Sequence[float]) -> np.ndarray:
    """a_t = prod_{i<=t} (1 - beta_i), float64."""
    return np.cumprod(1.0 - np.asarray(betas, dtype=np.float64))


def _device(model: nn.Module, fallback: torch.device) -> torch.device:
    param = next(iter(model.parameters()), None)
    return fallback if param is None else param.device


def _labels(class_label: torch.Tensor | int | None, batch: int, device: torch.device) -> torch.Tensor | None:
    if class_label is None:
        return None
    label = torch.as_tensor(class_label, dtype=torch.long).reshape(-1)
    if label.numel() == 1:
        label = label.expand(batch)
    if label.numel() != batch:
        raise ValueError(f"need one class label or {batch}, got {label.numel()}")
    return label.to(device)


def training_loss(model: nn.Module, audio: torch.Tensor, mel: torch.Tensor, generator: torch.Generator | None = None,
                  class_label: torch.Tensor | None = None) -> torch.Tensor:
    """The L1 noise-prediction loss of one batch: audio (B, T) with T = 256 F, mel (B, 80, F).

    The steps t (B,) are drawn first, then eps (B, T), from `generator` on its own device (the default generator on
    the audio's device when None), and moved to the audio's device.
    """
    batch = audio.shape[0]
    draw_device = generator.device if generator is not None else audio.device
    t = torch.randint(0, len(TRAIN_BETAS), (batch,), generator=generator, device=draw_device).to(audio.device)
    eps = torch.randn(audio.shape, generator=generator, device=draw_device, dtype=audio.dtype).to(audio.device)
    levels = noise_levels(TRAIN_BETAS)  # sqrt(a_t), sqrt(1 - a_t) in float64: 1 - a_0 = 1e-4 loses digits in float32
    signal = torch.as_tensor(np.sqrt(levels), device=audio.device)[t].unsqueeze(1).to(audio.dtype)
    noise = torch.as_tensor(np.sqrt(1.0 - levels), device=audio.device)[t].unsqueeze(1).to(audio.dtype)
    noisy = signal * audio + noise * eps
    labels = _labels(class_label, batch, audio.device)
    eps_hat = model(noisy, t, mel) if labels is None else model(noisy, t, mel, class_label=labels)
    return F.l1_loss(eps_hat.reshape(eps.shape), eps)


def fast_steps(train_betas: Sequence[float], infer_betas: Sequence[float]) -> list[float]:
    """The fractional training steps T_s that DiffWave's alignment gives each inference step (see the module text).

    A_s outside [a_{N-1}, a_0] cannot be aligned and is an error (the reference code silently drops such a step).
    """
    a = noise_levels(train_betas)
    big_a = noise_levels(infer_betas)
    steps = []
    for s, level in enumerate(big_a):
        for t in range(len(a) - 1):
            if a[t + 1] <= level <= a[t]:
                steps.append(t + float((np.sqrt(a[t]) - np.sqrt(level)) / (np.sqrt(a[t]) - np.sqrt(a[t + 1]))))
                break
        else:
            raise LungsoundError(f"inference step {s} (A = {level:.6g}) lies outside the training noise levels "
                                 f"[{a[-1]:.6g}, {a[0]:.6g}]")
    return steps


@torch.no_grad()
def reverse_process(model: nn.Module, mel: torch.Tensor, betas: Sequence[float], steps: Sequence[float] | torch.Tensor,
                    generator: torch.Generator | None = None, progress: bool = False,
                    class_label: torch.Tensor | int | None = None) -> torch.Tensor:
    """The reverse process with inference betas `betas` and model steps `steps` (one per beta); returns (B, 256 F)."""
    if mel.dim() == 2:
        mel = mel.unsqueeze(0)
    if mel.dim() != 3:
        raise ValueError(f"the sampler needs a mel of shape (B, n_mels, F), got {tuple(mel.shape)}")
    if len(betas) != len(steps):
        raise ValueError(f"{len(betas)} betas but {len(steps)} steps")
    device = _device(model, mel.device)
    mel = mel.to(device=device, dtype=torch.float32)
    batch, length = mel.shape[0], mel.shape[-1] * HOP
    beta = np.asarray(betas, dtype=np.float64)
    alpha = 1.0 - beta
    big_a = np.cumprod(alpha)
    steps = torch.as_tensor(steps)
    if steps.is_floating_point():
        steps = steps.float()
    labels = _labels(class_label, batch, device)
    x = torch.randn((batch, length), generator=generator).to(device)
    order = range(len(beta) - 1, -1, -1)
    if progress:
        from tqdm import tqdm

        order = tqdm(order, desc="vocoding", unit="step")
    for s in order:
        step = steps[s].expand(batch).to(device)
        eps_hat = model(x, step, mel) if labels is None else model(x, step, mel, class_label=labels)
        eps_hat = eps_hat.reshape(batch, length)
        x = (x - float(beta[s] / np.sqrt(1.0 - big_a[s])) * eps_hat) / float(np.sqrt(alpha[s]))
        if s > 0:
            sigma = float(np.sqrt((1.0 - big_a[s - 1]) / (1.0 - big_a[s]) * beta[s]))
            x = x + sigma * torch.randn((batch, length), generator=generator).to(device)
        x = x.clamp(-1.0, 1.0)
    return x


def sample(model: nn.Module, mel: torch.Tensor, schedule: str = "fast", generator: torch.Generator | None = None,
           progress: bool = False, class_label: torch.Tensor | int | None = None) -> torch.Tensor:
    """Vocode a batch of mels (B, 80, F) into waveforms (B, 256 F) in [-1, 1] on the model's device.

    ``schedule="fast"``: the 6 [AFT] betas at the aligned fractional steps; ``"full"``: the 50 training betas at
    T_s = s.
    `generator` must be a CPU generator (all noise is drawn on the CPU).
    """
    if generator is not None and generator.device.type != "cpu":
        raise ValueError("sample() draws its noise on the CPU: pass a CPU torch.Generator")
    if schedule == "fast":
        return reverse_process(model, mel, FAST_BETAS, fast_steps(TRAIN_BETAS, FAST_BETAS), generator, progress,
                               class_label)
    if schedule == "full":
        return reverse_process(model, mel, TRAIN_BETAS, torch.arange(len(TRAIN_BETAS)), generator, progress,
                               class_label)
    raise LungsoundError(f"unknown sampling schedule {schedule!r} (use 'fast' or 'full')")


def random_crop(audio: torch.Tensor, mel: torch.Tensor, frames: int = CROP_FRAMES, hop: int = HOP,
                generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """`frames` random consecutive mel frames (80, frames) and the matching samples (frames * hop,), zero-padded.

    The start frame is uniform in {0, ..., F - frames} (0 when the mel is shorter than `frames`); the audio slice is
    ``[start * hop, (start + frames) * hop)``, padded with zeros past the end of the recording (its last mel frame
    reaches half a window beyond the audio), and a short mel is padded with zero (silent) frames.
    """
    if audio.dim() != 1 or mel.dim() != 2:
        raise ValueError(f"random_crop needs audio (T,) and a mel (n_mels, F), got {tuple(audio.shape)} and "
                         f"{tuple(mel.shape)}")
    total = mel.shape[-1]
    start = 0
    if total > frames:
        start = int(torch.randint(0, total - frames + 1, (1,), generator=generator).item())
    mel_crop = mel[:, start:start + frames]
    audio_crop = audio[start * hop:(start + frames) * hop]
    mel_crop = F.pad(mel_crop, (0, frames - mel_crop.shape[-1]))
    audio_crop = F.pad(audio_crop, (0, frames * hop - audio_crop.shape[-1]))
    return audio_crop, mel_crop
