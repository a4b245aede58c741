"""ICBHI recording names: `<patient>_<recording index>_<chest location>_<mode>_<device>` (docs/methods.md section 1).

The same recording is named differently across copies of the database: the challenge download calls 91 recordings
`_AKGC417L` or `_LittC2SE` that the split file calls `_Meditron`, and `226_1b1_Pl_sc` is `_LittC2SE` in some copies.
Recordings are therefore matched on `RecordingName.key`, the first four fields, never on the whole stem.

The vocabularies of the name's fields are the ICBHI format's own (lungsound.data.formats.icbhi declares them as its
device and chest-location vocabularies; everything else reads them from the database or the format).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from lungsound.errors import LungsoundError

# Device indices follow [SGSCL] (Kim et al., ICASSP 2024): Meditron 0, LittC2SE 1, Litt3200 2, AKGC417L 3.
DEVICES: tuple[str, ...] = ("Meditron", "LittC2SE", "Litt3200", "AKGC417L")
LOCATIONS: tuple[str, ...] = ("Tc", "Al", "Ar", "Pl", "Pr", "Ll", "Lr")  # trachea, anterior/posterior/lateral L/R
MODES: tuple[str, ...] = ("sc", "mc")  # single channel, multichannel

_STEM = re.compile(
    r"^(?P<patient>\d{3})_(?P<index>\d+[a-z]\d+)_(?P<location>[A-Z][a-z])_(?P<mode>[a-z]{2})_(?P<device>[A-Za-z0-9]+)$"
)


@dataclass(frozen=True)
class RecordingName:
    """The five fields of an ICBHI file stem."""

    patient: int
    index: str
    location: str
    mode: str
    device: str

    @property
    def stem(self) -> str:
        return f"{self.patient}_{self.index}_{self.location}_{self.mode}_{self.device}"

    @property
    def key(self) -> str:
        """Patient, recording index, chest location and mode: identical in every naming variant."""
        return f"{self.patient}_{self.index}_{self.location}_{self.mode}"

    def with_device(self, device: str) -> "RecordingName":
        return RecordingName(self.patient, self.index, self.location, self.mode, device)


def parse_stem(stem: str, source: str | None = None) -> RecordingName:
    """Parse a stem such as `101_1b1_Al_sc_Meditron`; raise `LungsoundError` naming `source` when it is not one."""
    match = _STEM.match(stem.strip())
    if match is None:
        raise LungsoundError(f"'{stem}' is not an ICBHI recording name (<patient>_<index>_<location>_<mode>_<device>)",
                             source)
    fields = match.groupdict()
    problems = []
    if fields["location"] not in LOCATIONS:
        problems.append(f"chest location '{fields['location']}' is not one of {', '.join(LOCATIONS)}")
    if fields["mode"] not in MODES:
        problems.append(f"mode '{fields['mode']}' is not one of {', '.join(MODES)}")
    if fields["device"] not in DEVICES:
        problems.append(f"device '{fields['device']}' is not one of {', '.join(DEVICES)}")
    if problems:
        raise LungsoundError(f"recording name '{stem}': " + "; ".join(problems), source)
    return RecordingName(int(fields["patient"]), fields["index"], fields["location"], fields["mode"], fields["device"])


def is_recording_stem(stem: str) -> bool:
    """True when `stem` parses as an ICBHI recording name."""
    try:
        parse_stem(stem)
    except LungsoundError:
        return False
    return True
