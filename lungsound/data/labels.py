"""Label vocabularies of ICBHI 2017 (methods.md section 1) in one place.

Class index = crackles + 2 * wheezes: (0,0) normal, (1,0) crackle, (0,1) wheeze, (1,1) both.
Device indices follow [SGSCL]: Meditron 0, LittC2SE 1, Litt3200 2, AKGC417L 3.
"""

from __future__ import annotations

CLASSES: tuple[str, ...] = ("normal", "crackle", "wheeze", "both")
DEVICES: tuple[str, ...] = ("Meditron", "LittC2SE", "Litt3200", "AKGC417L")
LOCATIONS: tuple[str, ...] = ("Tc", "Al", "Ar", "Pl", "Pr", "Ll", "Lr")
MODES: tuple[str, ...] = ("sc", "mc")
SEXES: tuple[str, ...] = ("M", "F")
# Age groups used as a metadata domain by [SGSCL]'s options: children, adults, elderly.
AGE_GROUPS: tuple[str, ...] = ("child", "adult", "elderly")
DIAGNOSES: tuple[str, ...] = (
    "Healthy", "URTI", "Asthma", "COPD", "LRTI", "Bronchiectasis", "Pneumonia", "Bronchiolitis",
)


def class_from_flags(crackles: int, wheezes: int) -> int:
    """Map the annotation's 0/1 flags to the 4-class label index."""
    return int(crackles) + 2 * int(wheezes)


def age_group(age: float | None) -> str | None:
    """Child under 18, adult 18 to 64, elderly 65 and over; None when the age is unknown."""
    if age is None:
        return None
    if age < 18:
        return "child"
    return "adult" if age < 65 else "elderly"
