"""Pretrained weights for the AST backbone: three loading routes and position-embedding adaptation.

docs/methods.md section 4 ([PMCL] arXiv 2305.14032 and the AST papers building on it). Routes, chosen from the source:

(a) ``hf``: a Hugging Face id or folder in ``transformers.ASTModel`` layout, e.g.
    ``MIT/ast-finetuned-audioset-10-10-0.4593`` (keys optionally under ``audio_spectrogram_transformer.``). Its source
    grid comes from its ``config.json``; its 527-class ``classifier.*`` head is dropped.
(b) ``ast_timm``: the original ``audioset_10_10_0.4593.pth``: timm DeiT keys under ``module.v.`` plus
    ``module.mlp_head.*`` (dropped). Converted to the HF layout (below). Source grid: 12 frequency rows, so 12 x 101.
(c) ``deit``: ImageNet-only DeiT weights in timm layout (no prefix): a state-dict file, a timm ``nn.Module``, or
    ``timm:deit_base_distilled_patch16_384`` (created by ``timm.create_model(..., pretrained=True)``). Source grid:
    square, 24 x 24 for 384 px. timm's ``head`` / ``head_dist`` are dropped.

timm -> HF conversion: ``cls_token``/``dist_token``/``pos_embed`` -> ``embeddings.cls_token``/``distillation_token``/
``position_embeddings``; ``patch_embed.proj`` -> ``embeddings.patch_embeddings.projection``; in block ``i``
``norm1``/``norm2`` -> ``layernorm_before``/``layernorm_after``, the fused ``attn.qkv`` of shape ``(3D, D)`` splits
row-wise into ``query``, ``key``, ``value`` (rows ``[0:D]``, ``[D:2D]``, ``[2D:3D]``), ``attn.proj`` ->
``attention.output.dense``, ``mlp.fc1``/``mlp.fc2`` -> ``intermediate.dense``/``output.dense``; ``norm`` -> ``layernorm``.
A patch projection with 3 input channels (RGB DeiT) becomes one channel, ``W' = sum_c W_c`` by default (what AST and
timm do: a grey image copied to three channels gives the same response) or ``mean_c W_c`` with ``patch_reduce="mean"``.

Every route compares the converted tensors with the model: missing keys, unexpected keys and shape mismatches raise a
:class:`~lungsound.errors.LungsoundError` naming the source and listing the keys, unless ``strict=False`` (then a loud
warning, and only the fitting tensors are loaded). Dropped classifier heads are reported but are not errors.

Position embeddings (:func:`adapt_pos_embed`), from a source grid ``(F0 x T0)`` to ours ``(F1 x T1)``, tokens freq-major:

- ``clean``: fit the time axis, then the frequency axis, each by a centre crop when it shrinks (start ``S // 2 - n // 2``,
  so 101 -> 79 keeps columns 11..89 and token ``(f, t)`` gets source ``(f, t + 11)``) or by bilinear interpolation
  (``align_corners=False``) when it grows. AudioSet 12 x 101 -> 12 x 79 is a pure time crop; ImageNet 24 x 24 -> 12 x 79
  interpolates time 24 -> 79 and crops frequency rows 6..17, as AST does.
- ``paper``: the reference code's quirk: the same fitting but towards the swapped grid ``(T1 x F1)`` (crop time columns
  ``[44:56]`` of 12 x 101 to 12 x 12, interpolate to 79 x 12), flattened row-major, position ``k`` given to token ``k`` of
  the freq-major ``F1 x T1`` layout. Every published AST number on ICBHI used this layout.

A checkpoint whose grid already equals ours (e.g. a model fine-tuned on ICBHI) is copied as is in both layouts.
"""

from __future__ import annotations

import json
import logging
import math
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from lungsound.errors import LungsoundError
from lungsound.features.fbank import patch_grid

log = logging.getLogger(__name__)

Layout = Literal["clean", "paper"]
Grid = tuple[int, int]
PREFIX_TOKENS = 2  # cls + dist
_HEAD_PREFIXES = ("classifier.", "mlp_head.", "head.", "head_dist.")


