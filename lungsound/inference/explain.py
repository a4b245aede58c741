"""The explanation methods: attention rollout (a transformer over the spectrogram's patches), Grad-CAM (a CNN over the
spectrogram) and a time saliency (gradient x input, a model of the waveform), each on one model input.

`METHODS` names them (the ids a model's registration states as `ModelSpec.explanation`, with what each explains over
and its words for a model card); `explain_input(model, x, target, method)` runs one. Applying them to a segment of a
whole-recording prediction (the padded input folded back onto the segment's own frames) is
`lungsound.inference.explaining`. Without `method`, `explanation_method` tells it from the module itself (an AST, a
waveform model, a CNN with `backbone.global_pool`): for models built by hand, e.g. in tests.

Attention rollout (Abnar & Zuidema, "Quantifying Attention Flow in Transformers", ACL 2020). With A_l the attention
of block l (heads x N x N, N = 2 + F T' tokens: cls, dist, then the patches freq-major, docs/methods.md section 4):

    Abar_l = mean over heads of A_l,      Ahat_l = rownorm(Abar_l + I)   (the residual connection),
    R = Ahat_L Ahat_{L-1} ... Ahat_1      (how much each output token draws on each input token).

The relevance of patch k is the mean of the cls and dist rows, r_k = (R[0, 2 + k] + R[1, 2 + k]) / 2 (the pooled feature
is (h_cls + h_dist) / 2). r is reshaped to the F x T' patch grid; patch (f, t) covers mel bins [10 f, 10 f + 16) and
frames [10 t, 10 t + 16) of the fbank, so the fbank-sized map is the mean of r over the patches covering each cell
(cells no patch covers, the last few bins or frames, take the nearest covered value). Rollout is class-agnostic.

Grad-CAM (Selvaraju et al., ICCV 2017) for a CNN whose last feature map A (C x h x w, before global pooling) gives the
class score y^c: alpha_k = (1 / hw) sum_ij dy^c / dA_kij and L = ReLU(sum_k alpha_k A_k), bilinearly upsampled from
(h, w) = (time, frequency) to the fbank's (T, 128). For timm CNNs A is the input of `backbone.global_pool`. A waveform
model with a spectrogram front end of its own (`model.front_end`, EfficientAT) takes its waveform (L,): A is the input of
its `global_pool`, laid out (C, frequency, time) as its `feature_map_axes` says, and the map is upsampled to its own
spectrogram's (T, n_mels) frames.

Gradient x input time saliency for a waveform model (input x, L samples at its rate; y^c the logit of class c). The
gradient dy^c/dx is the saliency of Simonyan, Vedaldi & Zisserman ("Deep Inside Convolutional Networks: Visualising
Image Classification Models and Saliency Maps", ICLR workshop 2014); multiplied by the input it is "gradient x input"
(Shrikumar et al., "Not Just a Black Box", arXiv 1605.01713, 2016), the first-order share of each sample in y^c:

    r_i = | x_i dy^c/dx_i |,      h_k = sum of r_i over the samples i of frame k = [s k, s k + s)

(frames of s = 10 ms of samples, 160 at 16 kHz: the fbank hop, so h lines up with the spectrogram's frames), then
min-max normalised. The absolute value is needed: the speech models normalise each input to zero mean and unit
variance, so y^c(a x + b) = y^c(x) and by Euler's theorem sum_i x_i dy^c/dx_i = 0 - signed contributions cancel over
the input by construction, and within a frame the signed products of an oscillating waveform cancel too. Gradient x
input rather than occlusion: it costs one forward and one backward pass, where occlusion at 10 ms resolution needs one
forward pass per frame (800 for an 8-s cycle: minutes per segment for a base model on a CPU); and silencing a
10-ms stretch of a waveform puts two steps into it (broadband clicks the convolutional front end reacts to) and
changes the per-cycle normalisation of all other samples, so an occlusion map mixes those artefacts into the answer.
Its limits: it is a local, first-order view (a saturated model can depend on a sample with a small gradient), and
sample gradients are noisy (summing per frame smooths them).

Every heatmap is min-max normalised to [0, 1] (all zeros when constant).
"""

