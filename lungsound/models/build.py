"""Building a classifier from an experiment config: the one place that turns `cfg.model` into an `nn.Module`.

`input_configs(cfg)` says how the pipeline makes the experiment's model input: cycles cut at the model's own sample rate
(`ModelSpec.sample_rate`, 16 kHz for every published recipe) and, for an fbank model, the Kaldi fbank at that rate and
the spec's frame rate. `build_model(cfg)` checks that the model exists and takes the experiment's input
(`ModelSpec.input`), fills in what the pipeline derives (the class count, an AST's `input_frames` from the clip length
at the spec's rate, a speech model's protocol-dependent masking, a metadata model's options from method.params) and loads pretrained weights only when asked:
rebuilding a saved model folder (`lungsound.models.folder`) never fetches anything. `checkpoint_config` adds what
rebuilds a model offline (a speech model's backbone config).
"""

from __future__ import annotations

import copy

from torch import nn

from lungsound.config import ExperimentConfig
from lungsound.data.cycles import CycleConfig
from lungsound.data.labels import CLASSES
from lungsound.errors import LungsoundError
from lungsound.features.fbank import FbankConfig, frames_for_duration
from lungsound.models.registry import create_model, metadata_params, model_spec


def check_model_input(cfg: ExperimentConfig) -> None:
    """A one-line error unless the model exists and data.input is what its spec says it takes."""
    wants = model_spec(cfg.model.name).input  # an unknown name is a one-line error listing the known ones
    if cfg.data.input != wants:
        raise LungsoundError(f"model {cfg.model.name!r} takes {wants} input, but data.input is {cfg.data.input!r}: set "
                             f"data.input={wants}" + (" and augment.specaug=false" if wants == "waveform" else ""))


def input_configs(cfg: ExperimentConfig) -> tuple[CycleConfig, FbankConfig | None]:
    """How recordings become the experiment's model input: the cycle config (the model's sample rate, `data.duration`,
    `data.pad`) and the fbank config at that rate and the model's frames per second (None for a waveform model)."""
    check_model_input(cfg)
    spec = model_spec(cfg.model.name)
    cycle_cfg = CycleConfig(sample_rate=spec.sample_rate, duration=cfg.data.duration, pad=cfg.data.pad)
    if spec.input != "fbank":
        return cycle_cfg, None
    return cycle_cfg, FbankConfig(sample_rate=spec.sample_rate, frame_shift_ms=1000.0 / spec.frames_per_second)


def build_model(cfg: ExperimentConfig, load_weights: bool = True) -> nn.Module:
    """The model of an experiment; pretrained weights (cfg.model.pretrained or model.params.weights) are loaded only when
    `load_weights`: a checkpoint's config never makes `load_model` fetch or read anything but its own weights file."""
    check_model_input(cfg)
    spec = model_spec(cfg.model.name)
    keys = spec.params.keys
    params = {"num_classes": len(CLASSES), **metadata_params(cfg.model.name, cfg.method.params), **cfg.model.params}
    if "protocol_masking" in keys:  # [REPAUG]: paper keeps the checkpoint's masking/layer drop, clean turns them off
        params.setdefault("protocol_masking", "checkpoint" if cfg.train.protocol == "paper" else "off")
    if "input_frames" in keys:
        params.setdefault("input_frames", frames_for_duration(cfg.data.duration, spec.sample_rate,
                                                              shift_ms=1000.0 / spec.frames_per_second))
    if not load_weights:
        params.pop("weights", None)
    elif cfg.model.pretrained:
        if "weights" not in keys:
            raise LungsoundError(f"model {cfg.model.name!r} cannot load pretrained weights ({cfg.model.pretrained})")
        params.update(weights=cfg.model.pretrained, pos_embed=cfg.model.pos_embed, strict_weights=cfg.model.strict)
    return create_model(cfg.model.name, **params)


def metadata_definitions(cfg: ExperimentConfig) -> str | None:
    """How the experiment's model reads each sample's metadata (`SampleMeta.as_mapping(definitions)`): the protocol's
    definitions ("paper": the patient-level chest location, as the reference code), or None for a model that reads
    none (`ModelSpec.uses_metadata`)."""
    return cfg.train.protocol if model_spec(cfg.model.name).uses_metadata else None


def checkpoint_config(cfg: ExperimentConfig, model: nn.Module) -> ExperimentConfig:
    """The config to store with `model`'s weights: with what rebuilds it offline (a speech model's backbone config)."""
    rebuild = getattr(model, "rebuild_params", None)
    if rebuild is None:
        return cfg
    out = copy.deepcopy(cfg)
    out.model.params = {**out.model.params, **rebuild()}
    return out
