"""What a dataset adapter for external validation returns: labelled recordings, and the ones it cannot label.

An external dataset is a folder of whole recordings whose labels say, per recording, whether crackles and whether
wheezes are present (the recording-level finding `lungsound.inference.result` reports). An adapter finds the
recordings under a root folder and turns each one into either a `LabelledRecording` (crackle / wheeze flags, the
groups it belongs to for per-group figures, and what else its label says) or an `Unmappable` with a one-line reason.
Every recording found is one or the other: nothing is dropped silently.

Adapters are registered by name on `ADAPTERS` (`ADAPTERS.add(adapter.name, adapter)` in the adapter's module, which
`lungsound.external` imports); `lungsound validate-external --dataset` lists and looks up those names.

Findings use the summary's vocabulary, in the order of the class indices (normal, crackle, wheeze, both), so a
confusion table of findings is `lungsound.evaluation.metrics.confusion_matrix` over these indices.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from lungsound.registry import Registry

FINDINGS = ("normal", "crackles", "wheezes", "both")  # Prediction.summary["label"] values, in class-index order


def finding_of(crackle: bool, wheeze: bool) -> str:
    """The recording-level finding of two presence flags: both, crackles, wheezes or normal."""
    return FINDINGS[int(bool(crackle)) + 2 * int(bool(wheeze))]


def flags_of(finding: str) -> tuple[bool, bool]:
    """(crackles present, wheezes present) of a finding."""
    index = FINDINGS.index(finding)
    return bool(index & 1), bool(index & 2)


@dataclass(frozen=True)
class LabelledRecording:
    """A recording whose label maps to crackles present / wheezes present."""

    file: Path
    crackle: bool
    wheeze: bool
    groups: dict[str, str] = field(default_factory=dict)  # group kind -> value, e.g. {"position": "posterior lower"}
    details: dict[str, Any] = field(default_factory=dict)  # everything else the label says (JSON-ready values)

    @property
    def finding(self) -> str:
        return finding_of(self.crackle, self.wheeze)


@dataclass(frozen=True)
class Unmappable:
    """A recording that cannot be scored, and why (one line)."""

    file: Path
    reason: str

    def to_dict(self) -> dict[str, str]:
        return {"file": str(self.file), "reason": self.reason}


@dataclass
class ExternalSet:
    """Every recording an adapter found under `root`: labelled or unmappable."""

    dataset: str
    root: Path
    labelled: list[LabelledRecording]
    unmappable: list[Unmappable]

    @property
    def found(self) -> int:
        return len(self.labelled) + len(self.unmappable)


class DatasetAdapter(Protocol):
    """One external dataset: its registry name, a title for reports, the group kinds its recordings carry (each gives
    per-group figures), and `load(root)`, which raises `LungsoundError` when `root` holds no recording at all."""

    name: str
    title: str
    group_kinds: tuple[str, ...]

    def load(self, root: str | Path) -> ExternalSet: ...



ADAPTERS: Registry[DatasetAdapter] = Registry("external dataset")  # name -> adapter instance
