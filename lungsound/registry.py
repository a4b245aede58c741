"""Name-based registries: one small helper behind every "pick a thing by name" in lungsound.

Models (`lungsound.models`), objectives (`lungsound.methods`), external dataset adapters (`lungsound.external`),
inference runtimes (`lungsound.inference.runtimes`) and sweep backends each keep one :class:`Registry`. It holds what
a registered thing *is* (a spec object, or the thing itself), refuses a second registration under the same name, and
answers an unknown name with a one-line error that lists the known ones, so a typo on the command line reads
``unknown runtime 'onx'; known: onnx, torch``. ``names()`` is what the CLI's ``choices=`` and the config checks read,
so no list of names is ever written twice.

    RUNTIMES = Registry("runtime")

    @RUNTIMES.register("torch")
    class TorchRuntime: ...

    RUNTIMES.get("torch")      # the class
    RUNTIMES.names()           # ['torch', ...] sorted
"""

from __future__ import annotations

from typing import Callable, Generic, Iterator, TypeVar

from lungsound.errors import LungsoundError

T = TypeVar("T")


class Registry(Generic[T]):
    """Things of one kind by name. ``kind`` is the word used in errors ("model", "objective", "runtime", ...)."""

    def __init__(self, kind: str):
        self.kind = kind
        self._items: dict[str, T] = {}

    def add(self, name: str, item: T) -> T:
        """Register ``item`` under ``name``; a name can be registered once."""
        if not isinstance(name, str) or not name:
            raise ValueError(f"a {self.kind} name must be a non-empty string, got {name!r}")
        if name in self._items:
            raise ValueError(f"{self.kind} name {name!r} is already registered")
        self._items[name] = item
        return item

    def register(self, name: str) -> Callable[[T], T]:
        """Decorator form of :meth:`add`: ``@REGISTRY.register("name")``."""
        def decorate(item: T) -> T:
            return self.add(name, item)
        return decorate

    def get(self, name: str) -> T:
        """The thing registered as ``name``; an unknown name is a one-line error listing the known ones."""
        try:
            return self._items[name]
        except (KeyError, TypeError):
            raise LungsoundError(self.unknown(name)) from None

    def unknown(self, name: object) -> str:
        """The message for a name that is not registered."""
        return f"unknown {self.kind} {name!r}; known: {', '.join(self.names()) or '(none)'}"

    def names(self) -> list[str]:
        """The registered names, sorted."""
        return sorted(self._items)

    def items(self) -> list[tuple[str, T]]:
        return sorted(self._items.items())

    def __contains__(self, name: object) -> bool:
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self._items)

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}: {', '.join(self.names())})"