from __future__ import annotations

from typing import NamedTuple, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from lungsound.errors import LungsoundError

FRAME_SAMPLES = 160  # 10 ms at 16 kHz: the fbank frame shift (a waveform saliency's default frame)


class Method(NamedTuple):
    over: str  # what is explained over: "time-frequency" (a (T, F) map over the fbank) or "time" (one value per frame)
    words: str  # for a model card


METHODS = {
    "attention-rollout": Method("time-frequency", "attention rollout over the spectrogram (Abnar & Zuidema, 2020)"),
    "grad-cam": Method("time-frequency", "Grad-CAM over the spectrogram (Selvaraju et al., 2017)"),
    "gradient-x-input": Method("time", "gradient x input time saliency over the waveform (Simonyan et al., 2014; "
                                       "Shrikumar et al., 2016)"),
}


def rollout(attentions: Sequence[torch.Tensor | np.ndarray]) -> np.ndarray:
    """The joint attention R (N x N) of per-block attentions, each (heads, N, N) or (1, heads, N, N)."""
    if len(attentions) == 0:
        raise LungsoundError("attention rollout needs the attention of at least one block")
    joint = None
    for a in attentions:
        a = a.detach().float().cpu().numpy() if isinstance(a, torch.Tensor) else np.asarray(a, dtype=np.float64)
        if a.ndim == 4:
            if a.shape[0] != 1:
                raise LungsoundError(f"attention rollout explains one input at a time, got a batch of {a.shape[0]}")
            a = a[0]
        if a.ndim != 3 or a.shape[1] != a.shape[2]:
            raise LungsoundError(f"attention must be (heads, N, N), got shape {a.shape}")
        mixed = a.astype(np.float64).mean(axis=0) + np.eye(a.shape[1])
        mixed /= mixed.sum(axis=1, keepdims=True)
        joint = mixed if joint is None else mixed @ joint
    return joint


def patch_relevance(joint: np.ndarray, n_prefix: int = 2) -> np.ndarray:
    """Relevance of each patch token for the pooled prefix tokens: mean of R's first `n_prefix` rows, patch columns."""
    return joint[:n_prefix, n_prefix:].mean(axis=0)


def patches_to_fbank(grid: np.ndarray, frames: int, mel_bins: int = 128, patch: int = 16, fstride: int = 10,
                     tstride: int = 10) -> np.ndarray:
    """Spread an (F, T') patch-grid map over the (frames, mel_bins) fbank, averaging where patches overlap."""
    n_f, n_t = grid.shape
    total = np.zeros((mel_bins, frames))
    count = np.zeros((mel_bins, frames))
    for f in range(n_f):
        for t in range(n_t):
            total[f * fstride:f * fstride + patch, t * tstride:t * tstride + patch] += grid[f, t]
            count[f * fstride:f * fstride + patch, t * tstride:t * tstride + patch] += 1
    covered_f = min(mel_bins, (n_f - 1) * fstride + patch)
    covered_t = min(frames, (n_t - 1) * tstride + patch)
    inner = total[:covered_f, :covered_t] / count[:covered_f, :covered_t]
    full = np.pad(inner, ((0, mel_bins - covered_f), (0, frames - covered_t)), mode="edge")
    return full.T  # (frames, mel_bins)


def normalize01(heat: np.ndarray) -> np.ndarray:
    """Min-max to [0, 1]; a constant map becomes zeros."""
    heat = np.asarray(heat, dtype=np.float64)
    lo, hi = heat.min(), heat.max()
    return np.zeros_like(heat, dtype=np.float32) if hi - lo <= 1e-12 else ((heat - lo) / (hi - lo)).astype(np.float32)


