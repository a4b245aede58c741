"""EfficientAT: MobileNetV3 CNNs trained on AudioSet by knowledge distillation from transformer ensembles.

[EFFAT] Schmid, Koutini, Widmer, "Efficient Large-Scale Audio Tagging via Transformer-to-CNN Knowledge
Distillation", ICASSP 2023 (arXiv 2211.04772; code and checkpoints MIT-licensed); docs/methods.md section 12. Written
here from the paper and that section (MobileNetV3-Large of Howard et al., ICCV 2019, at width multipliers 0.4, 0.5,
1.0, 2.0), in the upstream state-dict layout so the release checkpoints load strictly
(:mod:`lungsound.models.efficientat_weights`).

Input: a 32-kHz waveform batch ``(B, L)``; the model computes its own log-mel spectrogram ``(B, 1, 128, T)``
(:mod:`lungsound.models.efficientat_frontend`, 100 frames per second), so the pipeline feeds it cycles at its
``ModelSpec.sample_rate`` (32 kHz) like a waveform model, and an ONNX export holds the front end too.

Network (channels times the width multiplier w, rounded to a multiple of 8 by ``divisible``):

- ``features.0``: 3x3 convolution, stride 2, 1 -> 16w channels, BatchNorm, Hardswish;
- ``features.1`` .. ``features.15``: inverted residual blocks (``BLOCKS``: kernel, expanded width, output width,
  squeeze-excitation, activation, stride): a 1x1 expansion (absent when the expanded width equals the input width),
  a depthwise kxk convolution, squeeze-excitation ``s = sigmoid(W2 relu(W1 mean_{f,t}(h)))``, ``h <- s h``
  (W1: C -> divisible(C / 4), ``block.2.conc_se_layers.0.fc1/fc2``), a 1x1 projection with BatchNorm and no
  activation, and the identity added when the stride is 1 and the widths agree; ReLU in blocks 1-6, Hardswish after;
- ``features.16``: 1x1 convolution to 6 x the last width (384 for mn04), BatchNorm, Hardswish;
  every BatchNorm with eps 1e-3 and momentum 0.01; total stride 32;
- pooling ``z = mean_{f,t}`` of the last map: ``forward_features`` returns it, ``(B, C)``;
- head (``classifier``): ``Linear(C, H) -> Hardswish -> Dropout(0.2) -> Linear(H, n)``, H = divisible(1280 w)
  (512 for mn04), as upstream, whose AudioSet head has n = 527 (sigmoid, multi-label). Fine-tuning replaces only the
  last layer, as upstream fine-tuning does: ``Linear(H, num_classes)`` drawn from N(0, 0.01) with zero bias, keeping
  the pretrained ``Linear(C, H)``; ``head="linear"`` is a plain ``Linear(C, num_classes)`` instead.

mn04 has 983,599 parameters with the AudioSet head (715,300 with 4 classes). There are no patch tokens, so
``patch_hook`` (Patch-Mix) is refused; ``spectrogram_hook`` maps the log-mel before the network (spectrogram mixup,
:mod:`lungsound.methods.mixup`). The app explains it by Grad-CAM over its own spectrogram (the input of
``global_pool``, a frequency x time map: ``feature_map_axes``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Literal

import torch
from torch import nn

from lungsound.documents import Field
from lungsound.errors import LungsoundError
from lungsound.models.base import FeatureClassifier, PatchHook
from lungsound.models.efficientat_frontend import (FRAMES_PER_SECOND, SAMPLE_RATE, FrontEndConfig, LogMelFrontEnd,
                                                   num_frames)
from lungsound.models.efficientat_weights import RELEASES, load_state, read_state, resolve_weights
from lungsound.models.params import schema_of
from lungsound.models.registry import register_model

AUDIOSET_CLASSES = 527
BN = dict(eps=1e-3, momentum=0.01)
# (kernel, expanded width, output width, squeeze-excitation, activation, stride) of blocks 1-15 at width 1
BLOCKS = (
    (3, 16, 16, False, "relu", 1), (3, 64, 24, False, "relu", 2), (3, 72, 24, False, "relu", 1),
    (5, 72, 40, True, "relu", 2), (5, 120, 40, True, "relu", 1), (5, 120, 40, True, "relu", 1),
    (3, 240, 80, False, "hardswish", 2), (3, 200, 80, False, "hardswish", 1), (3, 184, 80, False, "hardswish", 1),
    (3, 184, 80, False, "hardswish", 1), (3, 480, 112, True, "hardswish", 1), (3, 672, 112, True, "hardswish", 1),
    (5, 672, 160, True, "hardswish", 2), (5, 960, 160, True, "hardswish", 1), (5, 960, 160, True, "hardswish", 1),
)
STEM, HIDDEN = 16, 1280  # stem width and head width at width 1
WIDTHS = {"mn04": 0.4, "mn05": 0.5, "mn10": 1.0, "mn20": 2.0}
ACTIVATIONS = {"relu": nn.ReLU, "hardswish": nn.Hardswish}


def divisible(value: float, divisor: int = 8) -> int:
    """``value`` rounded to the nearest multiple of ``divisor`` (at least ``divisor``), never more than 10% below it."""
    rounded = max(divisor, int(value + divisor / 2) // divisor * divisor)
    return rounded + divisor if rounded < 0.9 * value else rounded


def conv_bn(c_in: int, c_out: int, kernel: int, stride: int = 1, groups: int = 1, act: str | None = None):
    layers = [nn.Conv2d(c_in, c_out, kernel, stride, (kernel - 1) // 2, groups=groups, bias=False),
              nn.BatchNorm2d(c_out, **BN)]
    return nn.Sequential(*layers, *([ACTIVATIONS[act]()] if act else []))


class SqueezeExcitation(nn.Module):
    """``h * sigmoid(fc2(relu(fc1(mean over frequency and time of h))))``: a sigmoid gate, where torchvision's
    MobileNetV3 has a hard sigmoid (with the hard sigmoid the golden values of ``../shared/models/README.md`` are
    missed by up to 0.2; with the sigmoid all nine agree to 3 decimals)."""

    def __init__(self, channels: int, squeezed: int):
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(channels, squeezed), nn.Linear(squeezed, channels)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        s = torch.sigmoid(self.fc2(torch.relu(self.fc1(h.mean(dim=(2, 3))))))
        return h * s[:, :, None, None]


class ChannelSE(nn.Module):
    """The upstream container of its squeeze-excitation layers (only the channel one here): ``conc_se_layers.0``."""

    def __init__(self, channels: int):
        super().__init__()
        self.conc_se_layers = nn.ModuleList([SqueezeExcitation(channels, divisible(channels / 4))])

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return self.conc_se_layers[0](h)


class InvertedResidual(nn.Module):
    def __init__(self, c_in: int, kernel: int, expanded: int, c_out: int, se: bool, act: str, stride: int):
        super().__init__()
        layers = [conv_bn(c_in, expanded, 1, act=act)] if expanded != c_in else []
        layers.append(conv_bn(expanded, expanded, kernel, stride, groups=expanded, act=act))
        if se:
            layers.append(ChannelSE(expanded))
        layers.append(conv_bn(expanded, c_out, 1))
        self.block = nn.Sequential(*layers)
        self.residual = stride == 1 and c_in == c_out

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        out = self.block(h)
        return out + h if self.residual else out


def build_features(width: float) -> nn.Sequential:
    """``features.0`` .. ``features.16`` at ``width``; the last one's width is ``6 x`` the last block's."""
    c = divisible(STEM * width)
    layers: list[nn.Module] = [conv_bn(1, c, 3, 2, act="hardswish")]
    for kernel, expanded, out, se, act, stride in BLOCKS:
        c_out = divisible(out * width)
        layers.append(InvertedResidual(c, kernel, divisible(expanded * width), c_out, se, act, stride))
        c = c_out
    layers.append(conv_bn(c, 6 * c, 1, act="hardswish"))
    return nn.Sequential(*layers)


@dataclass
class EfficientATConfig:
    """Config keys of every EfficientAT size (the width is the registered name's).

    ``weights``: ``"audioset"`` (the release checkpoint of this width, downloaded once and cached) or a local ``.pt``
    file in the upstream layout; None = random init. ``head``: ``"mlp"`` (the upstream MLP head, last layer replaced)
    or ``"linear"``. ``jitter``: the training-time mel-filter jitter of the upstream training. ``pos_embed`` is
    accepted for the trainer's sake and ignored; ``strict_weights`` fails on a missing, unexpected or mismatched key.
    """

    num_classes: int = 4
    weights: str | None = None
    head: Literal["mlp", "linear"] = "mlp"
    dropout: float = 0.2
    jitter: bool = False
    pos_embed: str | None = None
    strict_weights: bool = True


class EfficientAT(FeatureClassifier):
    """Front end (``front_end``), ``features`` and ``classifier`` (pooling, then the head) of one EfficientAT size."""

    supports_patch_hook = False
    input_type = "waveform"
    feature_map_axes = "frequency-time"  # the Grad-CAM map at global_pool is (C, frequency, time)

    def __init__(self, size: str, config: EfficientATConfig):
        super().__init__()
        if config.num_classes < 1:
            raise LungsoundError(f"num_classes must be at least 1, got {config.num_classes}")
        self.size, self.config, self.width = size, config, WIDTHS[size]
        self.front_end = LogMelFrontEnd(FrontEndConfig(jitter=config.jitter))
        self.features = build_features(self.width)
        self.feature_dim, self.num_classes = self.features[-1][0].out_channels, int(config.num_classes)
        self.hidden = divisible(HIDDEN * self.width)
        pool = [nn.AdaptiveAvgPool2d((1, 1)), nn.Flatten(1)]
        if config.head == "mlp":
            self.classifier = nn.Sequential(*pool, nn.Linear(self.feature_dim, self.hidden), nn.Hardswish(),
                                            nn.Dropout(config.dropout), nn.Linear(self.hidden, self.num_classes))
        else:
            self.classifier = nn.Sequential(*pool, nn.Linear(self.feature_dim, self.num_classes))
        self._init_weights()

    @property
    def global_pool(self) -> nn.Module:
        return self.classifier[0]

    def _init_weights(self) -> None:
        """Random init as MobileNetV3's: Kaiming-normal (fan out) convolutions, BatchNorm 1/0, N(0, 0.01) linears."""
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, 0.0, 0.01)
                nn.init.zeros_(m.bias)

    def replaced_layers(self) -> tuple[str, ...]:
        """State-dict prefixes this model does not take from an AudioSet checkpoint (the layers it replaces)."""
        if self.config.head == "linear":
            return ("classifier.",)
        return () if self.num_classes == AUDIOSET_CLASSES else ("classifier.5.",)

    def spectrogram(self, x: torch.Tensor) -> torch.Tensor:
        """The log-mel ``(B, 1, 128, T)`` of a waveform batch ``(B, L)``."""
        if x.dim() != 2:
            raise LungsoundError(f"{type(self).__name__} expects a 32-kHz waveform batch of shape (B, L), got "
                                 f"{tuple(x.shape)}")
        return self.front_end(x)

    def forward_features(self, x: torch.Tensor, patch_hook: PatchHook | None = None,
                         spectrogram_hook: Callable[[torch.Tensor], torch.Tensor] | None = None) -> torch.Tensor:
        """Pooled ``z`` of shape ``(B, C)``; ``spectrogram_hook`` maps the log-mel ``(B, 1, 128, T)`` first."""
        self._refuse_patch_hook(patch_hook)
        s = self.spectrogram(x)
        if spectrogram_hook is not None:
            s = spectrogram_hook(s)
        return self.classifier[1](self.global_pool(self.features(s)))

    def forward_head(self, z: torch.Tensor) -> torch.Tensor:
        return self.classifier[2:](z)


