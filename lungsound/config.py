"""Typed experiment configs, loaded from YAML files in `experiments/` with `key=value` overrides.

An experiment file is a small override of another (lightning-hydra style): `base: icbhi_ast_ce.yaml` pulls in that file
(relative to this one), then this file's keys are merged over it, then the command line's `section.key=value` overrides.
Every key is checked against the dataclasses below; an unknown key or a value of the wrong type is an error naming the
file and the key; so is a value out of range (`validate`: epochs >= 1, a finite positive lr, a known device and split,
no NaN anywhere, ...; the rules are in `lungsound.config_rules`), all before any work starts. One experiment file per
published table row.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml

from lungsound.config_rules import RULES
from lungsound.data.formats import DEFAULT_FORMAT, FORMATS
from lungsound.data.labels import domain_size
from lungsound.documents import load_yaml, read_text
from lungsound.errors import LungsoundError


@dataclass
class DataConfig:
    root: str | None = None  # a folder of data in `format`; None = the built-in synthetic set (ICBHI format)
    format: str = DEFAULT_FORMAT  # how `root` is read: a name of lungsound.data.formats.FORMATS (icbhi, ...)
    split: str = "official"  # ICBHI: official | fold0..fold4 | official_noleak | device_out=<device> (data.splits)
    duration: float = 8.0  # seconds per cycle (8 for the AST papers, 5 for [AFT])
    pad: str = "repeat"  # repeat | zero
    input: str = "fbank"  # fbank (spectrogram models) | waveform (speech models)
    val_fraction: float = 0.2  # clean protocol: share of training cycles whose patients form the validation split
    val_seed: int = 0  # the validation patients are the same for every seed and method
    domain: str = "device"  # domain for the domain methods: device | age_group | sex | location | generated
    loader_workers: int = 0
    cache: bool = True
    generated: str | None = None  # a generated set (lungsound generate synth) added to the training split ([AFT])
    balance: str = "none"  # none | oversample (class-balanced sampler, [REPAUG]'s second Rep-Gen variant) | weighted
    # (weighted: N draws with replacement, weights 1 / class count, the AST + SAM recipe, docs/methods.md section 14)
    balance_per_class: int | None = None  # oversample: cycles per class and epoch; None = the largest class's count
    balance_draw: str = "once"  # once (the authors': list built once, shuffled each epoch) | epoch (fresh draws)


@dataclass
class ModelConfig:
    name: str = "ast"  # a name from lungsound.models.list_models()
    pretrained: str | None = None  # HF id or folder, audioset .pth, or a timm DeiT name; None = random init
    pos_embed: str = "paper"  # paper | clean (docs/methods.md section 4)
    strict: bool = True  # fail on missing/unexpected keys when loading weights
    params: dict = field(default_factory=dict)  # passed to create_model (sizes, ...)


@dataclass
class AugmentConfig:
    specaug: bool = True
    semantics: str = "paper"  # paper (0.841 gate) | clean (fresh per-sample masks, p = 1)
    per: str = "sample"  # sample ([PMCL]) | batch ([SGSCL], [AFT]: one draw for the batch, in place)
    # RepAugment ([REPAUG], docs/methods.md section 9) on the pooled representation z, training only:
    representation: str = "none"  # REPRESENTATIONS: none | rep_mask | rep_gen | repaugment (Rep-Mask then Rep-Gen)
    rep_fill: str = "code"  # Rep-Mask fill: code (z * batch mean) | paper (batch mean) | zero
    # Rep-Mask block width bound F in dimensions, absolute as in the authors' code (288, their AST policy, whatever D;
    # the model's D must be at least this); rep_max_width_ratio, when set, gives F = ratio * D (0.375 = 288/768).
    rep_max_width: int = 288
    rep_max_width_ratio: float | None = None
    rep_blocks: int = 2  # Rep-Mask blocks
    rep_gate: bool = True  # Rep-Mask applied with probability 0.841 per batch
    rep_std: float = 0.2  # Rep-Gen noise standard deviation
    rep_minority: str = "abnormal"  # Rep-Gen rows: abnormal (crackle, wheeze, both) | all (with data.balance)
    # Waveform augmentation of training cycles before their features (lungsound.data.wave_augment; AST + SAM, section
    # 14): gain U(1 - wave_gain, 1 + wave_gain) with probability wave_gain_p, then N(0, wave_noise^2) noise with
    # probability wave_noise_p; 0 = off.
    wave_gain: float = 0.0
    wave_gain_p: float = 0.5
    wave_noise: float = 0.0
    wave_noise_p: float = 0.5


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
    optimizer: str = "adam"  # adam (the papers') | adamw | sgd | sam (sharpness-aware, around sam_base; section 14)
    sam_base: str = "adam"  # sam: the base optimiser that steps with the gradient at w + e (adam | adamw | sgd)
    sam_rho: float = 0.05  # sam: radius of the ascent step e = rho g / ||g|| (Foret et al. 2021)
    sam_adaptive: bool = False  # sam: ASAM's |w|-scaled ascent (Kwon et al. 2021)
    momentum: float = 0.9  # sgd (also as sam_base): momentum
    grad_accum: int = 1  # micro-batches per step: each batch of batch_size is split into this many (memory, not size)
    schedule: str = "cosine"  # cosine (set once per epoch) | constant | warmup_linear ([EFFAT], training.optim)
    eta_min_ratio: float = 1e-3  # cosine: the floor; warmup_linear: the final ratio
    warmup_epochs: int = 10  # warmup_linear: exponential warm-up epochs, then the linear ramp-down starts
    rampdown_epochs: int = 65  # warmup_linear: epochs of the linear ramp-down to eta_min_ratio
    ma_beta: float | None = 0.5  # moving-average weight blending after every step; None = off
    amp: bool = True  # mixed precision when on CUDA
    protocol: str = "paper"  # paper (best test epoch with Se > min_se) | clean (select on validation patients)
    min_se: float = 5.0
    seed: int = 1
    device: str = "auto"  # auto | cpu | cuda | cuda:N | mps
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


# RepAugment's modes ([REPAUG], docs/methods.md section 9) and the words a model card uses for them, written once: read by
# `lungsound.methods.repaugment`, which runs them, and by the card. They are here, not there, because that module
# imports torch (2.7 s on a cold start, against 0.04 s for this module) and reading an experiment file must not.
REPRESENTATIONS = {"none": "no representation augmentation", "rep_mask": "Rep-Mask", "rep_gen": "Rep-Gen",
                   "repaugment": "RepAugment"}
REP_FILLS = ("code", "paper", "zero")
REP_MINORITIES = ("abnormal", "all")
# The optimisers of train.optimizer (built by lungsound.training.optim.build_optimizer); sam wraps one of the others.
BASE_OPTIMIZERS = ("adam", "adamw", "sgd")
OPTIMIZERS = BASE_OPTIMIZERS + ("sam",)

CHOICES = {
    ("data", "pad"): ("repeat", "zero"),
    ("data", "input"): ("fbank", "waveform"),
    ("data", "domain"): ("device", "age_group", "sex", "location", "generated"),
    ("model", "pos_embed"): ("paper", "clean"),
    ("augment", "semantics"): ("paper", "clean"),
    ("augment", "per"): ("sample", "batch"),
    ("augment", "representation"): tuple(REPRESENTATIONS),
    ("augment", "rep_fill"): REP_FILLS,
    ("augment", "rep_minority"): REP_MINORITIES,
    ("data", "balance"): ("none", "oversample", "weighted"),
    ("data", "balance_draw"): ("once", "epoch"),
    ("train", "schedule"): ("cosine", "constant", "warmup_linear"),
    ("train", "protocol"): ("paper", "clean"),
    ("train", "optimizer"): OPTIMIZERS,
    ("train", "sam_base"): BASE_OPTIMIZERS,
}



def _check_numbers(value: Any, key: str, source: str, finite: bool) -> None:
    """Refuse NaN (and, in typed float fields, infinity) anywhere, including inside params' dicts and lists."""
    if isinstance(value, float) and (math.isnan(value) or (finite and math.isinf(value))):
        raise LungsoundError(f"{key} must be a finite number, got {value!r}", source)
    if isinstance(value, dict):
        for k, v in value.items():
            _check_numbers(v, f"{key}.{k}", source, finite=False)
    elif isinstance(value, (list, tuple)):
        for i, v in enumerate(value):
            _check_numbers(v, f"{key}[{i}]", source, finite=False)


