"""Models by name: ``register_model`` adds a factory, ``create_model`` builds one, ``list_models`` lists the names.

A factory takes keyword config values only (e.g. ``create_model("ast", num_classes=2, input_frames=498)``) and returns an
``nn.Module`` following the contract in :mod:`lungsound.models.base`. Each registration is a :class:`ModelSpec`: the
factory and the :class:`~lungsound.models.params.ParamSchema` of its parameters, which :func:`check_model_params` runs
on a plain ``model.params`` dict before anything is built (from config validation and when a model folder is read), so
an unknown key, a value of the wrong type, out of range or too large is a :class:`~lungsound.errors.LungsoundError`
naming the key (and the known keys); ``create_model`` runs it too. The spec also carries what the model *is*: its
input kind, sample rate, fbank frame rate, explanation method, working-memory estimate, card words and paper. Every
stage that would otherwise decide by name (the data pipeline, inference batching, the app's explanation, model cards)
reads these; an unknown name is an error, never a fallback.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, TypeVar

from torch import nn

from lungsound.audio import DEFAULT_SAMPLE_RATE  # a spec's default rate: 16 kHz, every published recipe
from lungsound.data.sample_meta import PROMPT_FIELDS
from lungsound.documents import Field
from lungsound.errors import LungsoundError
from lungsound.registry import Registry
from lungsound.models.params import ParamSchema, any_keys, schema_of

Factory = Callable[..., nn.Module]
F = TypeVar("F", bound=Factory)


INPUTS = ("fbank", "waveform")  # what the pipeline feeds a model: the Kaldi fbank, or the cycle's waveform
EXPLANATIONS = ("attention-rollout", "grad-cam", "gradient-x-input")  # lungsound.inference.explain
FBANK_FRAMES_PER_SECOND = 100.0  # the Kaldi fbank's 10-ms frame shift (docs/methods.md section 3)

# Peak working memory (bytes) of one segment's forward pass, from the merged parameter values (defaults, what the clip
# length derives, the given params) and the clip length in seconds: what inference sizes its batches by.
MemoryEstimate = Callable[[dict, float], int]


@dataclass(frozen=True)
class ModelSpec:
    """What a registered model is, read by every stage instead of its name.

    ``input``: ``"fbank"`` or ``"waveform"``; ``sample_rate``: the rate the pipeline resamples cycles to;
    ``frames_per_second``: fbank frames per second of audio (``None`` for waveform models); ``explanation``: how the
    app explains it (one of ``EXPLANATIONS``); ``memory``: the working-memory estimate; ``architecture``: the words a
    model card uses; ``paper``: the key of the paper that introduced it in ``lungsound.sharing.references.PAPERS``
    (``None`` for the toolkit's own baselines); ``transformer``: whether it is built of attention blocks (post-training
    int8 quantisation then uses NNCF's transformer preset, `lungsound.inference.openvino_export`).
    """

    name: str
    factory: Factory
    params: ParamSchema
    input: str
    explanation: str
    memory: MemoryEstimate
    architecture: str
    sample_rate: int = DEFAULT_SAMPLE_RATE
    frames_per_second: float | None = FBANK_FRAMES_PER_SECOND
    paper: str | None = None
    uses_metadata: bool = False
    transformer: bool = False

    def __post_init__(self):
        if self.input not in INPUTS:
            raise ValueError(f"model {self.name!r}: input must be one of {', '.join(INPUTS)}, got {self.input!r}")
        if self.explanation not in EXPLANATIONS:
            raise ValueError(f"model {self.name!r}: explanation must be one of {', '.join(EXPLANATIONS)}, "
                             f"got {self.explanation!r}")
        if self.input == "waveform" and self.frames_per_second is not None:
            raise ValueError(f"model {self.name!r}: a waveform model has no fbank frames per second")

    def working_bytes(self, params: dict, seconds: float) -> int:
        """Estimated peak working memory (bytes) of one ``seconds``-long segment's forward pass."""
        return int(self.memory(self.params.check(self.name, params, seconds=seconds), seconds))


MODELS: Registry[ModelSpec] = Registry("model")

# method.params keys that say how a metadata model (`ModelSpec.uses_metadata`) reads the metadata: the fields it
# writes (`meta_fields`), the training-time drop of one field (`meta_drop`), every field unknown (`no_description`).
# The objective never sees them; `metadata_params` hands them to the model.
METADATA_OPTIONS = ("meta_fields", "meta_drop", "no_description")
_OPTION_FIELDS = {"meta_drop": Field(float, 0.0, 1.0), "no_description": Field(bool)}


def metadata_params(name: str, method_params: dict, source: str | Path | None = None) -> dict:
    """The `METADATA_OPTIONS` of `method_params` as model params (a list of fields joined by commas); a one-line
    error naming `source` when model `name` reads no metadata."""
    given = {k: method_params[k] for k in METADATA_OPTIONS if k in method_params}
    if not given:
        return {}
    if not model_spec(name).uses_metadata:
        raise LungsoundError(f"method.params.{next(iter(given))}: model {name!r} reads no metadata (only a model "
                             "that does, e.g. clap_bts, takes it)", source)
    for key, field in _OPTION_FIELDS.items():
        problem = field.problem(given[key]) if key in given else None
        if problem:
            raise LungsoundError(f"method.params.{key} {problem}", source)
    if "meta_fields" in given:
        fields = given["meta_fields"]
        names = fields.split(",") if isinstance(fields, str) else fields if isinstance(fields, (list, tuple)) else None
        if names is None or not all(isinstance(n, str) for n in names):
            raise LungsoundError(f"method.params.meta_fields must be a list of fields, got {fields!r}", source)
        names = [n.strip() for n in names if n.strip()]
        unknown = [n for n in names if n not in PROMPT_FIELDS]
        if unknown:
            raise LungsoundError(f"method.params.meta_fields: {', '.join(unknown)} not among the fields "
                                 f"{', '.join(PROMPT_FIELDS)}", source)
        given["meta_fields"] = ",".join(names)
    return given


def register_model(name: str, *, input: str, explanation: str, memory: MemoryEstimate, architecture: str,
                   params: ParamSchema | None = None, config_cls: type | None = None,
                   sample_rate: int = DEFAULT_SAMPLE_RATE, frames_per_second: float | None = FBANK_FRAMES_PER_SECOND,
                   paper: str | None = None, uses_metadata: bool = False,
                   transformer: bool = False) -> Callable[[F], F]:
    """Decorator registering ``factory`` under ``name`` with what the model is (:class:`ModelSpec`); a name can be
    registered once.

    ``params`` is the schema of the factory's keys (see :mod:`lungsound.models.params`). Without it, a factory that
    forwards ``**config`` to a config dataclass passes that class as ``config_cls`` (its fields and types, no ranges);
    otherwise the factory's signature lists the accepted keys.
    """

    def decorate(factory: F) -> F:
        schema = params or (schema_of(config_cls) if config_cls is not None else any_keys(_signature_keys(factory)))
        fps = None if input == "waveform" else frames_per_second
        MODELS.add(name, ModelSpec(name, factory, schema, input=input, explanation=explanation, memory=memory,
                                   architecture=architecture, sample_rate=sample_rate, frames_per_second=fps,
                                   paper=paper, uses_metadata=uses_metadata, transformer=transformer))
        return factory

    return decorate


def list_models() -> list[str]:
    """The registered model names, sorted."""
    return MODELS.names()


def model_spec(name: str) -> ModelSpec:
    """The registration of ``name``; an unknown name is a one-line error listing the known ones."""
    return MODELS.get(name)


def model_config_keys(name: str) -> set[str]:
    """The config keys the model registered as ``name`` accepts."""
    return model_spec(name).params.keys


def check_model_params(name: str, params: dict, source: str | Path | None = None,
                       seconds: float | None = None) -> dict:
    """Check ``params`` against the registration of ``name`` (``seconds``: the clip length the pipeline derives sizes
    from); a one-line error naming ``source`` and the key, else the merged values the factory would use."""
    try:
        spec = model_spec(name)
    except LungsoundError as exc:
        raise LungsoundError(f"model.name: {exc.problem}", source) from None
    return spec.params.check(name, params, source, seconds)


def create_model(name: str, **config: Any) -> nn.Module:
    """Build the model registered as ``name`` from keyword config values (checked first)."""
    spec = model_spec(name)
    spec.params.check(name, config)
    return spec.factory(**config)


def _signature_keys(factory: Factory) -> set[str]:
    params = inspect.signature(factory).parameters.values()
    return {p.name for p in params if p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD)}
