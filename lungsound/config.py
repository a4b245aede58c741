"""Typed experiment configs, loaded from YAML files in `experiments/` with `key=value` overrides.

An experiment file is a small override of another (lightning-hydra style): `base: icbhi_ast_ce.yaml` pulls in that file
(relative to this one), then this file's keys are merged over it, then the command line's `section.key=value` overrides.
Every key is checked against the dataclasses below; an unknown key or a value of the wrong type is an error naming the
file and the key. One experiment file per published table row.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml

from lungsound.errors import LungsoundError


@dataclass
class DataConfig:
    root: str | None = None  # an ICBHI-format folder; None = the built-in synthetic set
    split: str = "official"  # official | fold0..fold4
    duration: float = 8.0  # seconds per cycle (8 for the AST papers, 5 for [AFT])
    pad: str = "repeat"  # repeat | zero
    input: str = "fbank"  # fbank (spectrogram models) | waveform (speech models)
    val_fraction: float = 0.2  # clean protocol: share of training cycles whose patients form the validation split
    val_seed: int = 0  # the validation patients are the same for every seed and method
    domain: str = "device"  # metadata domain for the domain methods: device | age_group | sex | location
    loader_workers: int = 0
    cache: bool = True


@dataclass
class ModelConfig:
    name: str = "ast"  # a name from lungsound.models.list_models()
    pretrained: str | None = None  # HF id or folder, audioset .pth, or a timm DeiT name; None = random init
    pos_embed: str = "paper"  # paper | clean (methods.md section 4)
    strict: bool = True  # fail on missing/unexpected keys when loading weights
    params: dict = field(default_factory=dict)  # passed to create_model (sizes, ...)


@dataclass
class AugmentConfig:
    specaug: bool = True
    semantics: str = "paper"  # paper (0.841 gate) | clean (fresh per-sample masks, p = 1)
    per: str = "sample"  # sample ([PMCL]) | batch ([SGSCL], [AFT]: one draw for the batch, in place)


@dataclass
class MethodConfig:
    name: str = "ce"  # a name from lungsound.methods.list_objectives()
    class_weighted: bool = False  # inverse-frequency class weights in the CE terms
    params: dict = field(default_factory=dict)  # method hyperparameters (alpha, temperature, ...)


@dataclass
class TrainConfig:
    epochs: int = 50
    batch_size: int = 8
    eval_batch_size: int = 32
    lr: float = 5e-5
    weight_decay: float = 1e-6
    schedule: str = "cosine"  # cosine (set once per epoch) | constant
    eta_min_ratio: float = 1e-3
    ma_beta: float | None = 0.5  # moving-average weight blending after every step; None = off
    amp: bool = True  # mixed precision when on CUDA
    protocol: str = "paper"  # paper (best test epoch with Se > min_se) | clean (select on validation patients)
    min_se: float = 5.0
    seed: int = 1
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    max_steps_per_epoch: int | None = None  # smoke runs
    threads: int | None = None  # torch CPU threads


@dataclass
class TrackingConfig:
    experiment: str = "icbhi"  # the MLflow experiment: one per benchmark
    run_name: str | None = None
    output_dir: str = "outputs"  # local checkpoints (last.pt for --resume)


@dataclass
class ExperimentConfig:
    name: str = "experiment"
    description: str = ""
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    method: MethodConfig = field(default_factory=MethodConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)

    def to_dict(self) -> dict:
        return asdict(self)


CHOICES = {
    ("data", "pad"): ("repeat", "zero"),
    ("data", "input"): ("fbank", "waveform"),
    ("data", "domain"): ("device", "age_group", "sex", "location"),
    ("model", "pos_embed"): ("paper", "clean"),
    ("augment", "semantics"): ("paper", "clean"),
    ("augment", "per"): ("sample", "batch"),
    ("train", "schedule"): ("cosine", "constant"),
    ("train", "protocol"): ("paper", "clean"),
}


def _read_yaml(path: Path) -> dict:
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise LungsoundError("experiment file not found", path) from None
    except yaml.YAMLError as exc:
        raise LungsoundError(f"not valid YAML: {str(exc).splitlines()[0]}", path) from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise LungsoundError("an experiment file must be a mapping of sections", path)
    return data


def _merge(base: dict, over: dict) -> dict:
    out = dict(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict) and key != "params":
            out[key] = _merge(out[key], value)
        elif isinstance(value, dict) and isinstance(out.get(key), dict):  # params merge too, one level
            out[key] = {**out[key], **value}
        else:
            out[key] = value
    return out


def _load_chain(path: Path, seen: tuple[Path, ...] = ()) -> dict:
    path = path.resolve()
    if path in seen:
        raise LungsoundError("experiment files include each other in a loop", path)
    data = _read_yaml(path)
    base = data.pop("base", None)
    if base is None:
        return data
    return _merge(_load_chain(path.parent / base, seen + (path,)), data)


def _coerce(value: Any, annotation: Any, where: str, source: str) -> Any:
    """Check `value` against a field annotation (str/int/float/bool/dict, optionally `| None`)."""
    args = typing.get_args(annotation)
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        annotation = next(a for a in args if a is not type(None))
    if annotation is float and isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if annotation is float and isinstance(value, str):  # YAML 1.1 reads "3e-4" (no dot) as a string
        try:
            return float(value)
        except ValueError:
            pass
    if annotation is int and isinstance(value, int) and not isinstance(value, bool):
        return value
    if annotation in (str, bool, dict) and isinstance(value, annotation):
        return value
    raise LungsoundError(f"{where}: expected {getattr(annotation, '__name__', annotation)}, got {value!r}", source)


def _build(cls, data: dict, where: str, source: str):
    known = {f.name: f for f in fields(cls)}
    unknown = sorted(set(data) - set(known))
    if unknown:
        raise LungsoundError(f"unknown key(s) {', '.join(f'{where}{k}' for k in unknown)}; known: "
                             f"{', '.join(known)}", source)
    kwargs = {}
    hints = typing.get_type_hints(cls)
    for name, value in data.items():
        hint = hints[name]
        if dataclasses.is_dataclass(hint):
            if not isinstance(value, dict):
                raise LungsoundError(f"{where}{name} must be a mapping", source)
            kwargs[name] = _build(hint, value, f"{where}{name}.", source)
        else:
            kwargs[name] = _coerce(value, hint, f"{where}{name}", source)
            choices = CHOICES.get(tuple(where.rstrip(".").split(".")[-1:]) + (name,))
            if choices and kwargs[name] not in choices:
                raise LungsoundError(f"{where}{name} must be one of {', '.join(choices)}, got {kwargs[name]!r}", source)
    return cls(**kwargs)


def config_from_dict(data: dict, source: str = "<dict>") -> ExperimentConfig:
    """Validate a plain dict (e.g. a saved config.yaml) into an `ExperimentConfig`."""
    return _build(ExperimentConfig, data or {}, "", source)


def parse_override(text: str) -> tuple[list[str], Any]:
    """`train.epochs=2` -> (['train', 'epochs'], 2); the value is read as YAML (numbers, true/false, null, lists)."""
    if "=" not in text:
        raise LungsoundError(f"override {text!r} must look like section.key=value")
    key, raw = text.split("=", 1)
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw
    return key.strip().split("."), value


def load_config(path: str | Path | None = None, overrides: list[str] | tuple[str, ...] = ()) -> ExperimentConfig:
    """Load an experiment file (with its `base:` chain) and apply `key=value` overrides."""
    data = _load_chain(Path(path)) if path is not None else {}
    source = str(path) if path is not None else "<defaults>"
    for text in overrides:
        keys, value = parse_override(text)
        node = data
        for key in keys[:-1]:
            node = node.setdefault(key, {})
            if not isinstance(node, dict):
                raise LungsoundError(f"override {text!r}: {key} is not a section")
        node[keys[-1]] = value
    if path is not None and "name" not in data:
        data["name"] = Path(path).stem
    return _build(ExperimentConfig, data, "", source)


def flatten(d: dict, prefix: str = "") -> dict[str, Any]:
    """{'train': {'lr': 1}} -> {'train.lr': 1}: how configs become MLflow params."""
    out: dict[str, Any] = {}
    for key, value in d.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            out.update(flatten(value, f"{name}."))
        else:
            out[name] = value
    return out


def dump_config(cfg: ExperimentConfig) -> str:
    return yaml.safe_dump(cfg.to_dict(), sort_keys=False)