def validate(cfg: ExperimentConfig, source: str = "<config>") -> ExperimentConfig:
    """Range-check every field of `cfg` (see `RULES`); the first problem is a `LungsoundError` naming `source` and
    the key. Returns `cfg` unchanged."""
    values = _flat_fields(cfg.to_dict())
    for key, value in values.items():
        _check_numbers(value, key, source, finite=not key.endswith(".params"))
    for key, rule in RULES.items():
        problem = rule(values[key])
        if problem:
            shown = repr(values[key])
            raise LungsoundError(f"{key} {problem}, got {shown if len(shown) <= 80 else shown[:77] + '...'}", source)
    _check_split(cfg, source)
    _check_model(cfg, source)
    _check_combinations(cfg, source)
    return cfg


def _check_split(cfg: ExperimentConfig, source: str) -> None:
    """`data.split` must be a split the data format knows (ICBHI: lungsound.data.splits.SPLIT_CHOICES), and the
    built-in data (no `data.root`) is ICBHI-format."""
    fmt = FORMATS.get(cfg.data.format)
    if cfg.data.split not in fmt.splits:
        shown = repr(cfg.data.split)
        raise LungsoundError(f"data.split must be one of {', '.join(fmt.splits)}, got "
                             f"{shown if len(shown) <= 80 else shown[:77] + '...'}", source)
    if cfg.data.root is None and cfg.data.format != DEFAULT_FORMAT:
        raise LungsoundError(f"data.format={cfg.data.format} needs data.root (the built-in synthetic set is "
                             f"{DEFAULT_FORMAT}-format)", source)


