"""Model registry and the shared model contract (methods.md sections 3, 4 and 7), on tiny models."""

from __future__ import annotations

import copy
import os

os.environ["HF_HUB_OFFLINE"] = "1"

import pytest
import torch
import torch.nn.functional as F
import torchaudio

from lungsound.errors import LungsoundError
from lungsound.models import AST, create_model, frames_for_duration, list_models, model_spec, patch_grid

# Waveform models (speech: test_speech_models.py; CLAP: test_clap.py) take no fbank batch.
FBANK_MODELS = [name for name in list_models() if model_spec(name).input == "fbank"]

# Small sizes for the registered models (the full-size AST would take seconds per forward on CPU).
SMALL = {"ast": dict(embed_dim=32, depth=1, num_heads=2), "ast_tiny": {}}
NUM_CLASSES = 3


def build(name: str, seconds: float = 8, **extra):
    config = dict(SMALL.get(name, {}), num_classes=NUM_CLASSES, **extra)
    if name.startswith("ast"):
        config["input_frames"] = frames_for_duration(seconds)
    torch.manual_seed(0)
    return create_model(name, **config)


def fbank_batch(seconds: float, batch: int = 2) -> torch.Tensor:
    torch.manual_seed(1)
    return torch.randn(batch, frames_for_duration(seconds), 128)


def test_registry_lists_the_models_and_rejects_unknown_names_and_keys():
    assert {"ast", "ast_tiny", "resnet18", "efficientnet_b0", "cnn"} <= set(list_models())
    assert list_models() == sorted(list_models())
    with pytest.raises(LungsoundError, match=r"unknown model 'vit_huge'; known: .*ast, ast_tiny"):
        create_model("vit_huge")
    with pytest.raises(LungsoundError, match=r"unknown config key\(s\) depht for model 'ast_tiny'; known keys: .*depth"):
        create_model("ast_tiny", depht=3)
    with pytest.raises(LungsoundError, match="model 'resnet18' fixes arch='resnet18'"):
        create_model("resnet18", arch="resnet50")


def test_frame_counts_and_grids_match_kaldi_fbank():
    for seconds, frames, grid in ((8, 798, (12, 79)), (5, 498, (12, 49))):
        wave = torch.randn(1, seconds * 16000)
        fbank = torchaudio.compliance.kaldi.fbank(wave, htk_compat=True, sample_frequency=16000, use_energy=False,
                                                  window_type="hanning", num_mel_bins=128, dither=0.0, frame_shift=10)
        assert fbank.shape[0] == frames_for_duration(seconds) == frames
        assert patch_grid(128, frames) == grid
    assert patch_grid(128, 1024) == (12, 101)
    with pytest.raises(LungsoundError, match="shorter than one"):
        frames_for_duration(0.01)


def test_ast_config_maps_to_transformers():
    model = create_model("ast_tiny")
    hf = model.backbone.config
    assert (hf.hidden_size, hf.num_hidden_layers, hf.num_attention_heads, hf.intermediate_size) == (64, 2, 2, 256)
    assert (hf.max_length, hf.frequency_stride, hf.time_stride, hf.patch_size) == (798, 10, 10, 16)
    assert hf._attn_implementation == "sdpa"
    assert model.grid == (12, 79) and model.num_patches == 948
    assert model.backbone.embeddings.position_embeddings.shape == (1, 950, 64)
    with pytest.raises(LungsoundError, match="not divisible"):
        create_model("ast_tiny", embed_dim=30, num_heads=4)


@pytest.mark.parametrize("seconds", [8, 5])
@pytest.mark.parametrize("name", FBANK_MODELS)
def test_forward_contract(name, seconds):
    model = build(name, seconds).eval()
    x = fbank_batch(seconds)
    with torch.no_grad():
        z = model.forward_features(x)
        logits = model(x)
    assert z.shape == (2, model.feature_dim) and logits.shape == (2, NUM_CLASSES)
    assert model.num_classes == NUM_CLASSES
    # The head is LayerNorm(D) + Linear(D, n): check against the functional form.
    norm, fc = model.head.norm, model.head.fc
    expected = F.linear(F.layer_norm(z, (model.feature_dim,), norm.weight, norm.bias, norm.eps), fc.weight, fc.bias)
    torch.testing.assert_close(logits, expected)
    torch.testing.assert_close(model.forward_head(z), logits)


@pytest.mark.parametrize("name", FBANK_MODELS)
def test_gradients_reach_every_parameter(name):
    model = build(name).train()
    loss = F.cross_entropy(model(fbank_batch(8)), torch.tensor([0, 2]))
    loss.backward()
    for pname, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), pname
    assert model.head.fc.weight.grad.abs().sum() > 0
    first = next(p for n, p in model.backbone.named_parameters() if p.dim() == 4)  # the first conv / patch projection
    assert first.grad.abs().sum() > 0


