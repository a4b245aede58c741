"""CNN baselines from timm on the fbank, behind the same contract as the AST.

The fbank ``(B, T, 128)`` is a one-channel image ``(B, 1, T, 128)`` (time rows, frequency columns). The backbone is
``timm.create_model(arch, in_chans=1, pretrained=False, num_classes=0)``, whose output is its globally pooled feature
``z`` of shape ``(B, num_features)``; the head is the shared ``LayerNorm + Linear`` (docs/methods.md section 4). These are
plain from-scratch baselines for the AST of [PMCL] (arXiv 2305.14032), not a method of the papers.
Any clip length works (global pooling). CNNs have no patch tokens, so ``patch_hook`` (Patch-Mix) is refused.
"""

from __future__ import annotations

from dataclasses import dataclass

import timm
import torch

from lungsound.documents import Field
from lungsound.errors import LungsoundError
from lungsound.features.fbank import FbankConfig, num_frames
from lungsound.models.base import FeatureClassifier, PatchHook
from lungsound.models.params import schema_of
from lungsound.models.registry import DEFAULT_SAMPLE_RATE, register_model


@dataclass
class CNNConfig:
    """A timm architecture name, the number of classes, the fbank's frequency bins and the backbone's dropout."""

    arch: str = "resnet18"
    num_classes: int = 4
    num_mel_bins: int = 128
    drop: float = 0.0


class TimmCNN(FeatureClassifier):
    """A timm CNN (``self.backbone``) trained from scratch on the fbank, plus the shared classifier head."""

    supports_patch_hook = False

    def __init__(self, config: CNNConfig):
        super().__init__()
        self.config = config
        try:
            self.backbone = timm.create_model(config.arch, pretrained=False, in_chans=1, num_classes=0,
                                              drop_rate=config.drop)
        except RuntimeError as exc:  # timm: "Unknown model ..."
            raise LungsoundError(f"cannot build timm model {config.arch!r}: {exc}") from exc
        self._build_head(self.backbone.num_features, config.num_classes)

    def forward_features(self, x: torch.Tensor, patch_hook: PatchHook | None = None) -> torch.Tensor:
        self._refuse_patch_hook(patch_hook)
        self._check_input(x, None, self.config.num_mel_bins)
        return self.backbone(x.unsqueeze(1))


def _known_arch(v: dict) -> str | None:
    return None if timm.is_model(v["arch"]) else f"arch {v['arch']!r} is not a timm model name"


PARAMS = schema_of(CNNConfig, {"arch": Field(str, max_length=200), "num_classes": Field(int, 1, 1000),
                               "num_mel_bins": Field(int, 1, 1024), "drop": Field(float, 0, 1, high_open=True)},
                   joint=(_known_arch,))


CNN_FACTOR = 64  # activation bytes per fbank value in a forward pass, measured on ResNet-18


def _working_bytes(v: dict, seconds: float) -> int:
    frames = num_frames(int(seconds * DEFAULT_SAMPLE_RATE), FbankConfig(sample_rate=DEFAULT_SAMPLE_RATE))
    return CNN_FACTOR * 4 * frames * 128


CNN_SPEC = dict(input="fbank", sample_rate=DEFAULT_SAMPLE_RATE, explanation="grad-cam", memory=_working_bytes)


@register_model("cnn", params=PARAMS, architecture="convolutional network (timm)", **CNN_SPEC)
def cnn(**config) -> TimmCNN:
    """Any timm CNN by ``arch`` (default ResNet-18)."""
    return TimmCNN(CNNConfig(**config))


def _named(arch: str, config: dict) -> TimmCNN:
    if config.get("arch", arch) != arch:
        raise LungsoundError(f"model {arch!r} fixes arch={arch!r}; use model 'cnn' for arch={config['arch']!r}")
    return TimmCNN(CNNConfig(**{**config, "arch": arch}))


@register_model("resnet18", params=PARAMS, architecture="ResNet (timm)", paper="RESNET", **CNN_SPEC)
def resnet18(**config) -> TimmCNN:
    """ResNet-18 on the one-channel fbank."""
    return _named("resnet18", config)


@register_model("efficientnet_b0", params=PARAMS, architecture="EfficientNet (timm)", paper="EFFICIENTNET",
                **CNN_SPEC)
def efficientnet_b0(**config) -> TimmCNN:
    """EfficientNet-B0 on the one-channel fbank."""
    return _named("efficientnet_b0", config)
