"""Models by name: ``register_model`` adds a factory, ``create_model`` builds one, ``list_models`` lists the names.

A factory takes keyword config values only (e.g. ``create_model("ast", num_classes=2, input_frames=498)``) and returns an
``nn.Module`` following the contract in :mod:`lungsound.models.base`. Each registration is a :class:`ModelSpec`: the
factory and the :class:`~lungsound.models.params.ParamSchema` of its parameters, which :func:`check_model_params` runs
on a plain ``model.params`` dict before anything is built (from config validation and when a model folder is read), so
an unknown key, a value of the wrong type, out of range or too large is a :class:`~lungsound.errors.LungsoundError`
naming the key (and the known keys); ``create_model`` runs it too. The spec is where further facts about a model
(input kind, sample rate, ...) are meant to be attached.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, TypeVar

from torch import nn

from lungsound.errors import LungsoundError
from lungsound.models.params import ParamSchema, any_keys, schema_of

Factory = Callable[..., nn.Module]
F = TypeVar("F", bound=Factory)


@dataclass(frozen=True)
class ModelSpec:
    """One registered model: its name, its factory and the schema of its parameters."""

    name: str
    factory: Factory
    params: ParamSchema


_REGISTRY: dict[str, ModelSpec] = {}


def register_model(name: str, config_cls: type | None = None, params: ParamSchema | None = None) -> Callable[[F], F]:
    """Decorator registering ``factory`` under ``name``; a name can be registered once.

    ``params`` is the schema of the factory's keys (see :mod:`lungsound.models.params`). Without it, a factory that
    forwards ``**config`` to a config dataclass passes that class as ``config_cls`` (its fields and types, no ranges);
    otherwise the factory's signature lists the accepted keys.
    """

    def decorate(factory: F) -> F:
        if name in _REGISTRY:
            raise ValueError(f"model name {name!r} is already registered")
        schema = params or (schema_of(config_cls) if config_cls is not None else any_keys(_signature_keys(factory)))
        _REGISTRY[name] = ModelSpec(name, factory, schema)
        return factory

    return decorate


def list_models() -> list[str]:
    """The registered model names, sorted."""
    return sorted(_REGISTRY)


def model_spec(name: str) -> ModelSpec:
    """The registration of ``name``; an unknown name is a one-line error listing the known ones."""
    if name not in _REGISTRY:
        raise LungsoundError(f"unknown model {name!r}; known models: {', '.join(list_models())}")
    return _REGISTRY[name]


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
