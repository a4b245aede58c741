"""Label vocabularies of ICBHI 2017 (methods.md section 1) in one place, and the two definitions of metadata domains.

Class index = crackles + 2 * wheezes: (0,0) normal, (1,0) crackle, (0,1) wheeze, (1,1) both.
Device indices follow [SGSCL]: Meditron 0, LittC2SE 1, Litt3200 2, AKGC417L 3.

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
"""

from __future__ import annotations

from lungsound.errors import LungsoundError

CLASSES: tuple[str, ...] = ("normal", "crackle", "wheeze", "both")
DEVICES: tuple[str, ...] = ("Meditron", "LittC2SE", "Litt3200", "AKGC417L")
LOCATIONS: tuple[str, ...] = ("Tc", "Al", "Ar", "Pl", "Pr", "Ll", "Lr")
MODES: tuple[str, ...] = ("sc", "mc")
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
# Domain name -> its vocabulary (label i is vocabulary[i]), per definitions.
DOMAIN_VOCABULARIES: dict[str, dict[str, tuple[str, ...]]] = {
    "clean": {"device": DEVICES, "age_group": AGE_GROUPS, "sex": SEXES, "location": LOCATIONS},
    "paper": {"device": DEVICES, "age_group": PAPER_AGE_GROUPS, "sex": SEXES, "location": LOCATIONS},
}


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


def domain_size(name: str, definitions: str = "clean") -> int:
    """How many values domain `name` takes under `definitions`: device 4, sex 2, location 7, age group 2 (paper: adult /
    child) or 3 (clean: child / adult / elderly), generated 2 (real / generated)."""
    _check_definitions(definitions)
    if name == GENERATED_DOMAIN:
        return 2
    vocabularies = DOMAIN_VOCABULARIES[definitions]
    if name not in vocabularies:
        raise LungsoundError(f"unknown domain {name!r}; choose one of {', '.join([*vocabularies, GENERATED_DOMAIN])}")
    return len(vocabularies[name])
