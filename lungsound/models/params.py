"""What a model's parameters may be: the schema each registration carries (`lungsound.models.registry`).

A `ParamSchema` lists every key a model accepts with its type and range (`lungsound.documents.Field`), the defaults the
factory uses when a key is absent, what the pipeline derives from the clip length (an AST's `input_frames`), and
checks that join several keys (an AST's `embed_dim` divisible by `num_heads`, its patch grid, its parameter count).
`ParamSchema.check` runs on the plain `model.params` dict, before anything is built: from `lungsound.config.validate`
(so `train` fails before an MLflow run or a folder exists), when a model folder's `config.yaml` is read (`predict`,
`export`, `evaluate`, `validate-external`, the app, hub models), and in `create_model` itself. Upper bounds keep a
hostile file from asking for terabytes (e.g. `embed_dim` <= 4096, `depth` <= 48, at most 10^9 weights for an AST).

`schema_of(config_cls, ...)` builds the schema of a config dataclass: each field's type from its annotation (`int`,
`float`, `bool`, `str`, `dict`, a `Literal` of choices, any of them `| None`), its range from the model's own table.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from lungsound.documents import Field
from lungsound.errors import LungsoundError

# A joint check gets the merged values (defaults, what the clip length gives, the given params) and returns the problem
# in words, or None.
JointCheck = Callable[[dict], "str | None"]
PREFIX = "model.params"


@dataclass(frozen=True)
class ParamSchema:
    """The keys a model accepts (`fields`), its `defaults`, `derive(seconds)` (values the pipeline sets from the clip
    length unless given) and the `joint` checks; `fields` None accepts any key of `keys` without a type check."""

    fields: dict[str, Field]
    defaults: dict[str, Any] = field(default_factory=dict)
    derive: Callable[[float], dict] | None = None
    joint: tuple[JointCheck, ...] = ()

    @property
    def keys(self) -> set[str]:
        return set(self.fields)

    def check(self, model: str, params: dict, source: str | Path | None = None, seconds: float | None = None) -> dict:
        """Refuse unknown keys, values of the wrong type or out of range, and failed joint checks, in one line naming
        `source` and the key; returns the merged values."""
        unknown = sorted(set(params) - self.keys, key=str)
        if unknown:
            raise LungsoundError(f"{PREFIX}: unknown config key(s) {', '.join(map(str, unknown))} for model {model!r}; "
                                 f"known keys: {', '.join(sorted(self.keys))}", source)
        for key, value in params.items():
            problem = self.fields[key].problem(value)
            if problem:
                raise LungsoundError(f"{PREFIX}.{key} {problem} (model {model!r})", source)
        try:
            derived = self.derive(seconds) if self.derive is not None and seconds is not None else {}
        except LungsoundError as exc:  # e.g. a clip shorter than one fbank frame
            raise LungsoundError(exc.problem, source) from None
        values = {**self.defaults, **derived, **params}
        for check in self.joint:
            problem = check(values)
            if problem:
                raise LungsoundError(f"{PREFIX}: {problem} (model {model!r})", source)
        return values


def schema_of(config_cls: type, bounds: dict[str, Field] | None = None, defaults: dict[str, Any] | None = None,
              derive: Callable[[float], dict] | None = None, joint: tuple[JointCheck, ...] = ()) -> ParamSchema:
    """The schema of a config dataclass: types from its annotations, ranges from `bounds` (a full `Field` per key),
    defaults from the dataclass updated with `defaults`."""
    bounds = dict(bounds or {})
    hints = typing.get_type_hints(config_cls)
    names = [f.name for f in dataclasses.fields(config_cls)]
    stray = sorted(set(bounds) - set(names))
    if stray:
        raise ValueError(f"bounds for keys {stray} that {config_cls.__name__} does not have")
    fields = {name: bounds.get(name) or _field_of(hints[name]) for name in names}
    base = {f.name: f.default for f in dataclasses.fields(config_cls) if f.default is not dataclasses.MISSING}
    return ParamSchema(fields, {**base, **(defaults or {})}, derive, joint)


def _field_of(annotation: Any) -> Field:
    optional = False
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        optional = len(args) < len(typing.get_args(annotation))
        annotation = args[0] if len(args) == 1 else annotation
    if typing.get_origin(annotation) is typing.Literal:
        return Field(str, choices=typing.get_args(annotation), optional=optional)
    if annotation in (int, float, bool, str, dict):
        return Field(annotation, optional=optional)
    raise ValueError(f"no parameter type for annotation {annotation!r}")


def any_keys(keys: set[str]) -> ParamSchema:
    """A schema for a factory without a config dataclass: its keyword names, values unchecked."""
    return ParamSchema({key: _ANY for key in keys})


class _Anything(Field):
    def problem(self, value: Any) -> str | None:
        return None


_ANY = _Anything(object)


def count_limit(what: str, count: int, limit: float) -> str | None:
    """The words for a size that exceeds `limit` (None when it does not)."""
    return None if count <= limit else f"{what} would have about {count:,} weights, more than the {limit:,.0f} allowed"