@torch.no_grad()
def attention_rollout(model: nn.Module, x: torch.Tensor) -> np.ndarray:
    """Rollout heatmap (T, 128) in [0, 1] of an AST for one fbank `x` of shape (T, 128) or (1, T, 128)."""
    x = _one(x)
    _, attentions = model.forward_features(x, output_attentions=True)
    cfg = model.config
    relevance = patch_relevance(rollout(attentions), n_prefix=2).reshape(model.grid)  # freq-major tokens
    heat = patches_to_fbank(relevance, x.shape[1], x.shape[2], cfg.patch, cfg.fstride, cfg.tstride)
    return normalize01(heat)


def grad_cam(model: nn.Module, x: torch.Tensor, target: int | None = None,
             layer: nn.Module | None = None) -> tuple[np.ndarray, int]:
    """Grad-CAM heatmap (T, F) in [0, 1] for one fbank `x`, and the class explained (the predicted one by default).

    The feature map is the input of `layer` (default: `model.backbone.global_pool`, the pooling of a timm CNN).
    """
    own = getattr(model, "front_end", None)  # a waveform model computing its own spectrogram (EfficientAT)
    x = _one(x) if own is None else _one_waveform(x)
    size = tuple(x.shape[1:]) if own is None else (own.num_frames(x.shape[1]), own.n_mels)
    layer = layer if layer is not None else _pool_of(model)
    captured: dict[str, torch.Tensor] = {}

    def keep(module, inputs):
        fmap = inputs[0]
        fmap.retain_grad()
        captured["A"] = fmap

    handle = layer.register_forward_pre_hook(keep)
    was_training = model.training
    model.eval()
    try:
        with torch.enable_grad():
            x = x.detach().float().clone().requires_grad_(True)  # keeps a graph even when the weights are frozen
            logits = model(x)
            target = int(logits[0].argmax()) if target is None else int(target)
            if not 0 <= target < logits.shape[1]:
                raise LungsoundError(f"Grad-CAM target class {target} is not one of the {logits.shape[1]} classes")
            model.zero_grad(set_to_none=True)
            logits[0, target].backward()
    finally:
        handle.remove()
        model.zero_grad(set_to_none=True)  # leave no gradients behind in the model
        model.train(was_training)
    fmap = captured.get("A")
    if fmap is None or fmap.dim() != 4 or fmap.grad is None:
        raise LungsoundError("Grad-CAM found no 4-D feature map with a gradient at the chosen layer")
    weights = fmap.grad[0].mean(dim=(1, 2))  # alpha_k
    cam = torch.relu((weights[:, None, None] * fmap[0]).sum(dim=0)).detach()
    if getattr(model, "feature_map_axes", "time-frequency") == "frequency-time":
        cam = cam.T
    cam = F.interpolate(cam[None, None].float(), size=size, mode="bilinear", align_corners=False)[0, 0]
    return normalize01(cam.cpu().numpy()), target


def gradient_x_input(model: nn.Module, x: torch.Tensor, target: int | None = None) -> tuple[np.ndarray, int]:
    """Per-sample relevance |x_i dy/dx_i| (L,) of one waveform `x` (L,) or (1, L) for the logit y of class `target`
    (the predicted one by default), and that class. The model's own gradients are left untouched."""
    x = _one_waveform(x)
    was_training = model.training
    model.eval()
    try:
        with torch.enable_grad():
            x = x.detach().float().clone().requires_grad_(True)
            logits = model(x)
            target = int(logits[0].argmax()) if target is None else int(target)
            if not 0 <= target < logits.shape[1]:
                raise LungsoundError(f"saliency target class {target} is not one of the {logits.shape[1]} classes")
            (grad,) = torch.autograd.grad(logits[0, target], x)  # d y / d x only: no parameter gradients
    finally:
        model.train(was_training)
    return (x.detach() * grad)[0].abs().double().cpu().numpy(), target


