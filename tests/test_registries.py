"""Every registry, entry by entry: each registered model builds from its spec at tiny size and runs one forward pass on
an input of its own kind at its own sample rate; the pipeline cuts cycles at a model's rate; each model's and each
objective's paper is a known reference and each objective has card words; the representation vocabulary; the
`Registry` helper itself."""

from __future__ import annotations

import dataclasses
import subprocess
import sys

import numpy as np
import pytest
import torch

from lungsound.config import REPRESENTATIONS, load_config
from lungsound.data.cycles import CycleConfig, load_cycles
from lungsound.errors import LungsoundError
from lungsound.external import ADAPTERS
from lungsound.features.fbank import FbankConfig, compute_features_batch
from lungsound.methods import OBJECTIVES, list_objectives, objective_spec
from lungsound.methods.repaugment import RepAugment
from lungsound.models import list_models, model_spec
from lungsound.models.build import build_model, input_configs
from lungsound.models.registry import MODELS
from lungsound.models.clap import TINY as CLAP_TINY
from lungsound.models.speech import TINY
from lungsound.registry import Registry
from lungsound.sharing.references import PAPERS, method_words, references_for
from lungsound.training.data import build_run_data

SECONDS = 1.0
BATCH = 2


def experiment(name: str, *overrides: str):
    """The default experiment with model `name`, its input kind, and `SECONDS`-long cycles."""
    waveform = model_spec(name).input == "waveform"
    extra = ["data.input=waveform", "augment.specaug=false"] if waveform else []
    return load_config(None, [f"model.name={name}", f"data.duration={SECONDS}", *extra, *overrides])


def tiny_params(name: str) -> dict:
    """Small sizes read off the spec, not the name: a speech encoder's tiny architecture, an AST's width and depth
    (CNNs, EfficientAT mn04 too, are small already)."""
    spec = model_spec(name)
    if {"backbone_config", "feature_extractor"} <= spec.params.keys:  # CLAP: a tiny text and audio tower
        return {"overrides": dict(CLAP_TINY)}
    if "overrides" in spec.params.keys:  # a speech encoder
        return {"overrides": dict(TINY)}
    if {"embed_dim", "depth", "num_heads"} <= spec.params.keys:
        return {"embed_dim": 32, "depth": 1, "num_heads": 2}
    return {}


@pytest.fixture
def model_at(monkeypatch):
    """Registers, for one test, a copy of a registered model's spec under a new name with another sample rate."""
    def register(name: str, base: str, sample_rate: int):
        monkeypatch.setitem(MODELS._items, name, dataclasses.replace(model_spec(base), name=name,
                                                                     sample_rate=sample_rate))
    return register


# ------------------------------------------------------------------------------------------------------------ models


@pytest.mark.parametrize("name", list_models())
def test_every_model_builds_from_its_spec_and_runs_on_its_own_input(name):
    spec = model_spec(name)
    cfg = experiment(name)
    cfg.model.params = tiny_params(name)
    torch.manual_seed(0)
    model = build_model(cfg, load_weights=False).eval()
    cycle_cfg, fbank_cfg = input_configs(cfg)
    assert cycle_cfg.sample_rate == spec.sample_rate and cycle_cfg.length == int(SECONDS * spec.sample_rate)
    waves = 0.1 * torch.randn(BATCH, int(SECONDS * spec.sample_rate), generator=torch.Generator().manual_seed(1))
    if spec.input == "fbank":
        x = compute_features_batch(waves, fbank_cfg)
        assert x.shape == (BATCH, 98, 128)  # 1 + (16,000 - 400) // 160 frames of 10 ms
    else:
        assert fbank_cfg is None
        x = waves
    with torch.no_grad():
        logits = model(x)
    assert logits.shape == (BATCH, 4) and bool(torch.isfinite(logits).all())


@pytest.mark.parametrize("name", list_models())
def test_every_model_names_a_known_paper_and_card_words(name):
    spec = model_spec(name)
    assert spec.paper is None or spec.paper in PAPERS
    assert spec.architecture.strip() and spec.name == name