@pytest.mark.parametrize("name", FBANK_MODELS)
def test_patch_hook_support_is_declared_truthfully(name):
    model = build(name).eval()
    calls = []
    hook = lambda e: calls.append(e.shape) or e  # noqa: E731
    if model.supports_patch_hook:
        model.forward_features(fbank_batch(8), patch_hook=hook)
        assert calls == [(2, model.num_patches, model.feature_dim)]
    else:
        with pytest.raises(LungsoundError, match="has no patch tokens"):
            model.forward_features(fbank_batch(8), patch_hook=hook)


def randomised_ast(seconds: float = 8) -> AST:
    model = build("ast_tiny", seconds).eval()
    with torch.no_grad():  # HF initialises tokens and position embeddings to zero; make them matter
        for p in model.backbone.embeddings.parameters():
            p.normal_(0, 0.5)
    return model


@pytest.mark.parametrize("seconds", [8, 5])
def test_patch_hook_sees_the_bare_patch_projection(seconds):
    model = randomised_ast(seconds)
    x = fbank_batch(seconds)
    seen = []
    model.forward_features(x, patch_hook=lambda e: seen.append(e.detach().clone()) or e)
    proj = model.backbone.embeddings.patch_embeddings.projection
    # Independent patch embedding: the fbank as a (freq x time) image, conv with stride (10, 10), freq-major tokens.
    image = x.transpose(1, 2).unsqueeze(1)
    expected = F.conv2d(image, proj.weight, proj.bias, stride=(10, 10)).flatten(2).transpose(1, 2)
    assert len(seen) == 1 and seen[0].shape == (2, model.num_patches, model.feature_dim)
    torch.testing.assert_close(seen[0], expected)  # no cls/dist token, no position embedding yet


def test_patch_hook_output_is_used_where_patch_mix_needs_it():
    model = randomised_ast()
    x = fbank_batch(8)
    with torch.no_grad():
        plain = model.forward_features(x)
        assert torch.equal(model.forward_features(x, patch_hook=lambda e: e), plain)
        zeroed = model.forward_features(x, patch_hook=torch.zeros_like)
        shifted = model.forward_features(x, patch_hook=lambda e: e + 0.25)
        # Reference: the same effects produced by the patch projection's own parameters, without a hook.
        reference = copy.deepcopy(model)
        proj = reference.backbone.embeddings.patch_embeddings.projection
        proj.weight.zero_()
        proj.bias.zero_()
        torch.testing.assert_close(zeroed, reference.forward_features(x))
        proj = copy.deepcopy(model)
        proj.backbone.embeddings.patch_embeddings.projection.bias.add_(0.25)
        torch.testing.assert_close(shifted, proj.forward_features(x))
    assert not torch.allclose(zeroed, plain)
    assert not model.backbone.embeddings.patch_embeddings._forward_hooks  # the hook is removed after the call
    with pytest.raises(LungsoundError, match=r"patch_hook must return patch tokens of shape \(2, 948, 64\)"):
        model.forward_features(x, patch_hook=lambda e: e[:, :10])


def test_pooled_feature_is_mean_of_cls_and_dist_after_final_layernorm():
    model = randomised_ast()
    x = fbank_batch(8)
    with torch.no_grad():
        out = model.backbone(x, output_hidden_states=True)
        last = model.backbone.layernorm(out.hidden_states[-1])  # the last block's output, before the final norm
        expected = (last[:, 0] + last[:, 1]) / 2
        torch.testing.assert_close(model.forward_features(x), expected)


def test_attentions_on_request_with_eager_attention():
    model = randomised_ast()
    x = fbank_batch(8)
    with torch.no_grad():
        z, attentions = model.forward_features(x, output_attentions=True)
        plain = model.forward_features(x)
    assert len(attentions) == 2 and attentions[0].shape == (2, 2, 950, 950)
    torch.testing.assert_close(attentions[1].sum(-1), torch.ones(2, 2, 950))
    torch.testing.assert_close(z, plain, atol=1e-5, rtol=1e-4)
    assert model.backbone.config._attn_implementation == "sdpa"  # restored after the call


def test_wrong_input_shape_names_the_expected_shape():
    with pytest.raises(LungsoundError, match=r"expects an fbank batch of shape \(B, 798, 128\).*got \(2, 498, 128\)"):
        build("ast_tiny")(fbank_batch(5))
    with pytest.raises(LungsoundError, match=r"\(B, T, 128\).*got \(2, 798, 64\)"):
        build("resnet18")(torch.zeros(2, 798, 64))