def frame_sums(relevance: np.ndarray, frame_samples: int = FRAME_SAMPLES, n_frames: int | None = None) -> np.ndarray:
    """Sum of `relevance` over frames [k f, k f + f) for k < n_frames (default ceil(L / f)); missing samples count 0."""
    relevance = np.asarray(relevance, dtype=np.float64).ravel()
    if frame_samples < 1:
        raise LungsoundError(f"frame_samples must be at least 1, got {frame_samples}")
    n_frames = -(-len(relevance) // frame_samples) if n_frames is None else int(n_frames)
    padded = np.zeros(n_frames * frame_samples)
    used = min(len(relevance), len(padded))
    padded[:used] = relevance[:used]
    return padded.reshape(n_frames, frame_samples).sum(axis=1)


def waveform_saliency(model: nn.Module, x: torch.Tensor, target: int | None = None,
                      frame_samples: int = FRAME_SAMPLES) -> tuple[np.ndarray, int]:
    """Gradient x input time saliency (n_frames,) in [0, 1] of one waveform `x` (L,), with n_frames =
    ceil(L / frame_samples), and the class explained (the predicted one by default); see the module docstring."""
    relevance, target = gradient_x_input(model, x, target)
    return normalize01(frame_sums(relevance, frame_samples)), target


def explanation_method(model: nn.Module) -> str | None:
    """The method `explain_input` uses for `model` (a key of METHODS), or None when there is none."""
    from lungsound.models.ast import AST

    if isinstance(model, AST):
        return "attention-rollout"
    if getattr(model, "input_type", "fbank") == "waveform" and getattr(model, "front_end", None) is None:
        return "gradient-x-input"
    if _pool_of(model, required=False) is not None:
        return "grad-cam"
    return None


def explain_input(model: nn.Module, x: torch.Tensor, target: int | None = None,
                  method: str | None = None) -> tuple[np.ndarray, str, int | None]:
    """(heatmap, method, target class) for one model input by `method` (a key of `METHODS`; None: the module's own,
    `explanation_method`): rollout (T, F) over the fbank `x` (class-agnostic: the target is returned as given),
    Grad-CAM (T, F) over the fbank `x`, gradient x input (n_frames,) over the waveform `x` (L,)."""
    method = explanation_method(model) if method is None else method
    if method == "attention-rollout":
        return attention_rollout(model, x), method, target
    if method == "gradient-x-input":
        heat, target = waveform_saliency(model, x, target)
        return heat, method, target
    if method == "grad-cam":
        heat, target = grad_cam(model, x, target)
        return heat, method, target
    raise LungsoundError(f"no explanation method for a {type(model).__name__}: attention rollout needs an AST, "
                         "Grad-CAM a CNN with backbone.global_pool, a time saliency a waveform model")


def _pool_of(model: nn.Module, required: bool = True) -> nn.Module | None:
    pool = getattr(getattr(model, "backbone", None), "global_pool", None)
    pool = getattr(model, "global_pool", None) if pool is None else pool  # EfficientAT's is its own
    if pool is None and required:
        raise LungsoundError(f"{type(model).__name__} has no backbone.global_pool to take the Grad-CAM feature map "
                             "from; pass layer=")
    return pool


def _one_waveform(x: torch.Tensor) -> torch.Tensor:
    x = torch.as_tensor(x)
    x = x[None] if x.dim() == 1 else x
    if x.dim() != 2 or x.shape[0] != 1:
        raise LungsoundError(f"a waveform model is explained on one waveform (L,) or (1, L), got shape {tuple(x.shape)}")
    return x


def _one(x: torch.Tensor) -> torch.Tensor:
    x = torch.as_tensor(x)
    x = x[None] if x.dim() == 2 else x
    if x.dim() != 3 or x.shape[0] != 1:
        raise LungsoundError(f"explanations take one fbank (T, F) or (1, T, F), got shape {tuple(x.shape)}")
    return x
