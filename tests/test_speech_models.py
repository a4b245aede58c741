"""Waveform speech backbones of [REPAUG] (methods.md section 9) on tiny random models; no network (HF_HUB_OFFLINE=1)."""

from __future__ import annotations

import os

os.environ["HF_HUB_OFFLINE"] = "1"

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import transformers

from lungsound.errors import LungsoundError
from lungsound.models import create_model, list_models, model_config_keys
from lungsound.models.speech import CHECKPOINTS, FAMILIES, SPEECH_MODELS, TINY, SpeechClassifier

TINY_NAMES = ("wav2vec2_tiny", "hubert_tiny", "wavlm_tiny")
HUB_NAMES = tuple(n for n in SPEECH_MODELS if CHECKPOINTS[n].hub_id is not None)
FAMILY_OF_TINY = {n: CHECKPOINTS[n].family for n in TINY_NAMES}
NO_DROPOUT = dict(hidden_dropout=0.0, attention_dropout=0.0, activation_dropout=0.0, feat_proj_dropout=0.0)
C = 3


def wave(batch: int = 2, seconds: float = 2, seed: int = 1) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return 0.3 * torch.randn(batch, int(seconds * 16000), generator=g) + 0.05  # non-zero mean, std 0.3


def build(name: str, **config) -> SpeechClassifier:
    torch.manual_seed(0)
    return create_model(name, num_classes=C, **config)


def hf_tiny(family: str, pretraining: bool = False, **fields):
    config_cls, model_cls = FAMILIES[family]
    if pretraining:
        model_cls = transformers.Wav2Vec2ForPreTraining
    torch.manual_seed(5)
    return model_cls(config_cls(**{**TINY, **fields}))


def test_speech_names_are_registered_with_their_config_keys():
    assert set(SPEECH_MODELS) <= set(list_models())
    assert set(TINY_NAMES) | {"wav2vec2_base", "hubert_base", "wavlm_base_plus", "wav2vec2_large", "hubert_large",
                              "xls_r_300m"} == set(SPEECH_MODELS)
    keys = model_config_keys("wav2vec2_base")
    assert {"num_classes", "weights", "normalize", "head", "protocol_masking", "gradient_checkpointing",
            "attn_implementation", "backbone_config", "pos_embed", "strict_weights", "overrides"} <= keys
    with pytest.raises(LungsoundError, match="unknown config key"):
        create_model("wav2vec2_tiny", hidden=3)
    assert CHECKPOINTS["wav2vec2_base"].hub_id == "facebook/wav2vec2-base"
    assert CHECKPOINTS["wavlm_base_plus"].normalize is False and CHECKPOINTS["wav2vec2_large"].normalize is True
    with pytest.raises(LungsoundError, match="'wavlm_tiny' has no published weights"):
        create_model("wavlm_tiny", weights="default")


@pytest.mark.parametrize("name", TINY_NAMES)
def test_tiny_forward_shapes_and_linear_head(name):
    model = build(name).eval()
    x = wave()
    with torch.no_grad():
        z = model.forward_features(x)
        logits = model(x)
        hidden = model.backbone(input_values=model.normalize_input(x)).last_hidden_state
    assert z.shape == (2, 64) and logits.shape == (2, C) and model.feature_dim == 64
    assert hidden.shape == (2, 99, 64)  # 32000 samples through strides 5*4*4*4 = 320: 99 frames
    torch.testing.assert_close(z, hidden.mean(dim=1))
    assert isinstance(model.head, torch.nn.Linear)
    torch.testing.assert_close(logits, z @ model.head.weight.T + model.head.bias)
    torch.testing.assert_close(model.forward_head(z), logits)
    with pytest.raises(LungsoundError, match="has no patch tokens"):
        model.forward_features(x, patch_hook=lambda e: e)
    with pytest.raises(LungsoundError, match=r"L >= 345 samples, got \(2, 300\)"):
        model(torch.zeros(2, 300))
    with pytest.raises(LungsoundError, match="waveform batch"):
        model(torch.zeros(2, 1, 32000))


def test_layernorm_linear_head_and_bad_values():
    model = build("hubert_tiny", head="layernorm_linear").eval()
    x = wave()
    with torch.no_grad():
        z, logits = model.forward_features(x), model(x)
    norm, fc = model.head.norm, model.head.fc
    expected = F.linear(F.layer_norm(z, (64,), norm.weight, norm.bias, norm.eps), fc.weight, fc.bias)
    torch.testing.assert_close(logits, expected)
    with pytest.raises(LungsoundError, match="head must be"):
        build("hubert_tiny", head="mlp")
    with pytest.raises(LungsoundError, match="protocol_masking must be"):
        build("hubert_tiny", protocol_masking="none")
    with pytest.raises(LungsoundError, match="not divisible"):
        build("hubert_tiny", overrides=dict(num_attention_heads=3))
    with pytest.raises(LungsoundError, match="unknown hubert config field 'hiden_size'"):
        build("hubert_tiny", overrides=dict(hiden_size=3))


