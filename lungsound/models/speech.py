"""Waveform speech backbones (wav2vec 2.0, HuBERT, WavLM) behind the lungsound model contract.

The speech models of [REPAUG] Kim, Toikkanen, Bae, Kim, Jung, "RepAugment: Input-Agnostic Representation-Level
Augmentation for Respiratory Sound Classification", EMBC 2024, arXiv 2405.02996 (docs/methods.md section 9), built on
``transformers``' own ``Wav2Vec2Model`` / ``HubertModel`` / ``WavLMModel``.

Input ``x`` is a batch of 16 kHz waveforms ``(B, L)`` (the 8-s cycles of docs/methods.md section 2, L = 128,000; any L at
least the conv stack's receptive field, 400 samples for the published models). Inside the model, as the checkpoint's
``Wav2Vec2FeatureExtractor(do_normalize=True)`` does, each cycle is normalised when ``normalize`` is on:

    x'_b = (x_b - mean(x_b)) / sqrt(var(x_b) + 1e-7)        (population variance over the L samples of cycle b)

so training, evaluation, ``predict`` and the app all feed the backbone the same input. The representation is the time
mean of the last hidden state ``H`` of shape ``(B, T, D)``: ``z_b = (1/T) sum_t H_{b,t}`` (768-d for base models, 1024-d
for large). The head is ``head="linear"``: ``logits = W z + b`` (the authors' speech head), or ``"layernorm_linear"``:
``W LN(z) + b`` (the AST papers' head, :class:`~lungsound.models.base.ClassifierHead`). No patch tokens, so ``patch_hook``
(Patch-Mix) is refused. RepAugment (:mod:`lungsound.methods.repaugment`) works on ``z``.

The checkpoints' own SpecAugment-like masking (``mask_time_prob``, ``mask_feature_prob``) and ``layerdrop`` stay as the
checkpoint config sets them with ``protocol_masking="checkpoint"`` (what the authors' code ran); ``"off"`` sets all three
to 0 so that an ablation row "no augmentation" has none. ``backbone_config()`` always returns the checkpoint's values (the
protocol is re-applied on rebuild, so the rebuilt module has the same parameters, ``masked_spec_embed`` included).

Parameters are checked by the registration before anything is built (``lungsound.models.params``): the encoder sizes
in ``overrides`` and in a stored ``backbone_config`` within ``HF_SIZES`` (e.g. ``hidden_size`` <= 4096,
``num_hidden_layers`` <= 48), ``hidden_size`` divisible by ``num_attention_heads``, at most 2.5 x 10^9 weights.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
import transformers
from torch import nn

from lungsound.documents import Field
from lungsound.errors import LungsoundError, one_line
from lungsound.models.base import ClassifierHead, FeatureClassifier, PatchHook
from lungsound.models.params import ParamSchema, count_limit, schema_of
from lungsound.models.registry import DEFAULT_SAMPLE_RATE, register_model

SAMPLE_RATE = DEFAULT_SAMPLE_RATE  # every checkpoint registered here was pretrained on 16-kHz speech
NORM_EPS = 1e-7  # Wav2Vec2FeatureExtractor.zero_mean_unit_var_norm
FAMILIES: dict[str, tuple[type, type]] = {
    "wav2vec2": (transformers.Wav2Vec2Config, transformers.Wav2Vec2Model),
    "hubert": (transformers.HubertConfig, transformers.HubertModel),
    "wavlm": (transformers.WavLMConfig, transformers.WavLMModel),
}
_LARGE = dict(hidden_size=1024, num_hidden_layers=24, num_attention_heads=16, intermediate_size=4096,
              feat_extract_norm="layer", do_stable_layer_norm=True, conv_bias=True)
TINY = dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=2, intermediate_size=128,
            conv_dim=(32, 32, 32, 32), conv_kernel=(10, 8, 4, 4), conv_stride=(5, 4, 4, 4),
            num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=4)  # stride 320 as the real ones: 399 frames / 8 s


@dataclass(frozen=True)
class SpeechCheckpoint:
    """What a registered name stands for: the family, the hub id, the architecture for random init, and ``do_normalize``.

    ``normalize`` is the ``do_normalize`` of the checkpoint's ``preprocessor_config.json`` (its Wav2Vec2FeatureExtractor);
    a ``preprocessor_config.json`` found next to the weights (local folder or hub cache) takes precedence.
    """

    family: str
    hub_id: str | None
    normalize: bool
    arch: dict = field(default_factory=dict)
    note: str = ""


CHECKPOINTS: dict[str, SpeechCheckpoint] = {
    "wav2vec2_base": SpeechCheckpoint("wav2vec2", "facebook/wav2vec2-base", True, {},
                                      "group-norm conv stack; do_normalize true, no attention mask"),
    "hubert_base": SpeechCheckpoint("hubert", "facebook/hubert-base-ls960", True, {},
                                    "do_normalize true in the HF preprocessor config (fairseq pretraining used raw audio)"),
    "wavlm_base_plus": SpeechCheckpoint("wavlm", "microsoft/wavlm-base-plus", False, {},
                                        "do_normalize false in the HF preprocessor config, as in the original WavLM"),
    "wav2vec2_large": SpeechCheckpoint("wav2vec2", "facebook/wav2vec2-large-lv60", True, _LARGE,
                                       "layer-norm conv stack; do_normalize true"),
    "hubert_large": SpeechCheckpoint("hubert", "facebook/hubert-large-ll60k", True, _LARGE,
                                     "layer-norm conv stack; do_normalize true"),
    "xls_r_300m": SpeechCheckpoint("wav2vec2", "facebook/wav2vec2-xls-r-300m", True, _LARGE,
                                   "layer-norm conv stack; do_normalize true"),
    "wav2vec2_tiny": SpeechCheckpoint("wav2vec2", None, True, TINY, "random init, for tests"),
    "hubert_tiny": SpeechCheckpoint("hubert", None, True, TINY, "random init, for tests"),
    "wavlm_tiny": SpeechCheckpoint("wavlm", None, True, TINY, "random init, for tests"),
}
SPEECH_MODELS: tuple[str, ...] = tuple(CHECKPOINTS)
MASKING_KEYS = ("mask_time_prob", "mask_feature_prob", "layerdrop")


@dataclass
class SpeechConfig:
    """Config keys of every speech model (see the module docstring).

    ``weights``: a hub id, a local folder (``config.json`` + weights, as ``save_pretrained`` writes), ``"default"`` for
    the name's hub id, or None for random init from ``backbone_config`` (a ``config.to_dict()``, as saved by
    :meth:`SpeechClassifier.backbone_config`) or the name's architecture with ``overrides`` (any HF config field, e.g.
    ``hidden_size``). ``normalize`` None = the checkpoint's ``do_normalize``. ``attn_implementation`` None = ``"sdpa"``
    where the transformers class supports it (wav2vec 2.0, HuBERT), else ``"eager"`` (WavLM). ``pos_embed`` is accepted
    for the trainer's sake and ignored; ``strict_weights`` fails on missing, mismatched, or unexpected backbone keys.
    """

    num_classes: int = 4
    weights: str | None = None
    normalize: bool | None = None
    head: Literal["linear", "layernorm_linear"] = "linear"
    protocol_masking: Literal["checkpoint", "off"] = "checkpoint"
    gradient_checkpointing: bool = False
    attn_implementation: Literal["sdpa", "eager"] | None = None
    overrides: dict | None = None
    backbone_config: dict | None = None
    pos_embed: str | None = None
    strict_weights: bool = True


class SpeechClassifier(FeatureClassifier):
    """A transformers speech encoder (``self.backbone``), per-cycle input normalisation, time-mean pooling, a head."""

    supports_patch_hook = False
    input_type = "waveform"

    def __init__(self, name: str, config: SpeechConfig):
        super().__init__()
        if config.head not in ("linear", "layernorm_linear"):
            raise LungsoundError(f"speech model head must be 'linear' or 'layernorm_linear', got {config.head!r}")
        if config.protocol_masking not in ("checkpoint", "off"):
            raise LungsoundError(f"protocol_masking must be 'checkpoint' or 'off', got {config.protocol_masking!r}")
        if config.num_classes < 1:
            raise LungsoundError(f"num_classes must be at least 1, got {config.num_classes}")
        self.name, self.config, self.spec = name, config, CHECKPOINTS[name]
        config_cls, model_cls = FAMILIES[self.spec.family]
        attn = _attn_implementation(model_cls, config.attn_implementation)
        weights = config.weights
        if weights == "default":
            if self.spec.hub_id is None:
                raise LungsoundError(f"model {name!r} has no published weights; pass a folder as model.pretrained")
            weights = self.spec.hub_id
        self.weights = weights
        hf_config = self._hf_config(config_cls, weights)
        if weights:
            self.backbone = _load_pretrained(model_cls, weights, hf_config, attn, config.strict_weights, self.spec)
        else:
            self.backbone = model_cls._from_config(hf_config, attn_implementation=attn)
        self._checkpoint_masking = {k: getattr(self.backbone.config, k) for k in MASKING_KEYS}
        if config.protocol_masking == "off":  # after construction: keep masked_spec_embed so state dicts still match
            for key in MASKING_KEYS:
                setattr(self.backbone.config, key, 0.0)
        if config.gradient_checkpointing:
            enable = getattr(self.backbone, "activation_checkpointing_enable", None)  # transformers >= 5.x name
            if enable is not None:
                enable(activation_checkpointing_kwargs={"use_reentrant": False})
            else:
                self.backbone.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        self.normalize, self.normalize_source = _resolve_normalize(config.normalize, weights, self.spec)
        hf = self.backbone.config
        self.receptive_field = _receptive_field(hf.conv_kernel, hf.conv_stride)
        self.feature_dim, self.num_classes = int(hf.hidden_size), int(config.num_classes)
        self.head = (nn.Linear(self.feature_dim, self.num_classes) if config.head == "linear"
                     else ClassifierHead(self.feature_dim, self.num_classes))

    def _hf_config(self, config_cls: type, weights: str | None):
        """The HF config to build (random init) or to load with (None: the checkpoint's own config.json)."""
        config = self.config
        if config.backbone_config is not None:
            kind = config.backbone_config.get("model_type", self.spec.family)
            if kind != config_cls.model_type:
                raise LungsoundError(f"backbone_config is a {kind!r} config but model {self.name!r} is "
                                     f"{config_cls.model_type!r}")
            base = dict(config.backbone_config)
        elif weights:
            if not config.overrides:
                return None
            base = _pretrained_config(config_cls, weights, self.spec).to_dict()
        else:
            base = dict(self.spec.arch)
        known = config_cls().to_dict()
        for key in config.overrides or {}:
            if key not in known:
                raise LungsoundError(f"unknown {config_cls.model_type} config field {key!r} in overrides")
        fields = {**base, **(config.overrides or {})}
        fields.pop("num_feat_extract_layers", None)  # derived from conv_dim by the config class
        hf = config_cls.from_dict(fields)
        if hf.hidden_size % hf.num_attention_heads:
            raise LungsoundError(f"hidden_size {hf.hidden_size} is not divisible by "
                                 f"num_attention_heads {hf.num_attention_heads}")
        return hf

    def backbone_config(self) -> dict[str, Any]:
        """The backbone's HF config as a plain (YAML/JSON-safe) dict, with the checkpoint's own masking values."""
        d = {**self.backbone.config.to_dict(), **self._checkpoint_masking}
        return json.loads(json.dumps(d, default=str))

    def rebuild_params(self) -> dict[str, Any]:
        """Config keys that rebuild this exact model without any download (merge into the saved model params)."""
        return {"backbone_config": self.backbone_config(), "normalize": self.normalize}

    def speech_masking_params(self) -> dict[str, float]:
        """The backbone's masking and layerdrop actually in effect in training (0 where switched off)."""
        hf = self.backbone.config
        on = bool(getattr(hf, "apply_spec_augment", True))
        return {"mask_time_prob": float(hf.mask_time_prob) if on else 0.0, "mask_time_length": int(hf.mask_time_length),
                "mask_feature_prob": float(hf.mask_feature_prob) if on else 0.0, "layerdrop": float(hf.layerdrop)}

    def normalize_input(self, x: torch.Tensor) -> torch.Tensor:
        """``(x - mean) / sqrt(var + 1e-7)`` per row (float32) when ``normalize`` is on, else ``x`` as float32."""
        x = x.float()
        if not self.normalize:
            return x
        mean = x.mean(dim=1, keepdim=True)
        var = x.var(dim=1, unbiased=False, keepdim=True)
        return (x - mean) / torch.sqrt(var + NORM_EPS)

    def forward_features(self, x: torch.Tensor, patch_hook: PatchHook | None = None) -> torch.Tensor:
        """Time mean of the last hidden state, ``(B, D)``, of the normalised waveform batch ``x`` ``(B, L)``."""
        self._refuse_patch_hook(patch_hook)
        if not isinstance(x, torch.Tensor) or x.dim() != 2 or x.shape[1] < self.receptive_field:
            got = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
            raise LungsoundError(f"{self.name} expects a 16 kHz waveform batch of shape (B, L) with L >= "
                                 f"{self.receptive_field} samples, got {got}")
        hidden = self.backbone(input_values=self.normalize_input(x)).last_hidden_state
        return hidden.mean(dim=1)


def _attn_implementation(model_cls: type, requested: str | None) -> str:
    supports = bool(getattr(model_cls, "_supports_sdpa", False))
    if requested is None:
        return "sdpa" if supports else "eager"
    if requested not in ("sdpa", "eager"):
        raise LungsoundError(f"attn_implementation must be 'sdpa' or 'eager', got {requested!r}")
    if requested == "sdpa" and not supports:
        raise LungsoundError(f"transformers' {model_cls.__name__} does not support sdpa attention; use 'eager'")
    return requested


def _is_local(weights: str) -> bool:
    return Path(weights).expanduser().is_dir() or weights.startswith(("/", ".", "~")) or weights.count("/") > 1


def _offline_error(weights: str, exc: Exception) -> LungsoundError:
    return LungsoundError(f"cannot load speech model weights {weights!r} from the Hugging Face hub (unreachable or not "
                          f"cached: {one_line(exc, limit=None)}); download them where the hub is reachable and pass a "
                          f"local folder with config.json and the weights: model.pretrained=/path/to/folder")


def _check_folder(weights: str, spec: SpeechCheckpoint) -> Path:
    folder = Path(weights).expanduser()
    if not folder.is_dir():
        raise LungsoundError("speech model weights folder does not exist", folder)
    if not (folder / "config.json").is_file():
        raise LungsoundError("not a transformers model folder: config.json is missing", folder)
    try:
        kind = json.loads((folder / "config.json").read_text()).get("model_type")
    except (json.JSONDecodeError, OSError) as exc:
        raise LungsoundError(f"unreadable config.json: {exc}", folder) from None
    if kind is not None and kind != spec.family:
        raise LungsoundError(f"config.json describes a {kind!r} model, not {spec.family!r}", folder)
    return folder


def _pretrained_config(config_cls: type, weights: str, spec: SpeechCheckpoint):
    source = str(_check_folder(weights, spec)) if _is_local(weights) else weights
    try:
        return config_cls.from_pretrained(source)
    except OSError as exc:
        raise (LungsoundError(f"cannot read config.json: {exc}", source) if _is_local(weights)
               else _offline_error(weights, exc)) from None


def _load_pretrained(model_cls: type, weights: str, hf_config, attn: str, strict: bool, spec: SpeechCheckpoint):
    local = _is_local(weights)
    source = str(_check_folder(weights, spec)) if local else weights
    kwargs = {"config": hf_config} if hf_config is not None else {}
    try:
        model, info = model_cls.from_pretrained(source, output_loading_info=True, attn_implementation=attn, **kwargs)
    except OSError as exc:
        if local:
            raise LungsoundError(f"cannot load weights: {one_line(exc, limit=None)}", source) from None
        raise _offline_error(weights, exc) from None
    except (RuntimeError, ValueError) as exc:
        raise LungsoundError(f"weights do not fit {model_cls.__name__}: {one_line(exc, limit=None)}", source) from None
    if strict:
        # Keys of the checkpoint's other heads (quantizer, project_q/hid, lm_head, ...) are expected when a
        # *ForPreTraining / *ForCTC checkpoint is loaded as the bare encoder; keys aimed at the encoder's own modules are not.
        own = {key.split(".")[0] for key in model.state_dict()}
        unexpected = sorted(k for k in info.get("unexpected_keys", ()) if k.split(".")[0] in own)
        missing, mismatched = sorted(info.get("missing_keys", ())), sorted(map(str, info.get("mismatched_keys", ())))
        if missing or unexpected or mismatched:
            raise LungsoundError(f"weights do not fit {model_cls.__name__} (strict_weights): missing {missing[:5]}, "
                                 f"unexpected {unexpected[:5]}, mismatched {mismatched[:5]}", source)
    return model


def _resolve_normalize(requested: bool | None, weights: str | None, spec: SpeechCheckpoint) -> tuple[bool, str]:
    """``(normalize, where the value came from)``: the override, the weights' preprocessor config, or the table."""
    if requested is not None:
        return bool(requested), "config"
    if weights:
        path = None
        if _is_local(weights):
            candidate = Path(weights).expanduser() / "preprocessor_config.json"
            path = candidate if candidate.is_file() else None
        else:
            from transformers.utils import cached_file

            try:  # the hub cache only; never an error when it is absent
                found = cached_file(weights, "preprocessor_config.json", _raise_exceptions_for_missing_entries=False,
                                    _raise_exceptions_for_connection_errors=False)
            except OSError:
                found = None
            path = Path(found) if found else None
        if path is not None:
            try:
                return bool(json.loads(path.read_text()).get("do_normalize", True)), str(path)
            except (json.JSONDecodeError, OSError) as exc:
                raise LungsoundError(f"unreadable preprocessor config: {exc}", path) from None
        known = next((c for c in CHECKPOINTS.values() if c.hub_id == weights), None)
        if known is not None:
            return known.normalize, f"table ({weights})"
    return spec.normalize, "table (model default)"


def _receptive_field(kernels, strides) -> int:
    """Input samples one output frame of the conv stack sees (400 for the published models)."""
    field_ = 1
    for kernel, stride in zip(reversed(kernels), reversed(strides)):
        field_ = (field_ - 1) * stride + kernel
    return field_


# The sizes the encoder is built from, wherever they come from (model.params.overrides, or the backbone_config a model
# folder stores): bounded so that a config cannot ask for terabytes; absent keys take the families' base values.
HF_SIZES = {
    "hidden_size": Field(int, 1, 4096), "num_hidden_layers": Field(int, 1, 48),
    "num_attention_heads": Field(int, 1, 64),
    "intermediate_size": Field(int, 1, 16384), "num_conv_pos_embeddings": Field(int, 1, 1024),
    "num_conv_pos_embedding_groups": Field(int, 1, 1024), "num_feat_extract_layers": Field(int, 1, 16),
    "num_buckets": Field(int, 1, 4096), "max_bucket_distance": Field(int, 1, 100_000),
    "conv_dim": Field(list, max_length=16, item=Field(int, 1, 4096)),
    "conv_kernel": Field(list, max_length=16, item=Field(int, 1, 1024)),
    "conv_stride": Field(list, max_length=16, item=Field(int, 1, 1024)),
}
BASE_SIZES = {"hidden_size": 768, "num_hidden_layers": 12, "num_attention_heads": 12, "intermediate_size": 3072}
MAX_WEIGHTS = 2.5e9  # XLS-R 2B has 2.2 billion


def _sizes_bounded(v: dict) -> str | None:
    for part in ("backbone_config", "overrides"):
        for key, spec in HF_SIZES.items():
            problem = spec.problem((v[part] or {})[key]) if key in (v[part] or {}) else None
            if problem:
                return f"{part}.{key} {problem}"
    return None


def _encoder_fits(v: dict, arch: dict) -> str | None:
    hf = {**BASE_SIZES, **arch, **(v["backbone_config"] or {}), **(v["overrides"] or {})}
    h, heads = hf["hidden_size"], hf["num_attention_heads"]
    if h % heads:
        return f"hidden_size {h} is not divisible by num_attention_heads {heads}"
    return count_limit("this encoder", hf["num_hidden_layers"] * (4 * h * h + 2 * h * hf["intermediate_size"]),
                       MAX_WEIGHTS)


def _schema(name: str) -> ParamSchema:
    arch = CHECKPOINTS[name].arch
    return schema_of(SpeechConfig, {"num_classes": Field(int, 1, 1000), "weights": Field(str, optional=True,
                                                                                         max_length=4096)},
                     joint=(_sizes_bounded, lambda v: _encoder_fits(v, arch)))


def hf_config(name: str, params: dict):
    """The HF config of a speech model from its saved ``backbone_config``, else its registered architecture, with the
    ``overrides`` applied."""
    spec = CHECKPOINTS[name]
    config_cls = FAMILIES[spec.family][0]
    fields = dict(params.get("backbone_config") or spec.arch)
    fields.update(params.get("overrides") or {})
    fields.pop("num_feat_extract_layers", None)
    return config_cls.from_dict(fields)


def _memory(name: str):
    def working_bytes(v: dict, seconds: float) -> int:
        """The first conv layer's output (2 x channels x samples / stride) plus attention maps (2 per head) and about
        12 activations of the hidden width per encoder frame."""
        hf = hf_config(name, v)
        length = int(seconds * SAMPLE_RATE)
        frames = length
        for stride in hf.conv_stride:
            frames //= stride
        first = 2 * hf.conv_dim[0] * length // hf.conv_stride[0]
        return 4 * (first + 2 * hf.num_attention_heads * frames ** 2 + 12 * frames * hf.hidden_size)
    return working_bytes


WORDS = {"wav2vec2": "wav2vec 2.0", "hubert": "HuBERT", "wavlm": "WavLM"}
PAPERS = {"wav2vec2": "WAV2VEC2", "hubert": "HUBERT", "wavlm": "WAVLM"}


def _factory(name: str):
    def build(**config) -> SpeechClassifier:
        return SpeechClassifier(name, SpeechConfig(**config))

    spec = CHECKPOINTS[name]
    build.__name__ = name
    build.__doc__ = f"{spec.family} speech model ({spec.hub_id or 'random init'}): {spec.note}."
    return build


for _name, _checkpoint in CHECKPOINTS.items():
    _xlsr = _name.startswith("xls_r")
    register_model(_name, params=_schema(_name), input="waveform", sample_rate=SAMPLE_RATE,
                   explanation="gradient-x-input", transformer=True,
                   memory=_memory(_name), architecture="XLS-R (wav2vec 2.0)" if _xlsr else WORDS[_checkpoint.family],
                   paper="XLSR" if _xlsr else PAPERS[_checkpoint.family])(_factory(_name))