def adapt_pos_embed(grid_tokens: torch.Tensor, src_grid: Grid, dst_grid: Grid, layout: Layout = "clean") -> torch.Tensor:
    """Adapt grid position embeddings ``(N0, D)`` or ``(B, N0, D)`` from ``src_grid`` to ``dst_grid`` (module docstring)."""
    if layout not in ("clean", "paper"):
        raise LungsoundError(f"pos_embed layout must be 'clean' or 'paper', got {layout!r}")
    (f0, t0), (f1, t1) = src_grid, dst_grid
    tokens = grid_tokens.unsqueeze(0) if grid_tokens.dim() == 2 else grid_tokens
    batch, n0, dim = tokens.shape
    if n0 != f0 * t0:
        raise LungsoundError(f"{n0} position embeddings do not form a {f0} x {t0} grid")
    if (f0, t0) == (f1, t1):
        return grid_tokens.clone()
    rows, cols = (f1, t1) if layout == "clean" else (t1, f1)
    grid = tokens.transpose(1, 2).reshape(batch, dim, f0, t0).float()
    grid = _fit_axis(grid, cols, axis=3)  # time first, then frequency (AST's order)
    grid = _fit_axis(grid, rows, axis=2)
    out = grid.reshape(batch, dim, rows * cols).transpose(1, 2).to(grid_tokens.dtype)
    return out[0] if grid_tokens.dim() == 2 else out


