"""Per-sample metadata: what is known about the patient and the recording a cycle comes from.

Every recording a data format reads carries one `SampleMeta` (`Recording.meta`, lungsound.data.formats), every dataset
item carries its recording's (`Sample.meta`, lungsound.data.dataset), and a training batch carries the list of its
items' records (`Batch.meta`, lungsound.methods.base), so an objective or a model conditioned on patient metadata has a
route to it. The fields are the ones the metadata-aided methods use (age, sex, chest location, device: the domains of
[SGSCL] Kim et al., ICASSP 2024, arXiv 2312.09603, and the text prompt of BTS, Kim et al., Interspeech 2024), plus
`extra` for what a corpus adds. The ICBHI format's `extra` holds `patient_location` (the chest location of the
patient-level metadata column, which the paper definitions use), `mode` (sc / mc), and `adult_bmi`, `child_weight`,
`child_height` (None where missing). Values are as the corpus gives them; the domain definitions of
`lungsound.data.labels` turn them into groups (an unknown value is None, never a guess).

The feature cache stores arrays only: metadata is rebuilt from the corpus's own files each time (it is cheap).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping

from lungsound.errors import LungsoundError

PROMPT_FIELDS = ("age", "sex", "location", "device")  # the four fields a metadata prompt or a domain reads
PATIENT_LOCATION = "patient_location"  # extra key: the patient-level chest location (ICBHI metadata.txt, 7th column)


@dataclass(frozen=True)
class SampleMeta:
    """One recording's metadata. `age` in years (None when unknown); `sex` "M", "F" or None; `location` the chest
    location code where this recording was taken (ICBHI: Tc, Al, Ar, Pl, Pr, Ll, Lr) or None; `device` the name of
    the stethoscope in the database's device vocabulary (`Database.devices`); `extra` what the corpus adds."""

    patient: int
    recording: str
    age: float | None = None
    sex: str | None = None
    location: str | None = None
    device: str | None = None
    extra: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self):
        if isinstance(self.patient, bool) or not isinstance(self.patient, int):
            raise LungsoundError(f"recording {self.recording}: patient must be an integer, got {self.patient!r}")
        if self.age is not None and (isinstance(self.age, bool) or not isinstance(self.age, (int, float))
                                     or not 0 <= self.age < float("inf")):
            raise LungsoundError(f"recording {self.recording}: age must be a finite number of years >= 0 or None, "
                                 f"got {self.age!r}")
        for name in ("sex", "location", "device"):
            value = getattr(self, name)
            if value is not None and not isinstance(value, str):
                raise LungsoundError(f"recording {self.recording}: {name} must be text or None, got {value!r}")
        if not isinstance(self.extra, Mapping):
            raise LungsoundError(f"recording {self.recording}: extra must be a mapping, got {self.extra!r}")

    def chest_location(self, definitions: str = "clean") -> str | None:
        """Where the chest location comes from under `definitions`: "paper" reads the patient-level column
        (`extra["patient_location"]`, one location per patient, as the reference code does), "clean" this
        recording's own `location`."""
        return self.extra.get(PATIENT_LOCATION) if definitions == "paper" else self.location

    def as_mapping(self, definitions: str = "clean") -> dict[str, Any]:
        """The four prompt fields as a plain mapping (`age`, `sex`, `location` under `definitions`, `device`)."""
        return {"age": self.age, "sex": self.sex, "location": self.chest_location(definitions), "device": self.device}

    def to_dict(self) -> dict[str, Any]:
        """Every field, `extra` as a plain dict (JSON-ready when the corpus's extra values are)."""
        return {"patient": self.patient, "recording": self.recording, "age": self.age, "sex": self.sex,
                "location": self.location, "device": self.device, "extra": dict(self.extra)}
