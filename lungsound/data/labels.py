"""Label vocabularies of ICBHI 2017 (docs/methods.md section 1) in one place, and the two definitions of metadata domains.

Class index = crackles + 2 * wheezes: (0,0) normal, (1,0) crackle, (0,1) wheeze, (1,1) both.
The device and chest-location vocabularies belong to a data format (`Database.devices`, `Database.locations`; ICBHI's
are in lungsound.data.formats.icbhi, device indices after [SGSCL]: Meditron 0, LittC2SE 1, Litt3200 2, AKGC417L 3).

Metadata domains (the options of [SGSCL], Kim et al., ICASSP 2024, arXiv 2312.09603) come in two definitions, chosen by
the experiment's `train.protocol`:

- ``paper`` follows the reference code: age group adult 0 (age >= 19) / child 1 (under 19, AND a missing age); sex
  M 0 / anything else 1 (F, and a missing sex); chest location from the patient-level metadata column (the 7th column of
  `metadata.txt`: one location per patient, whatever recording it is), in the order Tc Al Ar Pl Pr Ll Lr; device as below.
  Every sample gets a domain except a location when `metadata.txt` has none for the patient.
- ``clean`` (this toolkit's definitions): age group child (under 18) / adult (18 to 64) / elderly (65 and over); sex
  M / F; chest location from the recording's own file name (where the stethoscope was for that recording); device as
  below. A missing age or sex, or a patient without metadata, is unknown (-1) and left out of the domain terms rather
  than counted in a group.

A domain's value for one sample is read from its metadata record (`domain_value`, lungsound.data.sample_meta); its
index is the value's position in the domain's vocabulary (`domain_vocabulary`), which for device and location is the
database's own.
"""

from __future__ import annotations

from typing import Protocol

from lungsound.data.sample_meta import SampleMeta
from lungsound.errors import LungsoundError

CLASSES: tuple[str, ...] = ("normal", "crackle", "wheeze", "both")
SEXES: tuple[str, ...] = ("M", "F")
# Age groups of the clean definitions: children, adults, elderly.
AGE_GROUPS: tuple[str, ...] = ("child", "adult", "elderly")
# Age groups of the paper definitions (the reference code's two classes, adult first).
PAPER_AGE_GROUPS: tuple[str, ...] = ("adult", "child")
PAPER_ADULT_AGE = 19
DIAGNOSES: tuple[str, ...] = (
    "Healthy", "URTI", "Asthma", "COPD", "LRTI", "Bronchiectasis", "Pneumonia", "Bronchiolitis",
)

DEFINITIONS: tuple[str, ...] = ("paper", "clean")
DOMAINS: tuple[str, ...] = ("device", "age_group", "sex", "location")  # the metadata domains (plus GENERATED_DOMAIN)


class Vocabularies(Protocol):
    """What holds a corpus's device and chest-location vocabularies: a `Database`, or a data format itself."""

    devices: tuple[str, ...]
    locations: tuple[str, ...]


def class_from_flags(crackles: int, wheezes: int) -> int:
    """Map the annotation's 0/1 flags to the 4-class label index."""
    return int(crackles) + 2 * int(wheezes)


def _check_definitions(definitions: str) -> None:
    if definitions not in DEFINITIONS:
        raise LungsoundError(f"domain definitions must be one of {', '.join(DEFINITIONS)}, got {definitions!r}")


def age_group(age: float | None, definitions: str = "clean") -> str | None:
    """Clean: child under 18, adult 18 to 64, elderly 65 and over, None when the age is unknown.
    Paper: adult at 19 and over, child otherwise, including an unknown age."""
    _check_definitions(definitions)
    if definitions == "paper":
        return "adult" if age is not None and age >= PAPER_ADULT_AGE else "child"
    if age is None:
        return None
    if age < 18:
        return "child"
    return "adult" if age < 65 else "elderly"


def sex_group(sex: str | None, definitions: str = "clean") -> str | None:
    """Clean: 'M' or 'F', None otherwise (unknown). Paper: 'M' for M, 'F' for anything else (including unknown)."""
    _check_definitions(definitions)
    if definitions == "paper":
        return "M" if sex == "M" else "F"
    return sex if sex in SEXES else None


GENERATED_DOMAIN = "generated"  # real 0 / generated 1, the flag [AFT]'s discriminator learns (lungsound.data.generated)


def domain_vocabulary(name: str, definitions: str, vocabularies: Vocabularies) -> tuple[str, ...]:
    """The values of metadata domain `name` (label i is value i) under `definitions`: the corpus's devices or chest
    locations (from `vocabularies`, a database or its format), sexes M / F, age groups adult / child (paper) or child /
    adult / elderly (clean)."""
    if name not in DOMAINS:
        raise LungsoundError(f"unknown domain {name!r}; choose one of {', '.join(DOMAINS)}")
    _check_definitions(definitions)
    if name == "device":
        return tuple(vocabularies.devices)
    if name == "location":
        return tuple(vocabularies.locations)
    if name == "sex":
        return SEXES
    return PAPER_AGE_GROUPS if definitions == "paper" else AGE_GROUPS


def domain_value(name: str, meta: SampleMeta, definitions: str = "clean") -> str | None:
    """The value of domain `name` for one sample's metadata (None when unknown): its device; its chest location (paper:
    the patient-level column, clean: the recording's own); its age group and sex group under `definitions`."""
    if name == "device":
        return meta.device
    if name == "location":
        return meta.chest_location(definitions)
    if name == "age_group":
        return age_group(meta.age, definitions)
    return sex_group(meta.sex, definitions)


def domain_indices(name: str, metas, definitions: str, vocabularies: Vocabularies) -> list[int]:
    """Index of each record's value of domain `name` in its vocabulary; -1 where unknown or outside it."""
    vocab = domain_vocabulary(name, definitions, vocabularies)
    position = {value: i for i, value in enumerate(vocab)}
    return [position.get(domain_value(name, meta, definitions), -1) for meta in metas]


def domain_size(name: str, definitions: str, vocabularies: Vocabularies) -> int:
    """How many values domain `name` takes under `definitions`: the corpus's devices (ICBHI 4) and chest locations
    (ICBHI 7), sex 2, age group 2 (paper: adult / child) or 3 (clean: child / adult / elderly), generated 2
    (real / generated)."""
    _check_definitions(definitions)
    if name == GENERATED_DOMAIN:
        return 2
    if name not in DOMAINS:
        raise LungsoundError(f"unknown domain {name!r}; choose one of {', '.join([*DOMAINS, GENERATED_DOMAIN])}")
    return len(domain_vocabulary(name, definitions, vocabularies))