@pytest.mark.parametrize("name, pretraining", [("wav2vec2_tiny", True), ("hubert_tiny", False), ("wavlm_tiny", False)])
def test_weights_from_a_save_pretrained_folder_are_loaded_exactly(tmp_path, name, pretraining):
    hf = hf_tiny(FAMILY_OF_TINY[name], pretraining)
    hf.save_pretrained(tmp_path)
    # pos_embed / strict_weights come from the trainer's build_model; the pretraining head's keys are not ours.
    model = build(name, weights=str(tmp_path), pos_embed="paper", strict_weights=True)
    source = (hf.wav2vec2 if pretraining else hf).state_dict()
    ours = model.backbone.state_dict()
    assert ours.keys() == source.keys()
    for key, value in source.items():
        assert torch.equal(ours[key], value), key


def test_strict_weights_fails_on_missing_keys_and_wrong_family(tmp_path):
    hf_tiny("wav2vec2", mask_time_prob=0.0, mask_feature_prob=0.0).save_pretrained(tmp_path)  # no masked_spec_embed
    with pytest.raises(LungsoundError, match=r"strict_weights\): missing \['masked_spec_embed'\]"):
        build("wav2vec2_tiny", weights=str(tmp_path), overrides=dict(mask_time_prob=0.05))
    loose = build("wav2vec2_tiny", weights=str(tmp_path), overrides=dict(mask_time_prob=0.05), strict_weights=False)
    assert loose.speech_masking_params()["mask_time_prob"] == 0.05
    with pytest.raises(LungsoundError, match="describes a 'wav2vec2' model, not 'hubert'"):
        build("hubert_tiny", weights=str(tmp_path))
    with pytest.raises(LungsoundError, match="folder does not exist"):
        build("hubert_tiny", weights=str(tmp_path / "absent"))
    (tmp_path / "config.json").unlink()
    with pytest.raises(LungsoundError, match="config.json is missing"):
        build("wav2vec2_tiny", weights=str(tmp_path))


def test_in_model_normalisation_equals_the_feature_extractor():
    model = build("wav2vec2_tiny")
    x = wave(batch=3, seconds=1.5)
    x[2] = x[2] * 4 - 1  # rows with different scales and offsets
    extractor = transformers.Wav2Vec2FeatureExtractor(do_normalize=True, return_attention_mask=False)
    expected = extractor([r.numpy() for r in x], sampling_rate=16000, return_tensors="pt").input_values
    torch.testing.assert_close(model.normalize_input(x), expected, rtol=1e-5, atol=1e-6)
    # By hand: [1, 2, 3, 4] has mean 2.5 and population variance 1.25.
    hand = model.normalize_input(torch.tensor([[1.0, 2.0, 3.0, 4.0]]))
    torch.testing.assert_close(hand, (torch.tensor([[1.0, 2.0, 3.0, 4.0]]) - 2.5) / np.sqrt(1.25 + 1e-7))
    # The backbone is fed the normalised waveform inside forward.
    seen = []
    model.backbone.register_forward_pre_hook(lambda m, a, kw: seen.append(kw["input_values"]), with_kwargs=True)
    model.eval()(x)
    torch.testing.assert_close(seen[0], expected, rtol=1e-5, atol=1e-6)
    raw = build("wav2vec2_tiny", normalize=False)
    assert torch.equal(raw.normalize_input(x), x) and raw.normalize_source == "config"


def test_normalize_follows_the_preprocessor_config_next_to_the_weights(tmp_path):
    hf_tiny("wav2vec2").save_pretrained(tmp_path)
    assert build("wav2vec2_tiny", weights=str(tmp_path)).normalize is True  # no preprocessor config: the table
    transformers.Wav2Vec2FeatureExtractor(do_normalize=False).save_pretrained(tmp_path)
    model = build("wav2vec2_tiny", weights=str(tmp_path))
    assert model.normalize is False and model.normalize_source.endswith("preprocessor_config.json")
    assert build("wav2vec2_tiny", weights=str(tmp_path), normalize=True).normalize is True


def test_protocol_masking_off_means_no_masking_and_no_layerdrop(tmp_path):
    hf_tiny("wav2vec2", mask_time_prob=0.5, mask_feature_prob=0.2, layerdrop=0.3, **NO_DROPOUT).save_pretrained(tmp_path)
    kept = build("wav2vec2_tiny", weights=str(tmp_path))
    assert kept.speech_masking_params() == {"mask_time_prob": 0.5, "mask_time_length": 10, "mask_feature_prob": 0.2,
                                            "layerdrop": 0.3}
    off = build("wav2vec2_tiny", weights=str(tmp_path), protocol_masking="off")
    assert off.speech_masking_params() == {"mask_time_prob": 0.0, "mask_time_length": 10, "mask_feature_prob": 0.0,
                                           "layerdrop": 0.0}
    x = wave()
    with torch.no_grad():
        off.eval()
        assert torch.equal(off(x), off(x))
        off.train()  # no dropout in this config: with masking and layerdrop off, training forwards repeat exactly
        assert torch.equal(off(x), off(x))
        kept.train()
        assert not torch.equal(kept(x), kept(x))  # the checkpoint's time masks (p = 0.5) change every call
    # The saved architecture keeps the checkpoint's masking values (and its masked_spec_embed parameter).
    assert off.backbone_config()["mask_time_prob"] == 0.5 and "backbone.masked_spec_embed" in dict(off.named_parameters())