def test_at_16_khz_the_pipeline_configs_are_those_of_every_published_recipe():
    """Bit-exact ICBHI results: the same cycle and fbank configs (so the same cache key and arrays) as before the
    rate was read off the spec (16 kHz models; EfficientAT's own 32 kHz and CLAP's 48 kHz are left out)."""
    for name in (n for n in list_models() if model_spec(n).sample_rate == 16000):
        cycle_cfg, fbank_cfg = input_configs(experiment(name, "data.pad=zero"))
        assert cycle_cfg == CycleConfig(sample_rate=16000, duration=SECONDS, pad="zero")
        assert fbank_cfg == (FbankConfig(sample_rate=16000, frame_shift_ms=10.0) if model_spec(name).input == "fbank"
                             else None)


@pytest.mark.parametrize("base", ["resnet18", "wav2vec2_tiny"])
def test_the_pipeline_cuts_cycles_at_the_models_own_rate(base, model_at, tiny_icbhi):
    model_at("at_32k", base, 32000)
    cfg = experiment("at_32k", f"data.root={tiny_icbhi}", "data.duration=2.0")
    cycle_cfg, fbank_cfg = input_configs(cfg)
    assert cycle_cfg == CycleConfig(sample_rate=32000, duration=2.0)
    assert fbank_cfg is None or (fbank_cfg.sample_rate, fbank_cfg.frame_shift_ms) == (32000, 10.0)
    data = build_run_data(cfg, progress=False)
    rec = data.test.recordings[0]  # its cycles are the split's first items
    waves = load_cycles(rec.audio, rec.cycles, cycle_cfg)
    assert waves.shape == (len(rec.cycles), 64000)
    want = waves if fbank_cfg is None else compute_features_batch(waves, fbank_cfg).numpy()
    got = np.stack([data.test[i].x.numpy() for i in range(len(rec.cycles))])
    np.testing.assert_array_equal(got, want)
    if fbank_cfg is not None:  # 198 frames at either rate, but of a 16-kHz band, not an 8-kHz one
        at_16k = compute_features_batch(load_cycles(rec.audio, rec.cycles, CycleConfig(duration=2.0)), FbankConfig())
        assert got.shape == tuple(at_16k.shape) == (len(rec.cycles), 198, 128)
        assert not np.allclose(got, at_16k.numpy(), atol=1e-3)


def test_the_feature_cache_keeps_each_rate_apart(model_at, tiny_icbhi):
    from lungsound.data.cache import cache_root

    model_at("at_32k", "resnet18", 32000)
    before = {p.name for p in cache_root().iterdir()} if cache_root().is_dir() else set()
    for name in ("resnet18", "at_32k"):
        build_run_data(experiment(name, f"data.root={tiny_icbhi}", "data.duration=2.0"), progress=False)
    new = {p.name for p in cache_root().iterdir() if p.is_dir() and not p.name.startswith(".")} - before
    assert len(new) == 4  # train and test split, at 16 and at 32 kHz


def test_a_card_of_an_unknown_model_is_an_error_not_a_guess():
    cfg = load_config(None, ["method.name=ce"])
    cfg.model.name = "vit_huge"  # e.g. a folder written by a newer lungsound
    with pytest.raises(LungsoundError, match=r"unknown model 'vit_huge'; known: .*ast, ast_tiny"):
        references_for(cfg, synthetic=False)


# -------------------------------------------------------------------------------------------------------- objectives


@pytest.mark.parametrize("name", list_objectives())
def test_every_objective_states_card_words_and_a_known_paper(name):
    spec = objective_spec(name)
    assert spec.name == name and spec.card.strip() and spec.reason.strip()
    assert spec.paper is None or spec.paper in PAPERS
    assert isinstance(spec.uses_domain, bool)
    configured = spec.as_configured({"domain": "generated"})
    assert configured.card.strip() and (configured.paper is None or configured.paper in PAPERS)


