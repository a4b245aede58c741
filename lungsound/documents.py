"""Reading the small documents the toolkit is handed: YAML configs and JSON descriptions, bounded and typed.

Every YAML the toolkit reads (experiment files and their `base:` chain, `key=value` override values, a model folder's
`config.yaml`, a run's `config.yaml` from MLflow) goes through `load_yaml`, a `yaml.SafeLoader` that, while it composes
the document and before anything is built from it, refuses in one line naming the source

- a document of more than `MAX_BYTES` (1 MB; the experiment files are a few hundred bytes),
- nesting deeper than `MAX_DEPTH` (50) mappings and lists (a 5,000-deep list is refused before PyYAML's own recursion
  could fail),
- more than `MAX_NODES` (10,000) nodes *after alias expansion*: an alias counts as the whole subtree it names, so the
  "billion laughs" document (nine anchors, each a list of ten aliases of the previous one: 715 bytes that expand to
  10^9 strings) is refused after reading a few lines, and an alias of a node that encloses it (a recursive structure)
  is refused too,
- the same key written twice in one mapping (YAML would keep the second silently), with both line numbers. Keys that
  a merge (`<<: *base`) brings in may be overridden, as YAML intends.

JSON documents (`vocoder.json`, `set.json`) are read by `read_json` with the same size bound; a non-UTF-8 or
malformed file, or one nested past the parser's limit, is one line. `Field` is a typed, range-checked value (integer,
number, text, yes/no, one of a list; optional or not) whose `problem(value)` says what the value must be, so that
readers check each key of what they read and name it.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from lungsound.errors import LungsoundError, one_line

MAX_BYTES = 1 << 20
MAX_DEPTH = 50
MAX_NODES = 10_000
MERGE_TAG = "tag:yaml.org,2002:merge"


class _BoundedLoader(yaml.SafeLoader):
    """`SafeLoader` that counts depth and expanded nodes while composing, and refuses duplicate keys."""

    def __init__(self, text: str, source: str):
        super().__init__(text)
        self.source = source
        self.depth = 0
        self.expanded = 0  # nodes of the document as if every alias were a copy of what it names
        self.sizes: dict[int, int] = {}  # id(node) -> expanded size of its subtree, once composed

    def _refuse(self, problem: str, mark) -> None:
        where = f" (line {mark.line + 1})" if mark is not None else ""
        raise LungsoundError(f"{problem}{where}", self.source)

    def _grow(self, count: int, mark) -> None:
        self.expanded += count
        if self.expanded > MAX_NODES:
            self._refuse(f"refused: the YAML expands to more than {MAX_NODES:,} values (aliases count as copies of "
                         f"what they name); an experiment file needs a few dozen", mark)

    def compose_node(self, parent, index):
        if self.check_event(yaml.AliasEvent):
            mark = self.peek_event().start_mark
            node = super().compose_node(parent, index)
            if id(node) not in self.sizes:
                self._refuse("refused: a YAML alias refers to a node that contains it (a recursive structure)", mark)
            self._grow(self.sizes[id(node)], mark)
            return node
        mark = self.peek_event().start_mark
        self.depth += 1
        if self.depth > MAX_DEPTH:
            self._refuse(f"refused: the YAML nests deeper than {MAX_DEPTH} levels", mark)
        start = self.expanded
        self._grow(1, mark)
        node = super().compose_node(parent, index)
        self.depth -= 1
        self.sizes[id(node)] = self.expanded - start
        return node

    def compose_mapping_node(self, anchor):
        node = super().compose_mapping_node(anchor)
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            if key_node.tag == MERGE_TAG or not isinstance(key_node, yaml.ScalarNode):
                continue
            key = self.construct_object(key_node)
            line = key_node.start_mark.line + 1
            if key in seen:
                raise LungsoundError(f"duplicate key {key!r} on line {line} (first on line {seen[key]}): YAML would "
                                     "silently keep the second; write each key once", self.source)
            seen[key] = line
        return node


def load_yaml(text: str, source: str | Path = "<yaml>") -> Any:
    """The value of one YAML document, within the bounds of the module docstring; a `LungsoundError` naming `source`
    otherwise (also for YAML syntax errors: their first line)."""
    if len(text) > MAX_BYTES or len(text.encode("utf-8", "surrogatepass")) > MAX_BYTES:
        raise LungsoundError(f"refused: {len(text.encode('utf-8', 'surrogatepass')):,} bytes of YAML, more than the "
                             f"{MAX_BYTES:,} a config may have", source)
    loader = _BoundedLoader(text, str(source))
    try:
        return loader.get_single_data()
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark is not None else ""
        raise LungsoundError(f"not valid YAML: {exc.problem or exc.context}{where}", source) from None
    except yaml.YAMLError as exc:
        raise LungsoundError(f"not valid YAML: {one_line(exc, limit=None)}", source) from None
    finally:
        loader.dispose()


def read_text(path: str | Path, what: str) -> str:
    """The UTF-8 text of a small document (at most `MAX_BYTES`), or a one-line error naming `path` and `what`."""
    path = Path(path)
    try:
        with open(path, "rb") as fh:
            data = fh.read(MAX_BYTES + 1)
    except FileNotFoundError:
        raise LungsoundError(f"{what} not found", path) from None
    except IsADirectoryError:
        raise LungsoundError(f"{what} is a folder, not a file", path) from None
    except OSError as exc:
        raise LungsoundError(f"cannot read the {what}: {exc.strerror or exc}", path) from None
    if len(data) > MAX_BYTES:
        raise LungsoundError(f"refused: the {what} is larger than {MAX_BYTES:,} bytes", path)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise LungsoundError(f"the {what} is not UTF-8 text (byte {exc.start})", path) from None


def read_json(path: str | Path, what: str) -> Any:
    """A small JSON document (at most `MAX_BYTES`, UTF-8), parsed; every failure is one line naming `path`."""
    text = read_text(path, what)
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise LungsoundError(f"corrupt {what}: {exc}", path) from None
    except RecursionError:
        raise LungsoundError(f"refused: the {what} is nested too deeply", path) from None


@dataclass(frozen=True)
class Field:
    """What one value of a document must be: its `kind` (int, float, bool, str, dict or list), a range (each end
    inclusive unless open), a list of `choices`, at most `max_length` characters, keys or items, or None where
    `optional`. A bool is never an int, and a float must be finite."""

    kind: type
    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False
    choices: tuple | None = None
    optional: bool = False
    max_length: int | None = None  # str: characters; dict: keys; list: items
    item: Field | None = None  # list: what every item must be

    def describe(self) -> str:
        words = {int: "an integer", float: "a number", bool: "true or false", str: "a text", dict: "a mapping",
                 list: "a list"}
        text = f"one of {', '.join(map(str, self.choices))}" if self.choices else words[self.kind]
        if self.low is not None and self.high is not None:
            text += f" in {'(' if self.low_open else '['}{self.low:g}, {self.high:g}{')' if self.high_open else ']'}"
        elif self.low is not None:
            text += f" {'>' if self.low_open else '>='} {self.low:g}"
        elif self.high is not None:
            text += f" {'<' if self.high_open else '<='} {self.high:g}"
        if self.max_length is not None:
            unit = {str: "characters", dict: "keys"}.get(self.kind, "items")
            text += f" of at most {self.max_length:,} {unit}"
        if self.item is not None:
            text += f", each {self.item.describe()}"
        return ("null or " if self.optional else "") + text

    def problem(self, value: Any) -> str | None:
        """None when `value` is fine, else "must be ..., got ..."."""
        if value is None and self.optional:
            return None
        if not self._fits(value):
            shown = repr(value)
            return f"must be {self.describe()}, got {shown if len(shown) <= 60 else shown[:57] + '...'}"
        return None

    def _fits(self, value: Any) -> bool:
        if isinstance(value, bool) and self.kind is not bool:
            return False
        if self.kind is float:
            if not isinstance(value, (int, float)) or not math.isfinite(value):
                return False
        elif not isinstance(value, (list, tuple) if self.kind is list else self.kind):
            return False
        if self.choices is not None and value not in self.choices:
            return False
        if self.low is not None and (value <= self.low if self.low_open else value < self.low):
            return False
        if self.high is not None and (value >= self.high if self.high_open else value > self.high):
            return False
        if self.max_length is not None and len(value) > self.max_length:
            return False
        return self.item is None or all(self.item._fits(v) for v in value)


def check_fields(document: dict, fields: dict[str, Field], source: str | Path, where: str = "") -> None:
    """Check every key of `fields` that `document` holds; the first problem is one line naming `source` and the key."""
    for key, spec in fields.items():
        if key in document:
            problem = spec.problem(document[key])
            if problem:
                raise LungsoundError(f"{where}{key} {problem}", source)
