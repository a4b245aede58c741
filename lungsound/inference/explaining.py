"""Applying an explanation method (`lungsound.inference.explain`) to one segment of a prediction (`Predictor.explain`):
the model's heatmap over its padded input, folded back onto the segment's own audio.

The method is the model's own (`ModelSpec.explanation`); what it explains over (`METHODS[method].over`) says how the
map is folded: per fbank frame and band, or per sample of the waveform.

The model sees the segment cut and padded to its fixed length L (docs/methods.md section 2): truncated to its first L
samples when longer, tiled (`repeat`, with a fade-out) or centred in zeros (`zero`) when shorter. The heatmap over that
input is folded back onto the n samples of the segment (the first L of a longer one):

- time-frequency heatmaps (attention rollout, Grad-CAM; `lungsound.inference.explain`) per fbank frame: each input frame's centre
  sample is mapped to the segment's sample it shows (repeat: modulo n; zero: minus the left padding) and each of the
  segment's frames takes the mean of the input frames landing on it (a frame no input frame lands on takes its nearest
  neighbour's), then min-max normalised;
- time saliencies (gradient x input of a waveform model) per sample: each of the segment's samples takes the mean of
  |x_i dy/dx_i| over its copies in the input, the result is summed per 10-ms frame [s k, s k + s) (s = 160 samples
  at 16 kHz) for the frames of the display fbank, then min-max normalised.

A waveform model with a front end of its own (EfficientAT: 10-ms frames, centred) explained by Grad-CAM gives a map
over its own frames, folded like an fbank map with the display fbank's frame geometry (its frame centres lie 12.5 ms
from the display's, far below the map's resolution of 32 frames).

The display spectrogram is the Kaldi fbank of the segment's own audio (the first L samples, padded to one 25-ms frame
when shorter), computed the same way for every model (a waveform model's display uses the default `FbankConfig` at
the model's sample rate).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from lungsound.data.cycles import CycleConfig
from lungsound.data.labels import CLASSES
from lungsound.features.fbank import FbankConfig, kaldi_fbank, num_frames
from lungsound.inference.explain import METHODS, explain_input, frame_sums, gradient_x_input, normalize01
from lungsound.inference.result import Explanation


def explain_segment(model: nn.Module, x: torch.Tensor, piece: np.ndarray, start: float, cycle_cfg: CycleConfig,
                    fbank_cfg: FbankConfig | None, target: int, method: str) -> Explanation:
    """The `Explanation` of one segment by `method` (a key of `METHODS`): `x` is the model's input for it (fbank
    (T, 128), or waveform (L,) when `fbank_cfg` is None), `piece` the segment's own faded samples, `start` its start
    in seconds, `target` the class."""
    display = fbank_cfg if fbank_cfg is not None else FbankConfig(sample_rate=cycle_cfg.sample_rate)
    shown = min(len(piece), cycle_cfg.length)
    one_frame = int(display.sample_rate * display.frame_length_ms / 1000)
    audio = np.pad(piece[:shown], (0, max(0, one_frame - shown)))  # a very short cycle still gets one frame
    fbank = kaldi_fbank(audio, display).numpy()
    kind = METHODS[method].over
    if kind == "time":
        relevance, target = gradient_x_input(model, x, target)
        shift = int(display.sample_rate * display.frame_shift_ms / 1000)
        heat = normalize01(frame_sums(fold_samples(relevance, len(piece), cycle_cfg), shift, len(fbank)))
    else:
        heat, method, explained = explain_input(model, x, target, method)
        target = explained if explained is not None else target
        heat = fold_frames(heat, len(piece), cycle_cfg, display)[:len(fbank)]
    return Explanation(fbank=fbank, heatmap=heat, method=method, start=start,
                       end=start + shown / cycle_cfg.sample_rate, target=CLASSES[target], kind=kind)


def fold_samples(relevance: np.ndarray, n: int, cycle_cfg: CycleConfig) -> np.ndarray:
    """Map a per-sample relevance over the padded model input (L,) onto the segment's own min(n, L) samples: the mean
    over each sample's copies (see the module docstring)."""
    relevance = np.asarray(relevance, dtype=np.float64)
    length = len(relevance)
    shown = min(n, length)
    idx = np.arange(length)
    if n >= length:
        pos = idx
    elif cycle_cfg.pad == "repeat":
        pos = idx % n
    else:
        pos = idx - (length - n) // 2
    keep = (pos >= 0) & (pos < shown)
    total = np.bincount(pos[keep], weights=relevance[keep], minlength=shown)
    count = np.bincount(pos[keep], minlength=shown)
    return total / np.maximum(count, 1)


def fold_frames(heat: np.ndarray, n: int, cycle_cfg: CycleConfig, fbank_cfg: FbankConfig) -> np.ndarray:
    """Map a heatmap over the padded model input (frames x bins) onto the frames of the segment's own n samples."""
    shift = int(fbank_cfg.sample_rate * fbank_cfg.frame_shift_ms / 1000)
    half = int(fbank_cfg.sample_rate * fbank_cfg.frame_length_ms / 1000) // 2
    shown = min(n, cycle_cfg.length)
    frames = max(1, num_frames(shown, fbank_cfg))
    centres = np.arange(len(heat)) * shift + half  # sample at the centre of each input frame
    if n >= cycle_cfg.length:
        pos = centres
    elif cycle_cfg.pad == "repeat":
        pos = centres % n
    else:
        pos = centres - (cycle_cfg.length - n) // 2
    keep = (pos >= 0) & (pos < shown)
    target = np.clip(np.rint((pos[keep] - half) / shift).astype(int), 0, frames - 1)
    total = np.zeros((frames, heat.shape[1]))
    count = np.zeros(frames)
    np.add.at(total, target, heat[keep])
    np.add.at(count, target, 1)
    hit = np.flatnonzero(count)
    if len(hit) == 0:
        return np.zeros((frames, heat.shape[1]), dtype=np.float32)
    nearest = hit[np.abs(hit[None, :] - np.arange(frames)[:, None]).argmin(axis=1)]
    return normalize01(total[nearest] / count[nearest][:, None])