def _check_model(cfg: ExperimentConfig, source: str) -> None:
    """model.params checked by the model's registration (types, ranges, sizes), before any run or folder exists."""
    # deferred: lungsound.models loads torch, transformers and timm (6 s measured on a cold start, against 0.06 s for
    # this module; tests/test_registries.py checks that reading an experiment file does not load torch), and models
    # imports this module (config -> models at the top would close a circle).
    from lungsound.models import check_model_params
    from lungsound.models.registry import metadata_params

    metadata = metadata_params(cfg.model.name, cfg.method.params, source)
    check_model_params(cfg.model.name, {**metadata, **cfg.model.params}, source, seconds=cfg.data.duration)


def _check_combinations(cfg: ExperimentConfig, source: str) -> None:
    """Settings that are fine alone but not together."""
    import warnings

    if cfg.augment.specaug and cfg.data.input == "waveform":
        raise LungsoundError("augment.specaug=true masks spectrograms, but data.input is waveform (a speech model's "
                             "input has no time-frequency bins): set augment.specaug=false and use "
                             "augment.representation for waveform models", source)
    wants_flag = cfg.data.domain == "generated" or cfg.method.params.get("domain") == "generated"
    if wants_flag and not cfg.data.generated:
        raise LungsoundError("the 'generated' domain (real 0 / generated 1, [AFT]) needs a generated set: set "
                             "data.generated=DIR (made by lungsound generate synth)", source)
    _check_domain_head(cfg, source)
    if (cfg.augment.wave_gain or cfg.augment.wave_noise) and cfg.data.generated:
        raise LungsoundError("augment.wave_gain/wave_noise augment the real cycles' waveforms; generated clips "
                             "(data.generated) have none to augment: turn one of them off", source)
    if cfg.train.batch_size % cfg.train.grad_accum:
        raise LungsoundError(f"train.grad_accum={cfg.train.grad_accum} must divide train.batch_size="
                             f"{cfg.train.batch_size} (each batch is split into that many equal micro-batches)", source)
    if cfg.augment.specaug and cfg.augment.representation != "none":
        warnings.warn(f"{source}: SpecAugment and {cfg.augment.representation} are both on; the RepAugment paper never "
                      "combines them, so this run matches no published row", stacklevel=3)


def _check_domain_head(cfg: ExperimentConfig, source: str) -> None:
    """DAT's discriminator must have an output per value of its domain (under the protocol's definitions); an unset
    `n_domains` is derived from the domain by the trainer (`lungsound.training.trainer.objective_params`)."""
    params = cfg.method.params
    if cfg.method.name != "dat":
        return
    domain = params.get("domain", "device")
    try:
        need = domain_size(domain, cfg.train.protocol, FORMATS.get(cfg.data.format))  # the format's vocabularies
    except LungsoundError as exc:
        raise LungsoundError(f"method.params.domain: {exc.problem}", source) from None
    given = params.get("n_domains")
    if given is not None and (isinstance(given, bool) or not isinstance(given, int)):
        raise LungsoundError(f"method.params.n_domains must be an integer, got {given!r}", source)
    if given is not None and given < need:
        raise LungsoundError(f"method.params.n_domains={given!r} is too small for the {domain!r} domain, which has "
                             f"{need} values under the {cfg.train.protocol} definitions (leave it out to derive it)",
                             source)


