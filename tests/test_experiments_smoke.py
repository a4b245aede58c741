"""Every experiment file runs: two training steps of its method on a small built-in (synthetic) set, on CPU."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

import json

from lungsound.config import load_config
from lungsound.data.synthetic import generate
from lungsound.models import model_spec
from lungsound.models.clap import TINY as CLAP_TINY
from lungsound.models.speech import CHECKPOINTS
from tests.conftest import write_generated_set
from lungsound.training.run import fit

ALL_FILES = sorted((Path(__file__).resolve().parents[1] / "experiments").glob("*.yaml"))
VOCODERS = [p for p in ALL_FILES if p.stem.startswith("vocoder_")]  # generation configs, not classifier experiments
EXPERIMENTS = [p for p in ALL_FILES if p not in VOCODERS]


@pytest.fixture(scope="module")
def builtin_small(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("builtin") / "synthetic"
    generate(root, n_recordings=16, seed=3, workers=1, progress=False)
    return root


@pytest.fixture(scope="module")
def builtin_all_classes(tmp_path_factory) -> Path:
    """16 recordings whose training split holds every class under both protocols (44 / 9 / 3 / 8 cycles; 26 / 2 / 2 / 6
    without the clean protocol's validation patients): the oversampler needs each."""
    root = tmp_path_factory.mktemp("builtin-all") / "synthetic"
    generate(root, n_recordings=16, seed=7, workers=1, progress=False)
    return root


def small_model(name: str) -> list[str]:
    """Overrides for a small model of the same kind, read off the spec: the tiny speech model of the family, a CLAP with
    tiny towers (the same registration, so the metadata path is the file's), a waveform CNN as it is (EfficientAT mn04
    is small already), else the tiny AST."""
    if name in CHECKPOINTS:
        return [f"model.name={CHECKPOINTS[name].family}_tiny"]
    spec = model_spec(name)
    if {"backbone_config", "feature_extractor"} <= spec.params.keys:
        return [f"model.name={name}", f"model.params.overrides={json.dumps(CLAP_TINY)}"]
    if spec.input == "waveform":
        return [f"model.name={name}"]
    return ["model.name=ast_tiny"]


@pytest.mark.parametrize("path", EXPERIMENTS, ids=lambda p: p.stem)
def test_experiment_runs_two_steps(path, builtin_small, request, tmp_path):
    # The experiment's own method, augmentation and protocol; a tiny model of the same kind (a tiny AST, or the tiny
    # speech model of the same family, 64-d, so the Rep-Mask bound is its share 0.375 D rather than the absolute 288)
    # and short cycles so each runs in seconds.
    name = load_config(path).model.name
    if load_config(path).data.balance == "oversample":
        builtin_small = request.getfixturevalue("builtin_all_classes")  # built only for these files
    generated = []  # [AFT] rows train on a generated set: a small hand-made one here
    if load_config(path).data.generated:
        generated = [f"data.generated={write_generated_set(builtin_small, tmp_path / 'generated', per_recording=1)}"]
    cfg = load_config(path, [f"data.root={builtin_small}", "data.duration=2.0", *small_model(name),
                             "model.pretrained=null", "train.epochs=1", "train.max_steps_per_epoch=2",
                             "train.batch_size=4", f"tracking.output_dir={tmp_path}",
                             "augment.rep_max_width_ratio=0.375", *generated])
    result = fit(cfg, progress=False, track=False)
    assert result.finished and len(result.history) == 1
    logs = result.history[0]
    assert math.isfinite(logs["train_loss"]) and 0 <= logs["test_score"] <= 100
    if cfg.train.protocol == "clean":
        assert "val_score" in logs
    if cfg.method.name != "ce":
        method_terms = {"patchmix_cl": "train_loss_cl", "sgscl": "train_loss_sg", "dat": "train_loss_domain"}
        key = method_terms.get(cfg.method.name)
        assert key is None or math.isfinite(logs[key])


@pytest.mark.parametrize("path", VOCODERS, ids=lambda p: p.stem)
def test_vocoder_file_runs_two_steps(path, builtin_small, tmp_path):
    from lungsound.generation.loop import train_vocoder
    from lungsound.generation.train import load_vocoder_config

    cfg = load_vocoder_config(path, [f"data.root={builtin_small}", "model.residual_layers=2",
                                     "model.residual_channels=4", "train.steps=2", "train.batch_size=2",
                                     "data.crop_frames=4", f"tracking.output_dir={tmp_path}"])
    out = train_vocoder(cfg, progress=False, track=False)
    assert out["finished"] and math.isfinite(out["loss"]) and (out["vocoder"] / "model.safetensors").is_file()
