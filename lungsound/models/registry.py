"""Models by name: ``register_model`` adds a factory, ``create_model`` builds one, ``list_models`` lists the names.

A factory takes keyword config values only (e.g. ``create_model("ast", num_classes=2, input_frames=498)``) and returns an
``nn.Module`` following the contract in :mod:`lungsound.models.base`. Unknown names and unknown config keys raise a
:class:`~lungsound.errors.LungsoundError` that lists what is known.
"""

from __future__ import annotations

import dataclasses
import inspect
from typing import Any, Callable, TypeVar

from torch import nn

from lungsound.errors import LungsoundError

Factory = Callable[..., nn.Module]
F = TypeVar("F", bound=Factory)

_REGISTRY: dict[str, Factory] = {}
_KEYS: dict[str, set[str]] = {}


def register_model(name: str, config_cls: type | None = None) -> Callable[[F], F]:
    """Decorator registering ``factory`` under ``name``; a name can be registered once.

    When the factory takes ``**config`` and forwards it to a config dataclass, pass that class as ``config_cls`` so that
    :func:`create_model` can reject unknown keys by name; otherwise the factory's signature lists the accepted keys.
    """

    def decorate(factory: F) -> F:
        if name in _REGISTRY:
            raise ValueError(f"model name {name!r} is already registered")
        _REGISTRY[name] = factory
        _KEYS[name] = _signature_keys(factory) if config_cls is None else {f.name for f in dataclasses.fields(config_cls)}
        return factory

    return decorate


def list_models() -> list[str]:
    """The registered model names, sorted."""
    return sorted(_REGISTRY)


def model_config_keys(name: str) -> set[str]:
    """The config keys the model registered as ``name`` accepts."""
    if name not in _REGISTRY:
        raise LungsoundError(f"unknown model {name!r}; known models: {', '.join(list_models())}")
    return set(_KEYS[name])


def create_model(name: str, **config: Any) -> nn.Module:
    """Build the model registered as ``name`` from keyword config values."""
    if name not in _REGISTRY:
        raise LungsoundError(f"unknown model {name!r}; known models: {', '.join(list_models())}")
    known = _KEYS[name]
    unknown = sorted(set(config) - known)
    if unknown:
        raise LungsoundError(
            f"unknown config key(s) {', '.join(unknown)} for model {name!r}; known keys: {', '.join(sorted(known))}"
        )
    return _REGISTRY[name](**config)


def _signature_keys(factory: Factory) -> set[str]:
    params = inspect.signature(factory).parameters.values()
    return {p.name for p in params if p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD)}