@pytest.mark.parametrize("name", TINY_NAMES)
def test_rebuild_from_backbone_config_without_network(name, monkeypatch):
    model = build(name, overrides=dict(hidden_size=32, intermediate_size=48, layerdrop=0.2),
                  protocol_masking="off").eval()
    params = model.rebuild_params()
    assert params["backbone_config"]["hidden_size"] == 32 and params["backbone_config"]["layerdrop"] == 0.2
    model_cls = FAMILIES[FAMILY_OF_TINY[name]][1]

    def no_download(*args, **kwargs):
        raise AssertionError("from_pretrained must not be called")

    monkeypatch.setattr(model_cls, "from_pretrained", no_download)
    other = "hubert_tiny" if name != "hubert_tiny" else "wav2vec2_tiny"
    torch.manual_seed(123)  # a different random init, overwritten by the saved weights
    rebuilt = create_model(name, num_classes=C, protocol_masking="off", **params).eval()
    assert rebuilt.load_state_dict(model.state_dict(), strict=True)  # same keys and shapes
    assert rebuilt.speech_masking_params()["layerdrop"] == 0.0
    x = wave()
    with torch.no_grad():
        torch.testing.assert_close(rebuilt(x), model(x))
    with pytest.raises(LungsoundError, match="backbone_config is a"):
        create_model(other, **params)


@pytest.mark.parametrize("name", HUB_NAMES)
def test_hub_names_refuse_offline_with_a_clear_message(name):
    from huggingface_hub import try_to_load_from_cache

    hub_id = CHECKPOINTS[name].hub_id
    if isinstance(try_to_load_from_cache(hub_id, "config.json"), str):
        pytest.skip(f"{hub_id} is in the local Hugging Face cache")
    for weights in ("default", hub_id):
        with pytest.raises(LungsoundError) as info:
            create_model(name, weights=weights)
        message = str(info.value)
        assert hub_id in message and "local folder" in message and "model.pretrained=" in message
        assert "\n" not in message


@pytest.mark.parametrize("name", HUB_NAMES)
def test_hub_names_build_from_a_tiny_override_of_their_architecture(name):
    spec = CHECKPOINTS[name]
    model = build(name, overrides={**TINY, "hidden_size": 32, "num_hidden_layers": 1}).eval()
    hf = model.backbone.config
    assert (hf.hidden_size, hf.num_hidden_layers, model.feature_dim) == (32, 1, 32)
    large = spec.arch.get("do_stable_layer_norm", False)
    assert hf.do_stable_layer_norm is large and hf.feat_extract_norm == ("layer" if large else "group")
    assert model.normalize is spec.normalize
    with torch.no_grad():
        assert model(wave()).shape == (2, C)


def test_attention_implementation_defaults_and_eager_matches_sdpa():
    assert build("wav2vec2_tiny").backbone.config._attn_implementation == "sdpa"
    assert build("hubert_tiny").backbone.config._attn_implementation == "sdpa"
    assert build("wavlm_tiny").backbone.config._attn_implementation == "eager"  # WavLM has no sdpa in transformers
    with pytest.raises(LungsoundError, match="WavLMModel does not support sdpa"):
        build("wavlm_tiny", attn_implementation="sdpa")
    with pytest.raises(LungsoundError, match="attn_implementation must be null or one of sdpa, eager"):
        build("hubert_tiny", attn_implementation="flash")
    sdpa = build("hubert_tiny").eval()
    eager = build("hubert_tiny", attn_implementation="eager").eval()
    eager.load_state_dict(sdpa.state_dict())
    x = wave()
    with torch.no_grad():
        torch.testing.assert_close(eager(x), sdpa(x), rtol=1e-4, atol=1e-5)


def test_gradient_checkpointing_gives_the_same_gradients():
    x, y = wave(), torch.tensor([0, 2])
    grads = []
    for checkpointing in (False, True):
        model = build("wav2vec2_tiny", gradient_checkpointing=checkpointing, protocol_masking="off",
                      overrides=NO_DROPOUT).train()
        assert any(getattr(m, "gradient_checkpointing", False) for m in model.backbone.modules()) is checkpointing
        F.cross_entropy(model(x), y).backward()
        grads.append({n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None})
    assert grads[0].keys() == grads[1].keys() and "backbone.feature_extractor.conv_layers.0.conv.weight" in grads[0]
    for key in grads[0]:
        torch.testing.assert_close(grads[1][key], grads[0][key], rtol=1e-4, atol=1e-6)