def _fit_axis(grid: torch.Tensor, size: int, axis: int) -> torch.Tensor:
    """Centre-crop ``grid`` (B, D, H, W) along ``axis`` when it shrinks to ``size``, interpolate bilinearly when it grows."""
    current = grid.shape[axis]
    if size == current:
        return grid
    if size < current:
        return grid.narrow(axis, current // 2 - size // 2, size)
    target = [grid.shape[2], grid.shape[3]]
    target[axis - 2] = size
    return F.interpolate(grid, size=tuple(target), mode="bilinear", align_corners=False)


@dataclass
class LoadReport:
    """What a weight load did: keys loaded, dropped (classifier heads), and any missing/unexpected/mismatched."""

    source: str
    route: str
    loaded: list[str] = field(default_factory=list)
    dropped: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    mismatched: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not (self.missing or self.unexpected or self.mismatched)

    def problems(self) -> str:
        parts = [f"{name} keys: {', '.join(keys)}" for name, keys in
                 (("missing", self.missing), ("unexpected", self.unexpected), ("shape-mismatched", self.mismatched))
                 if keys]
        return "; ".join(parts)


def load_ast_weights(model: nn.Module, source: str | Path | nn.Module, *, pos_embed: Layout = "clean",
                     strict: bool = True, src_grid: Grid | None = None,
                     patch_reduce: Literal["sum", "mean"] = "sum") -> LoadReport:
    """Load pretrained weights from ``source`` into an AST (our wrapper or a bare ``transformers.ASTModel``).

    ``src_grid`` overrides the inferred source patch grid. Returns a :class:`LoadReport`; raises on any missing,
    unexpected or shape-mismatched key unless ``strict=False``.
    """
    if pos_embed not in ("clean", "paper"):
        raise LungsoundError(f"pos_embed layout must be 'clean' or 'paper', got {pos_embed!r}")
    if patch_reduce not in ("sum", "mean"):
        raise LungsoundError(f"patch_reduce must be 'sum' or 'mean', got {patch_reduce!r}")
    backbone = getattr(model, "backbone", model)
    name = type(source).__name__ if isinstance(source, nn.Module) else str(source)
    route, raw, hf_config = _read_source(source)
    dropped = sorted(k for k in raw if _strip_prefixes(k).startswith(_HEAD_PREFIXES))
    raw = {k: v for k, v in raw.items() if k not in dropped}
    state = hf_canonical(raw) if route == "hf" else timm_to_hf(raw)
    report = LoadReport(source=name, route=route, dropped=dropped)
    try:
        _adapt_tokens(state, backbone, route, hf_config, src_grid, _model_grid(backbone), pos_embed, patch_reduce,
                      report)
    except LungsoundError as exc:
        raise LungsoundError(f"weights from {name}: {exc}") from exc
    return _apply(backbone, state, report, strict)


# Substring renames from the transformers 4.x ASTModel layout (still the layout of saved checkpoints, e.g.
# MIT/ast-finetuned-audioset-10-10-0.4593) to the 5.x module layout; applied in this order.
_LEGACY_HF = (
    ("encoder.layer.", "layers."),
    ("attention.attention.query.", "attention.q_proj."),
    ("attention.attention.key.", "attention.k_proj."),
    ("attention.attention.value.", "attention.v_proj."),
    ("attention.output.dense.", "attention.o_proj."),
    ("intermediate.dense.", "mlp.fc1."),
    ("output.dense.", "mlp.fc2."),
)


def hf_canonical(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """HF AST keys (prefix ``audio_spectrogram_transformer.`` allowed, 4.x or 5.x layout) in the 5.x layout."""
    return {_canonical_key(k): v for k, v in state.items()}


def _canonical_key(key: str) -> str:
    key = _strip_prefixes(key)
    for old, new in _LEGACY_HF:
        key = key.replace(old, new)
    return key


def timm_to_hf(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """timm DeiT keys (prefix ``module.``/``v.`` allowed) in the HF 5.x AST layout, the fused qkv split in three."""
    out: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        k = _strip_prefixes(key)
        if k in _TIMM_TOP:
            out[_TIMM_TOP[k]] = value
            continue
        parts = k.split(".")
        inner, kind = ".".join(parts[2:-1]), parts[-1]
        if parts[0] != "blocks" or not parts[1].isdigit() or inner not in (*_TIMM_BLOCK, "attn.qkv"):
            out[key] = value  # unknown: reported as unexpected
        elif inner == "attn.qkv":
            for part, chunk in zip(("q_proj", "k_proj", "v_proj"), value.chunk(3, dim=0)):
                out[f"layers.{parts[1]}.attention.{part}.{kind}"] = chunk.clone()
        else:
            out[f"layers.{parts[1]}.{_TIMM_BLOCK[inner]}.{kind}"] = value
    return out


_TIMM_TOP = {"cls_token": "embeddings.cls_token", "dist_token": "embeddings.distillation_token",
             "pos_embed": "embeddings.position_embeddings",
             "patch_embed.proj.weight": "embeddings.patch_embeddings.projection.weight",
             "patch_embed.proj.bias": "embeddings.patch_embeddings.projection.bias",
             "norm.weight": "layernorm.weight", "norm.bias": "layernorm.bias"}
_TIMM_BLOCK = {"norm1": "layernorm_before", "norm2": "layernorm_after", "attn.proj": "attention.o_proj",
               "mlp.fc1": "mlp.fc1", "mlp.fc2": "mlp.fc2"}


def _strip_prefixes(key: str) -> str:
    for prefix in ("module.", "audio_spectrogram_transformer.", "v."):
        if key.startswith(prefix):
            key = key[len(prefix):]
    return key


def _read_source(source: str | Path | nn.Module) -> tuple[str, dict[str, torch.Tensor], dict | None]:
    """Route name, raw state dict and (for HF sources) the source's config.json as a dict."""
    if isinstance(source, nn.Module):
        return "deit", dict(source.state_dict()), None
    text = str(source)
    if text.startswith("timm:"):
        return "deit", _timm_pretrained(text[len("timm:"):]), None
    path = Path(source).expanduser()
    if path.is_dir():
        return "hf", _read_hf_folder(path), _read_json(path / "config.json")
    if path.is_file():
        state = _read_state_file(path)
        return _detect_route(state, path), state, _read_json(path.parent / "config.json")
    if text.count("/") == 1 and not path.suffix:
        folder = _hub_snapshot(text)
        return "hf", _read_hf_folder(folder), _read_json(folder / "config.json")
    raise LungsoundError("no such weights file or folder (nor a Hugging Face id 'org/name' or 'timm:<name>')", path)


def _detect_route(state: dict[str, torch.Tensor], path: Path) -> str:
    keys = list(state)
    if any("embeddings.patch_embeddings" in k for k in keys):
        return "hf"
    if any(k.startswith(("module.v.", "v.")) for k in keys):
        return "ast_timm"
    if any(k.startswith("patch_embed.") for k in keys):
        return "deit"
    raise LungsoundError(f"unrecognised weight layout (first keys: {', '.join(keys[:5])}); expected a transformers "
                         "ASTModel, an AST audioset .pth (module.v.*) or a timm DeiT state dict", path)


def _read_state_file(path: Path) -> dict[str, torch.Tensor]:
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path))
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # corrupt or foreign file
        raise LungsoundError(f"cannot read weights: {exc}", path) from exc
    for wrapper in ("state_dict", "model"):
        if isinstance(state, dict) and isinstance(state.get(wrapper), dict):
            state = state[wrapper]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise LungsoundError("weights file does not hold a state dict of tensors", path)
    return state


def _read_hf_folder(folder: Path) -> dict[str, torch.Tensor]:
    for name in ("model.safetensors", "pytorch_model.bin"):
        if (folder / name).is_file():
            return _read_state_file(folder / name)
    raise LungsoundError("folder has no model.safetensors or pytorch_model.bin", folder)


def _read_json(path: Path) -> dict | None:
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise LungsoundError(f"cannot read config: {exc}", path) from exc


def _hub_snapshot(repo_id: str) -> Path:
    try:
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(repo_id, allow_patterns=["config.json", "*.safetensors", "pytorch_model.bin"]))
    except Exception as exc:  # offline, unknown id, network failure
        raise LungsoundError(f"cannot fetch Hugging Face model {repo_id!r} (not a local folder either): {exc}") from exc