def test_the_objectives_registrations_hold_their_papers_and_domains():
    table = {name: (objective_spec(name).paper, objective_spec(name).uses_domain) for name in list_objectives()}
    assert table == {"ce": (None, False), "patchmix_ce": ("PMCL", False), "patchmix_cl": ("PMCL", False),
                     "sgscl": ("SGSCL", True), "dat": ("SGSCL", True), "compose": (None, True),
                     "mixup": ("MIXUP", False)}
    aft = objective_spec("dat").as_configured({"domain": "generated"})
    assert (aft.paper, aft.reason) == ("AFT", "adversarial fine-tuning with generated sounds")
    assert objective_spec("dat").as_configured({"domain": "sex"}) is objective_spec("dat")
    assert objective_spec("ce").fine_tuning and not objective_spec("sgscl").fine_tuning
    assert objective_spec("mixup").fine_tuning


def test_a_composed_method_is_named_by_its_parts_as_they_are_configured():
    cfg = load_config(None, ["method.name=compose"])
    cfg.method.params = {"parts": ["patchmix_cl", {"name": "dat", "domain": "generated"}]}
    assert method_words(cfg) == ("Patch-Mix contrastive learning + adversarial fine-tuning on real and generated "
                                 "sounds, AFT (`compose`)")
    cfg.method.params = {"parts": "patchmix_cl"}  # not a list: the constructor refuses it; the card names the method
    assert method_words(cfg) == "a sum of several methods' auxiliary terms (`compose`)"


def test_an_unknown_method_lists_the_known_ones():
    with pytest.raises(LungsoundError, match=r"unknown method 'patchmix'; known: ce, compose, dat, mixup, patchmix_ce"):
        objective_spec("patchmix")


# ---------------------------------------------------------------------------------------------------- vocabularies


@pytest.mark.parametrize("mode", [m for m in REPRESENTATIONS if m != "none"])
def test_every_representation_mode_runs_and_is_named_on_the_card(mode):
    rep = RepAugment(mode=mode, max_width=8, gate=False, fill="zero").train()
    z = torch.randn(6, 8, generator=torch.Generator().manual_seed(1))
    out = rep(z, torch.tensor([0, 1, 2, 3, 1, 2]), generator=torch.Generator().manual_seed(0))
    assert out.shape == (6, 8) and not torch.equal(out, z)  # each mode changes something in training
    cfg = load_config(None, [f"augment.representation={mode}", "augment.specaug=false"])
    assert method_words(cfg).endswith(f" + {REPRESENTATIONS[mode]} on the representation")


def test_an_unknown_representation_is_refused_with_the_four_names():
    with pytest.raises(LungsoundError, match="augment.representation must be one of none, rep_mask, rep_gen, "
                                             "repaugment, got 'rep_mix'"):
        load_config(None, ["augment.representation=rep_mix"])


def test_reading_an_experiment_file_does_not_load_torch():
    code = "import sys, lungsound.config; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


# ---------------------------------------------------------------------------------------------------- the helper


def test_the_registry_refuses_a_second_name_and_lists_the_known_ones():
    things = Registry("widget")
    things.add("b", 2)
    assert things.register("a")(1) == 1
    with pytest.raises(ValueError, match="widget name 'a' is already registered"):
        things.add("a", 3)
    with pytest.raises(LungsoundError, match=r"^unknown widget 'c'; known: a, b$"):
        things.get("c")
    assert things.names() == ["a", "b"] and list(things) == ["a", "b"] and len(things) == 2 and "a" in things
    with pytest.raises(ValueError, match="already registered"):
        MODELS.add("ast", model_spec("ast"))
    with pytest.raises(ValueError, match="already registered"):
        OBJECTIVES.add("ce", objective_spec("ce"))


def test_the_external_adapters_are_a_registry():
    assert ADAPTERS.names() == ["kauh"] and ADAPTERS.get("kauh").name == "kauh"
    with pytest.raises(LungsoundError, match="unknown external dataset 'icbhi'; known: kauh"):
        ADAPTERS.get("icbhi")
