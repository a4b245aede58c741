"""BTS: LAION-CLAP with the patient metadata as text (`clap_bts`), and the audio-only CLAP baseline (`clap_audio`).

Kim et al., "BTS: Bridging Text and Sound Modalities for Metadata-Aided Respiratory Sound Classification",
Interspeech 2024 (docs/methods.md section 13), on LAION-CLAP (Wu et al., "Large-scale Contrastive Language-Audio
Pretraining with Feature Fusion and Keyword-to-Caption Augmentation", ICASSP 2023), checkpoint
`laion/clap-htsat-unfused` (HTSAT audio tower, RoBERTa text tower, 512-d projections), through transformers' own
`ClapModel` and `ClapAudioModelWithProjection`.

Input ``x`` is a batch of 48-kHz cycles ``(B, L)`` (the pipeline cuts them at the spec's 48 kHz with the 1/16-s fades
and repeat-pads them to 8 s ending in a 3,000-sample fade-out, docs/methods.md section 2). Inside the model the front
end is CLAP's feature extractor (`ClapFeatureExtractor`: its padding, mel filters and dB scale, computed with torch so
that gradients reach the waveform, the STFT as a strided convolution with the windowed DFT so that it exports to ONNX): a cycle shorter than 10 s is tiled int(480,000 / L) times and zero-padded to 10 s
("repeatpad"; an 8-s cycle is 8 s of sound and 2 s of zeros), then a centred STFT (Hann 1,024, hop 480), power, 64
mel bands (Slaney for "rand_trunc", HTK and four copies for "fusion"), 10 log10(max(mel, 1e-10)): 1,001 frames x 64.
Longer cycles are refused (the extractor would crop at random).

`clap_bts`: the text tower reads `metadata_prompt(meta)` of each cycle (``forward(x, meta=...)``: a list of B
mappings with age, sex, location, device; None: every field unknown), tokenised to 64 tokens by `PromptTokens`.
``ClapModel`` gives the L2-normalised text and audio embeddings t, a (512 each); ``fusion="concat"`` (BTS):
z = [t, a] (1,024) and logits = W z + b; ``fusion="sum"``: z = w t + (1 - w) a with w = ``text_weight``. All CLAP
weights are fine-tuned. In training, ``meta_drop`` p makes one field (uniformly chosen) unknown in a sample with
probability p; ``no_description`` writes "No description." for every sample; ``meta_fields`` keeps a subset of the
fields (these three are set as method.params and handed to the model by `lungsound.models.build`).
`clap_audio`: ``ClapAudioModelWithProjection``'s (unnormalised) 512-d audio embedding, logits = W a + b.

A saved model rebuilds offline: `rebuild_params` stores the CLAP config, the feature extractor's settings and the
prompt token table in the folder's config.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Mapping, Sequence

import numpy as np
import torch
import transformers
from torch import nn

from lungsound.documents import Field
from lungsound.errors import LungsoundError, one_line
from lungsound.models.base import FeatureClassifier, PatchHook
from lungsound.models.clap_prompt import (PROMPT_FIELDS, PromptTokens, check_fields, metadata_prompt,
                                          NO_DESCRIPTION)
from lungsound.models.params import count_limit, schema_of
from lungsound.models.registry import register_model
from lungsound.models.speech import _is_local

__all__ = ["CHECKPOINT", "ClapClassifier", "ClapSettings", "metadata_prompt", "SAMPLE_RATE", "TINY"]

SAMPLE_RATE = 48000  # CLAP's audio rate
CHECKPOINT = "laion/clap-htsat-unfused"
# The unfused checkpoint's preprocessor settings (its preprocessor_config.json, when found beside the weights, wins).
FEATURE_EXTRACTOR = dict(feature_size=64, sampling_rate=SAMPLE_RATE, hop_length=480, max_length_s=10,
                         fft_window_size=1024, padding="repeatpad", truncation="rand_trunc", frequency_min=50,
                         frequency_max=14000)
TINY = {"projection_dim": 16,
        "text_config": dict(vocab_size=128, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                            intermediate_size=64, max_position_embeddings=70),
        "audio_config": dict(hidden_size=16, patch_embeds_hidden_size=8, depths=[1, 1], num_attention_heads=[1, 2],
                             window_size=8, projection_hidden_size=16)}
KINDS = ("bts", "audio")


@dataclass
class ClapSettings:
    """Config keys of `clap_bts` / `clap_audio` (see the module docstring).

    ``weights``: a hub id, a local folder (as ``save_pretrained`` writes; its tokenizer and preprocessor config are
    read too), ``"default"`` for `CHECKPOINT`, or None for random init from ``backbone_config`` (a ``ClapConfig``
    dict, as saved) or ``overrides`` (``ClapConfig`` fields, e.g. `TINY`). ``pos_embed`` is accepted for the
    trainer's sake and ignored; ``strict_weights`` fails on missing or mismatched CLAP keys.
    """

    num_classes: int = 4
    weights: str | None = None
    fusion: Literal["concat", "sum"] = "concat"
    text_weight: float = 0.5
    meta_fields: str | None = None
    meta_drop: float = 0.0
    no_description: bool = False
    overrides: dict | None = None
    backbone_config: dict | None = None
    feature_extractor: dict | None = None
    prompt_tokens: dict | None = None
    pos_embed: str | None = None
    strict_weights: bool = True


class ClapFrontEnd(nn.Module):
    """CLAP's feature extractor in torch: (B, L) waveforms at 48 kHz -> (B, C, 1 + max_samples // hop, mels)
    log-mel input features (C = 1, or 4 for "fusion"), with the extractor's own mel filters."""

    def __init__(self, settings: Mapping[str, Any]):
        super().__init__()
        fe = transformers.ClapFeatureExtractor(**settings)
        if fe.padding not in ("repeatpad", "repeat") or fe.truncation not in ("rand_trunc", "fusion"):
            raise LungsoundError(f"CLAP feature extractor: padding {fe.padding!r} / truncation {fe.truncation!r} "
                                 "are not supported (repeatpad or repeat; rand_trunc or fusion)")
        self.settings = {k: getattr(fe, k) for k in FEATURE_EXTRACTOR}
        self.max_samples, self.hop, self.n_fft = int(fe.nb_max_samples), int(fe.hop_length), int(fe.fft_window_size)
        self.padding, self.copies = fe.padding, 4 if fe.truncation == "fusion" else 1
        filters = fe.mel_filters if fe.truncation == "fusion" else fe.mel_filters_slaney  # (bins, mels)
        self.register_buffer("filters", torch.from_numpy(np.asarray(filters, dtype=np.float32)), persistent=False)
        # The windowed DFT as one strided convolution (real rows, then imaginary): exportable to ONNX, unlike a
        # complex STFT. Row k of the real part is w(n) cos(2 pi k n / N), of the imaginary part -w(n) sin(...).
        n = torch.arange(self.n_fft, dtype=torch.float64)
        k = torch.arange(self.n_fft // 2 + 1, dtype=torch.float64)[:, None]
        window = torch.hann_window(self.n_fft, periodic=True, dtype=torch.float64)
        angle = 2 * torch.pi * k * n / self.n_fft
        dft = torch.cat([window * torch.cos(angle), -window * torch.sin(angle)])[:, None, :]
        self.register_buffer("dft", dft.float(), persistent=False)

    @property
    def frames(self) -> int:
        return 1 + self.max_samples // self.hop

    def pad(self, x: torch.Tensor) -> torch.Tensor:
        """The extractor's padding to `max_samples`: tiled int(max / L) times ("repeatpad", then zeros) or tiled and
        cut ("repeat")."""
        length = x.shape[1]
        if length > self.max_samples:
            raise LungsoundError(f"CLAP takes cycles of at most {self.max_samples / SAMPLE_RATE:g} s at 48 kHz "
                                 f"({self.max_samples} samples), got {length}: set data.duration to 10 or less")
        repeat = self.max_samples // length
        x = x.repeat(1, repeat + 1)[:, :self.max_samples] if self.padding == "repeat" else x.repeat(1, repeat)
        return nn.functional.pad(x, (0, self.max_samples - x.shape[1]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        half = self.n_fft // 2  # a centred STFT: the padded signal reflected by half a window at each end
        padded = nn.functional.pad(self.pad(x.float())[:, None], (half, half), mode="reflect")
        parts = nn.functional.conv1d(padded, self.dft, stride=self.hop)  # (B, 2 bins, T)
        bins = self.dft.shape[0] // 2
        power = parts[:, :bins] ** 2 + parts[:, bins:] ** 2
        mel = torch.einsum("bft,fm->btm", power, self.filters)
        logmel = 10.0 * torch.log10(mel.clamp(min=1e-10))
        return logmel[:, None].expand(-1, self.copies, -1, -1)


class ClapClassifier(FeatureClassifier):
    """CLAP (``self.backbone``) and a linear head over its embeddings: text and audio (`kind` "bts") or audio only."""

    supports_patch_hook = False
    input_type = "waveform"

    def __init__(self, name: str, kind: str, settings: ClapSettings):
        super().__init__()
        if kind not in KINDS:
            raise ValueError(f"CLAP kind must be one of {KINDS}, got {kind!r}")
        if settings.num_classes < 1:
            raise LungsoundError(f"num_classes must be at least 1, got {settings.num_classes}")
        self.name, self.kind, self.settings = name, kind, settings
        self.uses_metadata = kind == "bts"
        self.fields = check_fields(settings.meta_fields)
        weights = CHECKPOINT if settings.weights == "default" else settings.weights
        model_cls = transformers.ClapModel if kind == "bts" else transformers.ClapAudioModelWithProjection
        if weights:
            self.backbone = _load(model_cls, weights, settings.strict_weights)
            fe_settings = _feature_settings(weights) if settings.feature_extractor is None else settings.feature_extractor
            tokens = _tokens(weights) if kind == "bts" and settings.prompt_tokens is None else None
        else:
            self.backbone = model_cls._from_config(self._hf_config(model_cls))
            fe_settings, tokens = settings.feature_extractor, None
        self.front = ClapFrontEnd({**FEATURE_EXTRACTOR, **(fe_settings or {})})
        if kind == "bts":
            self.tokens = (PromptTokens.from_dict(settings.prompt_tokens) if settings.prompt_tokens is not None
                           else tokens or PromptTokens.enumerated())
            vocab = self.backbone.config.text_config.vocab_size
            if self.tokens.max_id >= vocab:
                raise LungsoundError(f"the prompt token ids reach {self.tokens.max_id}, beyond the text tower's "
                                     f"vocabulary of {vocab}")
        dim = int(self.backbone.config.projection_dim)
        self.feature_dim = 2 * dim if kind == "bts" and settings.fusion == "concat" else dim
        self.num_classes = int(settings.num_classes)
        self.head = nn.Linear(self.feature_dim, self.num_classes)

    def _hf_config(self, model_cls: type):
        config = self.settings.backbone_config or self.settings.overrides or {}
        if model_cls is transformers.ClapAudioModelWithProjection:
            audio = dict(config.get("audio_config") or {})
            audio.setdefault("projection_dim", config.get("projection_dim", 512))
            return transformers.ClapAudioConfig(**_plain(audio))
        return transformers.ClapConfig(**_plain(config))

    def backbone_config(self) -> dict[str, Any]:
        """The CLAP config as a plain (YAML/JSON-safe) dict, in ``ClapConfig`` layout for both kinds."""
        hf = self.backbone.config
        d = hf.to_dict() if self.kind == "bts" else {"audio_config": hf.to_dict(), "projection_dim": hf.projection_dim}
        return json.loads(json.dumps(d, default=str))

    def rebuild_params(self) -> dict[str, Any]:
        """Config keys that rebuild this exact model without any download (merged into the saved model params)."""
        out = {"backbone_config": self.backbone_config(), "feature_extractor": dict(self.front.settings)}
        if self.kind == "bts":
            out["prompt_tokens"] = self.tokens.to_dict()
        return out

    # --- the text side --------------------------------------------------------------------------------------------

    def prompts(self, meta: Sequence[Mapping[str, Any]] | None, batch: int) -> list[str]:
        """The sentences of a batch's metadata (None: every field unknown), with the training-time field drop."""
        if self.settings.no_description:
            return [NO_DESCRIPTION] * batch
        rows = [dict(m) for m in meta] if meta is not None else [dict.fromkeys(PROMPT_FIELDS) for _ in range(batch)]
        if len(rows) != batch:
            raise LungsoundError(f"{self.name} got metadata for {len(rows)} samples but a batch of {batch}")
        if self.training and self.settings.meta_drop > 0:
            drop = torch.rand(batch) < self.settings.meta_drop
            which = torch.randint(len(self.fields), (batch,)) if self.fields else torch.zeros(batch, dtype=torch.long)
            for i in torch.nonzero(drop).flatten().tolist():
                rows[i][self.fields[int(which[i])]] = None
        return [metadata_prompt(row, self.fields) for row in rows]

    # --- the model ------------------------------------------------------------------------------------------------

    def _check(self, x: torch.Tensor) -> None:
        if not isinstance(x, torch.Tensor) or x.dim() != 2 or x.shape[1] < 2:
            got = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
            raise LungsoundError(f"{self.name} expects a 48 kHz waveform batch of shape (B, L), got {got}")

    def embeddings(self, x: torch.Tensor, meta: Sequence[Mapping[str, Any]] | None = None):
        """`(text, audio)` embeddings (text None for `clap_audio`), (B, 512) each."""
        self._check(x)
        features = self.front(x)
        is_longer = torch.zeros(x.shape[0], 1, dtype=torch.bool, device=x.device)
        if self.kind == "audio":
            return None, self.backbone(input_features=features, is_longer=is_longer).audio_embeds
        ids, mask = self.tokens.encode(self.prompts(meta, x.shape[0]))
        out = self.backbone(input_ids=ids.to(x.device), attention_mask=mask.to(x.device), input_features=features,
                            is_longer=is_longer)
        return out.text_embeds, out.audio_embeds

    def forward_features(self, x: torch.Tensor, patch_hook: PatchHook | None = None,
                         meta: Sequence[Mapping[str, Any]] | None = None) -> torch.Tensor:
        self._refuse_patch_hook(patch_hook)
        text, audio = self.embeddings(x, meta)
        if text is None:
            return audio
        if self.settings.fusion == "sum":
            return self.settings.text_weight * text + (1.0 - self.settings.text_weight) * audio
        return torch.cat([text, audio], dim=1)

    def forward(self, x: torch.Tensor, meta: Sequence[Mapping[str, Any]] | None = None) -> torch.Tensor:
        return self.forward_head(self.forward_features(x, meta=meta))


def _plain(d: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in d.items() if k not in ("transformers_version", "architectures", "model_type")}


def _source(weights: str) -> str:
    if _is_local(weights):
        folder = Path(weights).expanduser()
        if not (folder / "config.json").is_file():
            raise LungsoundError("not a transformers CLAP folder: config.json is missing", folder)
        return str(folder)
    return weights


def _hub_error(weights: str, exc: Exception) -> LungsoundError:
    return LungsoundError(f"cannot load CLAP {weights!r} ({one_line(exc, limit=None)}); download it where the hub is "
                          "reachable and pass the folder: model.pretrained=/path/to/folder")


def _load(model_cls: type, weights: str, strict: bool):
    source = _source(weights)
    try:
        model, info = model_cls.from_pretrained(source, output_loading_info=True)
    except OSError as exc:
        raise _hub_error(weights, exc) from None
    except (RuntimeError, ValueError) as exc:
        raise LungsoundError(f"weights do not fit {model_cls.__name__}: {one_line(exc, limit=None)}", source) from None
    missing, mismatched = sorted(info.get("missing_keys", ())), sorted(map(str, info.get("mismatched_keys", ())))
    if strict and (missing or mismatched):
        raise LungsoundError(f"weights do not fit {model_cls.__name__} (strict_weights): missing {missing[:5]}, "
                             f"mismatched {mismatched[:5]}", source)
    return model


def _feature_settings(weights: str) -> dict | None:
    """The checkpoint's own feature extractor settings, when its preprocessor config is there (else the table's)."""
    try:
        fe = transformers.ClapFeatureExtractor.from_pretrained(_source(weights))
    except OSError:
        return None
    return {k: getattr(fe, k) for k in FEATURE_EXTRACTOR}


def _tokens(weights: str) -> PromptTokens:
    try:
        tokenizer = transformers.AutoTokenizer.from_pretrained(_source(weights))
    except (OSError, ValueError) as exc:
        raise _hub_error(weights, exc) from None
    return PromptTokens.from_tokenizer(tokenizer)


# The sizes a CLAP config may ask for (model.params.overrides or a stored backbone_config): bounded so that a hostile
# file cannot ask for terabytes before anything is built; absent keys take transformers' defaults (the published sizes).
TOWER_SIZES = {"hidden_size": Field(int, 1, 4096), "num_hidden_layers": Field(int, 1, 48),
               "intermediate_size": Field(int, 1, 16384), "vocab_size": Field(int, 1, 1_000_000),
               "max_position_embeddings": Field(int, 1, 8192), "patch_embeds_hidden_size": Field(int, 1, 1024),
               "spec_size": Field(int, 1, 1024), "window_size": Field(int, 1, 64)}
MAX_WEIGHTS = 2e9


def _sizes_bounded(v: dict) -> str | None:
    for part in ("backbone_config", "overrides"):
        config = v[part] or {}
        dim = config.get("projection_dim")
        if dim is not None and (isinstance(dim, bool) or not isinstance(dim, int) or not 1 <= dim <= 4096):
            return f"{part}.projection_dim must be an integer in [1, 4096], got {dim!r}"
        for tower in ("text_config", "audio_config"):
            sizes = config.get(tower) or {}
            if not isinstance(sizes, dict):
                return f"{part}.{tower} must be a mapping"
            for key, spec in TOWER_SIZES.items():
                problem = spec.problem(sizes[key]) if key in sizes else None
                if problem:
                    return f"{part}.{tower}.{key} {problem}"
        text = {"hidden_size": 768, "num_hidden_layers": 12, "intermediate_size": 3072, "vocab_size": 50265,
                **(config.get("text_config") or {})}
        count = text["num_hidden_layers"] * (4 * text["hidden_size"] ** 2 + 2 * text["hidden_size"]
                                             * text["intermediate_size"]) + text["vocab_size"] * text["hidden_size"]
        problem = count_limit("this CLAP text tower", count, MAX_WEIGHTS)
        if problem:
            return problem
    return None


def _memory(v: dict, seconds: float) -> int:
    """HTSAT's first stage dominates: (spec_size / 4)^2 tokens of width C, about 24 activations each, plus the
    window attention maps (heads x tokens x window^2), twice for the two towers' slack; float32."""
    audio = {"spec_size": 256, "patch_embeds_hidden_size": 96, "window_size": 8, "num_attention_heads": [4],
             **((v["backbone_config"] or v["overrides"] or {}).get("audio_config") or {})}
    tokens = (audio["spec_size"] // 4) ** 2
    heads = (audio["num_attention_heads"] or [4])[0]
    return 2 * 4 * (24 * tokens * audio["patch_embeds_hidden_size"] + heads * tokens * audio["window_size"] ** 2)


def schema():
    return schema_of(ClapSettings, {"num_classes": Field(int, 1, 1000),
                                    "weights": Field(str, optional=True, max_length=4096),
                                    "text_weight": Field(float, 0.0, 1.0), "meta_drop": Field(float, 0.0, 1.0),
                                    "meta_fields": Field(str, optional=True, max_length=64)},
                     joint=(_sizes_bounded,))


def _factory(name: str, kind: str, doc: str):
    def build(**config) -> ClapClassifier:
        return ClapClassifier(name, kind, ClapSettings(**config))

    build.__name__, build.__doc__ = name, doc
    return build


register_model("clap_bts", params=schema(), input="waveform", sample_rate=SAMPLE_RATE, explanation="gradient-x-input",
               memory=_memory, architecture="LAION-CLAP (HTSAT audio + RoBERTa text of the metadata sentence)",
               paper="BTS", uses_metadata=True, transformer=True)(
    _factory("clap_bts", "bts", "BTS: CLAP text and audio embeddings of a cycle and its metadata sentence."))
register_model("clap_audio", params=schema(), input="waveform", sample_rate=SAMPLE_RATE,
               explanation="gradient-x-input", memory=_memory, architecture="LAION-CLAP (HTSAT audio tower)",
               paper="CLAP", transformer=True)(
    _factory("clap_audio", "audio", "CLAP's audio embedding of a cycle (the BTS baseline)."))