def _timm_pretrained(name: str) -> dict[str, torch.Tensor]:
    try:
        import timm

        return dict(timm.create_model(name, pretrained=True).state_dict())
    except Exception as exc:
        raise LungsoundError(f"cannot create pretrained timm model {name!r}: {exc}") from exc


def _model_grid(backbone: nn.Module) -> Grid:
    c = backbone.config
    return patch_grid(c.num_mel_bins, c.max_length, c.patch_size, c.frequency_stride, c.time_stride)


def _source_grid(n: int, route: str, hf_config: dict | None, dst: Grid, override: Grid | None) -> Grid:
    """The source patch grid: given, from the HF config, square for ImageNet DeiT, else our frequency row count."""
    if override is not None:
        return tuple(override)
    if route == "hf" and hf_config and "max_length" in hf_config:
        return patch_grid(hf_config.get("num_mel_bins", 128), hf_config["max_length"], hf_config.get("patch_size", 16),
                          hf_config.get("frequency_stride", 10), hf_config.get("time_stride", 10))
    side = math.isqrt(n)
    if route == "deit" and side * side == n:
        return side, side
    if n % dst[0] == 0:
        return dst[0], n // dst[0]
    raise LungsoundError(f"cannot tell the patch grid of {n} position embeddings; pass src_grid=(rows, cols)")


def _adapt_tokens(state: dict[str, torch.Tensor], backbone: nn.Module, route: str, hf_config: dict | None,
                  src_grid: Grid | None, dst: Grid, layout: Layout, patch_reduce: str, report: LoadReport) -> None:
    """In place: adapt the position-embedding grid and reduce a multi-channel patch projection to our channels."""
    key = "embeddings.position_embeddings"
    if key in state:
        pos = state[key]
        prefix, grid = pos[:, :PREFIX_TOKENS], pos[:, PREFIX_TOKENS:]
        src = _source_grid(grid.shape[1], route, hf_config, dst, src_grid)
        state[key] = torch.cat([prefix, adapt_pos_embed(grid, src, dst, layout)], dim=1)
        if src != dst:
            report.notes.append(f"position embeddings {src[0]}x{src[1]} -> {dst[0]}x{dst[1]} ({layout} layout)")
    key = "embeddings.patch_embeddings.projection.weight"
    if key in state and state[key].dim() == 4 and state[key].shape[1] > 1 and _in_channels(backbone) == 1:
        channels = state[key].shape[1]
        weight = state[key].sum(dim=1, keepdim=True)
        state[key] = weight / channels if patch_reduce == "mean" else weight
        report.notes.append(f"patch projection {channels} -> 1 input channel ({patch_reduce})")


def _in_channels(backbone: nn.Module) -> int:
    return backbone.embeddings.patch_embeddings.projection.in_channels


def _apply(backbone: nn.Module, state: dict[str, torch.Tensor], report: LoadReport, strict: bool) -> LoadReport:
    """Compare ``state`` (5.x key layout) with the model, raise or warn on problems, load the fitting tensors."""
    actual = {_canonical_key(k): k for k in backbone.state_dict()}  # the installed transformers may use 4.x names
    target = {k: backbone.state_dict()[a] for k, a in actual.items()}
    report.missing = sorted(k for k in target if k not in state)
    report.unexpected = sorted(k for k in state if k not in target)
    report.mismatched = sorted(f"{k} (checkpoint {tuple(state[k].shape)}, model {tuple(target[k].shape)})"
                               for k in state if k in target and state[k].shape != target[k].shape)
    fitting = {k: v for k, v in state.items() if k in target and v.shape == target[k].shape}
    if not report.ok:
        message = f"weights from {report.source} ({report.route} route) do not fit the AST: {report.problems()}"
        if strict:
            raise LungsoundError(message + "; pass strict=False to load the fitting tensors anyway")
        warnings.warn(message + "; loading only the fitting tensors (strict=False)", stacklevel=3)
        log.warning(message)
    backbone.load_state_dict({actual[k]: v for k, v in fitting.items()}, strict=False)
    report.loaded = sorted(fitting)
    log.info("loaded %d tensors from %s (%s route); dropped %d head tensors; %s", len(fitting), report.source,
             report.route, len(report.dropped), "; ".join(report.notes) or "no adaptation")
    return report