def build_efficientat(size: str, config: EfficientATConfig) -> EfficientAT:
    """An :class:`EfficientAT` of ``size`` with ``config.weights`` loaded (strictly unless ``strict_weights`` is off)."""
    model = EfficientAT(size, config)
    if config.weights:
        path = resolve_weights(config.weights, size)
        load_state(model, read_state(path), model.replaced_layers(), path, strict=config.strict_weights)
    return model


def audioset_tagger(weights: str) -> Callable[[torch.Tensor], torch.Tensor]:
    """The AudioSet tagger of an upstream checkpoint file (its size read off the file, loaded strictly, in
    evaluation mode): a 32-kHz waveform batch ``(B, L)`` in, the 527 AudioSet logits ``(B, 527)`` out (sigmoid for
    probabilities). ``weights`` may also be a size name (``"mn04"``), meaning the cached or downloaded release."""
    if weights in RELEASES:
        size, path = weights, resolve_weights("audioset", weights)
    else:
        path = resolve_weights(weights, "mn04")
        size = _size_of(read_state(path), path)
    model = build_efficientat(size, EfficientATConfig(num_classes=AUDIOSET_CLASSES, weights=str(path))).eval()

    def tag(x: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode():
            return model(torch.as_tensor(x, dtype=torch.float32))

    tag.model = model  # the module, for whoever needs more than the logits
    return tag


def _size_of(state: dict[str, torch.Tensor], path: Path) -> str:
    """The size whose last convolution has the checkpoint's width (6 x the last block's)."""
    weight = state.get("features.16.0.weight")
    for size, width in WIDTHS.items():
        if weight is not None and weight.shape[0] == 6 * divisible(BLOCKS[-1][2] * width):
            return size
    raise LungsoundError(f"not an EfficientAT checkpoint of a known width ({', '.join(WIDTHS)}): features.16.0.weight "
                         f"is {None if weight is None else tuple(weight.shape)}", path)


PARAMS = schema_of(EfficientATConfig, {"num_classes": Field(int, 1, 1000), "dropout": Field(float, 0, 1, high_open=True),
                                       "weights": Field(str, optional=True, max_length=4096),
                                       "pos_embed": Field(str, optional=True, max_length=20)})
# Activation values of one forward pass per second of audio, by size, 4 bytes each: the outputs of every leaf module
# summed (forward hooks, an 8-s input; mn04 1.37 M, mn05 1.69 M, mn10 3.23 M, mn20 6.46 M per second) plus the STFT's
# 513 complex bins x 100 frames, rounded up. An upper bound: inference frees most of them on the way.
ACTIVATIONS_PER_SECOND = {"mn04": 1.5e6, "mn05": 1.8e6, "mn10": 3.4e6, "mn20": 6.6e6}


def _memory(size: str):
    return lambda v, seconds: int(4 * ACTIVATIONS_PER_SECOND[size] * max(seconds, 0.01))


def _register(size: str) -> None:
    width = WIDTHS[size]

    def factory(**config) -> EfficientAT:
        return build_efficientat(size, EfficientATConfig(**config))

    factory.__doc__ = f"EfficientAT {size} (MobileNetV3, width {width}) on its own 32-kHz log-mel front end."
    register_model(f"efficientat_{size}", params=PARAMS, input="waveform", sample_rate=SAMPLE_RATE,
                   explanation="grad-cam", memory=_memory(size), paper="EFFAT",
                   architecture=f"EfficientAT MobileNetV3 CNN (width {width}, AudioSet-distilled)")(factory)


for _size in WIDTHS:
    _register(_size)

__all__ = ["EfficientAT", "EfficientATConfig", "FRAMES_PER_SECOND", "audioset_tagger", "build_efficientat",
           "divisible", "num_frames"]