def _flat_fields(d: dict, prefix: str = "") -> dict[str, Any]:
    """Like `flatten`, but dataclass sections only: `params` dicts stay whole (empty or not)."""
    out: dict[str, Any] = {}
    for key, value in d.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and key != "params":
            out.update(_flat_fields(value, f"{name}."))
        else:
            out[name] = value
    return out


def _read_yaml(path: Path) -> dict:
    if path.is_dir():
        raise LungsoundError("is a folder, not an experiment file (pass one of its .yaml files)", path)
    data = load_yaml(read_text(path, "experiment file"), path)  # bounded: size, depth, aliases, duplicate keys
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
    if "base" not in data:
        return data
    base = data.pop("base")
    if not isinstance(base, str) or not base.strip():
        raise LungsoundError(f"base must be the path of another experiment file (a string), got {base!r}", path)
    target = path.parent / base
    if not target.is_file():
        what = "a folder" if target.is_dir() else "not an existing file"
        raise LungsoundError(f"base: {base!r} is {what} (looked for {target})", path)
    return _merge(_load_chain(target, seen + (path,)), data)


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
    if data is not None and not isinstance(data, dict):
        raise LungsoundError(f"a config must be a mapping of sections, got {type(data).__name__}", source)
    return validate(_build(ExperimentConfig, _saved_width_as_ratio(data or {}), "", source), source)


def _saved_width_as_ratio(data: dict) -> dict:
    """A config saved before the Rep-Mask width bound became absolute holds `augment.rep_max_width` as a share of D
    (a float in (0, 1], 0.375 by default): read it as `augment.rep_max_width_ratio`, which is what that run used."""
    augment = data.get("augment")
    width = augment.get("rep_max_width") if isinstance(augment, dict) else None
    if not isinstance(width, float) or not 0 < width <= 1 or "rep_max_width_ratio" in augment:
        return data
    rest = {k: v for k, v in augment.items() if k != "rep_max_width"}
    return {**data, "augment": {**rest, "rep_max_width_ratio": width}}


def parse_override(text: str) -> tuple[list[str], Any]:
    """`train.epochs=2` -> (['train', 'epochs'], 2); the value is read as YAML (numbers, true/false, null, lists)."""
    if "=" not in text:
        raise LungsoundError(f"override {text!r} must look like section.key=value")
    key, raw = text.split("=", 1)
    try:
        value = load_yaml(raw, f"override {key.strip()}") if raw.strip() else ""
    except LungsoundError as exc:
        if not exc.problem.startswith("not valid YAML"):  # a bomb or a duplicate key is refused, not taken as text
            raise
        value = raw
    return key.strip().split("."), value


def load_config(path: str | Path | None = None, overrides: list[str] | tuple[str, ...] = ()) -> ExperimentConfig:
    """Load an experiment file (with its `base:` chain) and apply `key=value` overrides."""
    data, source = read_config_data(path, overrides)
    return validate(_build(ExperimentConfig, data, "", source), source)


def load_typed(cls: type, path: str | Path | None = None, overrides: list[str] | tuple[str, ...] = ()):
    """Any config dataclass tree (e.g. the vocoder's) from a YAML file, its `base:` chain and `key=value` overrides,
    with the same checks of keys and types as experiment files; range checks are the caller's."""
    data, source = read_config_data(path, overrides)
    return typed_from_dict(cls, data, source)


def typed_from_dict(cls: type, data: dict, source: str = "<dict>"):
    """Any config dataclass tree from a plain dict (e.g. one stored in a checkpoint), keys and types checked."""
    built = _build(cls, data or {}, "", source)
    for key, value in _flat_fields(asdict(built)).items():
        _check_numbers(value, key, source, finite=not key.endswith(".params"))
    return built


def read_config_data(path: str | Path | None, overrides: list[str] | tuple[str, ...] = ()) -> tuple[dict, str]:
    """The merged plain dict of a config file and its overrides, and the name of its source for error messages."""
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
    return data, source


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
