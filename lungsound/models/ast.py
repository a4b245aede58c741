"""Audio Spectrogram Transformer backbone on Hugging Face ``transformers.ASTModel``.

AST (Gong et al., Interspeech 2021) as used by [PMCL] Bae et al. 2023 (arXiv 2305.14032), [SGSCL] Kim et al. 2024
(arXiv 2312.09603) and [AFT] Kim et al. 2023 (arXiv 2311.06480); docs/methods.md section 4.

A distilled DeiT ViT over the fbank seen as a one-channel image ``(128 freq x T time)``: a ``Conv2d(1, D, 16x16,
stride fstride x tstride)`` cuts it into ``F x T'`` patches, with

    F  = (num_mel_bins - patch) // fstride + 1      (12 for 128 bins)
    T' = (input_frames - patch) // tstride + 1      (79 for 8 s = 798 frames, 49 for 5 s = 498 frames)

flattened freq-major (token ``f * T' + t``) into ``E`` of shape ``(B, N = F T', D)``. The sequence
``[cls, dist, E] + P`` (``P`` the learned position embeddings) runs through the encoder and a final LayerNorm; the pooled
feature is ``z = (h_cls + h_dist) / 2``. The head is ``LayerNorm(D) + Linear(D, n_classes)``. The AST + SAM recipe
(Isik et al. 2025, docs/methods.md section 14) takes ``pooling="mean"`` instead, ``z`` the mean of all N + 2 output
tokens after the final LayerNorm, and ``head="dropout"``: ``Dropout(head_dropout) + Linear(D, n_classes)``, no LayerNorm.

The forward is the HF module's own (so SDPA attention, its weight layout and its pooling are used unchanged).
``patch_hook`` is attached for the call as a forward hook on ``embeddings.patch_embeddings``, whose output is exactly
``E`` after the patch projection and before the cls/dist tokens and position embeddings are added, which is where
Patch-Mix replaces patches (docs/methods.md section 7). ``transformers``' patch embedding transposes the input
``(B, T, F) -> (B, 1, F, T)`` itself.

Parameters are checked by the registration before anything is built (`BOUNDS`, `lungsound.models.params`): sizes
within `embed_dim` <= 4096, `depth` <= 48, `num_heads` <= 64, `embed_dim` divisible by `num_heads`, the fbank at least
one patch, at most 8,192 patch tokens and 10^9 weights, `drop` in [0, 1).
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn
import transformers

from lungsound.documents import Field
from lungsound.errors import LungsoundError
from lungsound.features.fbank import frames_for_duration, patch_grid
from lungsound.models.ast_weights import load_ast_weights
from lungsound.models.base import FeatureClassifier, PatchHook
from lungsound.models.params import ParamSchema, count_limit, schema_of
from lungsound.models.registry import DEFAULT_SAMPLE_RATE, register_model

SAMPLE_RATE = DEFAULT_SAMPLE_RATE  # the AST's cycles: 16 kHz, as AudioSet's AST (its registrations state it)


@dataclass
class ASTConfig:
    """Size and input geometry of an AST; defaults are the DeiT-base AST of the papers on 8 s clips.

    ``layer_norm_eps`` is 1e-6 as in the timm DeiT the reference code runs (``transformers``' default is 1e-12).
    ``weights`` optionally names pretrained weights for :func:`lungsound.models.ast_weights.load_ast_weights`
    (a Hugging Face id or folder, an ``audioset_10_10_0.4593.pth``-style file, a timm-layout DeiT file, or
    ``timm:<model name>``), adapted with position-embedding layout ``pos_embed`` (``"clean"`` or ``"paper"``).
    """

    embed_dim: int = 768
    depth: int = 12
    num_heads: int = 12
    mlp_ratio: float = 4.0
    input_frames: int = 798
    num_mel_bins: int = 128
    patch: int = 16
    fstride: int = 10
    tstride: int = 10
    num_classes: int = 4
    drop: float = 0.0
    attn_implementation: Literal["sdpa", "eager"] = "sdpa"
    layer_norm_eps: float = 1e-6
    weights: str | None = None
    pos_embed: Literal["clean", "paper"] = "clean"
    strict_weights: bool = True
    pooling: Literal["cls_dist", "mean"] = "cls_dist"
    head: Literal["norm", "dropout"] = "norm"
    head_dropout: float = 0.0

    @property
    def grid(self) -> tuple[int, int]:
        return patch_grid(self.num_mel_bins, self.input_frames, self.patch, self.fstride, self.tstride)

    def to_hf(self) -> transformers.ASTConfig:
        """The equivalent ``transformers.ASTConfig``."""
        if self.embed_dim % self.num_heads:
            raise LungsoundError(f"embed_dim {self.embed_dim} is not divisible by num_heads {self.num_heads}")
        if self.attn_implementation not in ("sdpa", "eager"):
            raise LungsoundError(f"attn_implementation must be 'sdpa' or 'eager', got {self.attn_implementation!r}")
        _ = self.grid  # raises when the fbank is smaller than one patch
        hf = transformers.ASTConfig(
            hidden_size=self.embed_dim,
            num_hidden_layers=self.depth,
            num_attention_heads=self.num_heads,
            intermediate_size=int(self.embed_dim * self.mlp_ratio),
            hidden_dropout_prob=self.drop,
            attention_probs_dropout_prob=self.drop,
            layer_norm_eps=self.layer_norm_eps,
            patch_size=self.patch,
            qkv_bias=True,
            frequency_stride=self.fstride,
            time_stride=self.tstride,
            max_length=self.input_frames,
            num_mel_bins=self.num_mel_bins,
        )
        hf._attn_implementation = self.attn_implementation
        return hf


class AST(FeatureClassifier):
    """AST backbone (``self.backbone``, a ``transformers.ASTModel``) plus the shared classifier head."""

    supports_patch_hook = True

    def __init__(self, config: ASTConfig):
        super().__init__()
        self.config = config
        self.backbone = transformers.ASTModel(config.to_hf())
        self._build_head(config.embed_dim, config.num_classes, norm=config.head == "norm",
                         dropout=config.head_dropout)

    @property
    def grid(self) -> tuple[int, int]:
        """``(F, T')``: frequency rows and time columns of the patch grid."""
        return self.config.grid

    @property
    def num_patches(self) -> int:
        f, t = self.grid
        return f * t

    def forward_features(self, x: torch.Tensor, patch_hook: PatchHook | None = None,
                         output_attentions: bool = False):
        """Pooled feature ``(h_cls + h_dist) / 2`` (``pooling="mean"``: the mean of all output tokens) of shape
        ``(B, D)`` after the final LayerNorm.

        ``patch_hook(E) -> E'`` replaces the patch tokens ``E`` (B, N, D) before the cls/dist tokens and position
        embeddings are added. With ``output_attentions=True`` returns ``(z, attentions)``, attentions a tuple of one
        ``(B, heads, N + 2, N + 2)`` tensor per block (computed with eager attention for that call).
        """
        self._check_input(x, self.config.input_frames, self.config.num_mel_bins)
        handle = None
        if patch_hook is not None:
            handle = self.backbone.embeddings.patch_embeddings.register_forward_hook(_patch_replacer(patch_hook))
        try:
            with _eager_attention(self.backbone.config, output_attentions):
                out = self.backbone(x, output_attentions=output_attentions)
        finally:
            if handle is not None:
                handle.remove()
        z = out.last_hidden_state.mean(dim=1) if self.config.pooling == "mean" else out.pooler_output
        return (z, tuple(out.attentions)) if output_attentions else z


def _patch_replacer(patch_hook: PatchHook):
    """A forward hook on the patch embedding whose output (the patch tokens) becomes ``patch_hook``'s result."""

    def hook(module, inputs, tokens: torch.Tensor) -> torch.Tensor:
        replaced = patch_hook(tokens)
        if not isinstance(replaced, torch.Tensor) or replaced.shape != tokens.shape:
            got = tuple(replaced.shape) if isinstance(replaced, torch.Tensor) else type(replaced).__name__
            raise LungsoundError(f"patch_hook must return patch tokens of shape {tuple(tokens.shape)}, got {got}")
        return replaced

    return hook


@contextmanager
def _eager_attention(hf_config: transformers.ASTConfig, needed: bool):
    """Switch attention to eager inside the block when ``needed`` (SDPA does not return attention maps)."""
    if not needed:
        yield
        return
    saved = hf_config._attn_implementation
    hf_config._attn_implementation = "eager"
    try:
        yield
    finally:
        hf_config._attn_implementation = saved


def build_ast(config: ASTConfig) -> AST:
    """An :class:`AST` from ``config``, with ``config.weights`` loaded when set."""
    model = AST(config)
    if config.weights:
        load_ast_weights(model, config.weights, pos_embed=config.pos_embed, strict=config.strict_weights)
    else:
        init_tokens(model)
    return model


def init_tokens(model: AST, std: float = 0.02) -> None:
    """Random-init the cls, dist and position embeddings (DeiT's truncated normal, std 0.02) for training from scratch.

    transformers starts them at zero, which suits loading a checkpoint but leaves a scratch model with identical
    positions, so it spends its first epochs on a plateau.
    """
    emb = model.backbone.embeddings
    with torch.no_grad():
        for tensor in (emb.cls_token, emb.distillation_token, emb.position_embeddings):
            nn.init.trunc_normal_(tensor, std=std, a=-2 * std, b=2 * std)


TINY = dict(embed_dim=64, depth=2, num_heads=2)
MAX_TOKENS = 8192  # patch tokens: 948 for the papers' 8 s, 5,684 with stride 4; attention grows with their square
MAX_WEIGHTS = 1e9  # AST-base has 86 million
BOUNDS = {
    "embed_dim": Field(int, 1, 4096), "depth": Field(int, 1, 48), "num_heads": Field(int, 1, 64),
    "mlp_ratio": Field(float, 0, 16, low_open=True), "input_frames": Field(int, 1, 100_000),
    "num_mel_bins": Field(int, 1, 1024), "patch": Field(int, 1, 128), "fstride": Field(int, 1, 128),
    "tstride": Field(int, 1, 128), "num_classes": Field(int, 1, 1000), "drop": Field(float, 0, 1, high_open=True),
    "layer_norm_eps": Field(float, 0, 1, low_open=True), "weights": Field(str, optional=True, max_length=4096),
    "head_dropout": Field(float, 0, 1, high_open=True),
}


def _heads_divide(v: dict) -> str | None:
    return None if v["embed_dim"] % v["num_heads"] == 0 else \
        f"embed_dim {v['embed_dim']} is not divisible by num_heads {v['num_heads']}"


def _grid_fits(v: dict) -> str | None:
    if v["num_mel_bins"] < v["patch"] or v["input_frames"] < v["patch"]:
        return (f"an fbank of {v['input_frames']} frames x {v['num_mel_bins']} bins is smaller than one "
                f"{v['patch']}x{v['patch']} patch")
    f, t = patch_grid(v["num_mel_bins"], v["input_frames"], v["patch"], v["fstride"], v["tstride"])
    return None if f * t <= MAX_TOKENS else (f"{f} x {t} = {f * t:,} patch tokens, more than {MAX_TOKENS:,} (raise "
                                             "fstride/tstride or shorten data.duration)")


def _head_dropout_has_a_head(v: dict) -> str | None:
    return None if v["head"] == "dropout" or not v["head_dropout"] else \
        "head_dropout applies to head: dropout (the LayerNorm head has no dropout)"


def _weights_bounded(v: dict) -> str | None:
    """Blocks of 4 D^2 (attention) + 2 D^2 mlp_ratio (MLP) weights, plus the position embeddings and the patch
    projection."""
    d = v["embed_dim"]
    f, t = patch_grid(v["num_mel_bins"], v["input_frames"], v["patch"], v["fstride"], v["tstride"])
    count = int(v["depth"] * (4 + 2 * v["mlp_ratio"]) * d * d + (f * t + 2) * d + v["patch"] ** 2 * d)
    return count_limit("this AST", count, MAX_WEIGHTS)


def _frames(seconds: float) -> dict:
    return {"input_frames": frames_for_duration(seconds)}


def _schema(**defaults) -> ParamSchema:
    return schema_of(ASTConfig, BOUNDS, defaults, derive=_frames, joint=(_heads_divide, _grid_fits, _weights_bounded, _head_dropout_has_a_head))


def _working_bytes(v: dict, seconds: float) -> int:
    """Attention maps (2 per head, N x N over N = patches + 2 tokens) and about 12 activations of width D per token."""
    f, t = patch_grid(v["num_mel_bins"], v["input_frames"], v["patch"], v["fstride"], v["tstride"])
    n = f * t + 2
    return 4 * (2 * v["num_heads"] * n * n + 12 * n * v["embed_dim"])


AST_SPEC = dict(input="fbank", sample_rate=SAMPLE_RATE, explanation="attention-rollout", memory=_working_bytes,
                paper="AST", architecture="Audio Spectrogram Transformer (AST)", transformer=True)


@register_model("ast", params=_schema(), **AST_SPEC)
def ast(**config) -> AST:
    """AST of any size; defaults to the papers' DeiT-base (768-dim, 12 blocks, 12 heads) on 8 s clips."""
    return build_ast(ASTConfig(**config))


@register_model("ast_tiny", params=_schema(**TINY), **AST_SPEC)
def ast_tiny(**config) -> AST:
    """A 64-dim, 2-block, 2-head AST for tests and quickstarts (any field can still be overridden)."""
    return build_ast(ASTConfig(**{**TINY, **config}))
