"""The KAUH lung sound dataset as an external test set (Fraiwan et al., Data in Brief 35 (2021) 106913; CC BY 4.0).

Labels are per recording, in the file name (data_cards/kauh.md):

    <filter mode><subject>_<diagnosis>,<sound types>,<chest location>,<age>,<sex>.wav
    e.g. BP101_Asthma,E W,P L M,12,F.wav

Each comma-separated field is stripped of surrounding spaces (real names have `P R L ,63`); inside a field, tokens are
separated by spaces (and `+`, `&`, `/`), case-insensitively.

Sound types -> finding (the mapping the toolkit scores against):

| code | meaning | effect |
|---|---|---|
| N | normal | normal (no crackles, no wheezes) |
| W | wheeze | wheezes present |
| C, Crep | crackle (crepitation) | crackles present |
| E, I | expiratory, inspiratory | timing of the next sound; ignored for the finding |
| B | bronchial breath sounds | not a crackle or a wheeze; ignored beside C or W |

So `E W` -> wheezes, `I C` -> crackles, `I C E W` -> both, `C B` -> crackles, `N` -> normal. Unmappable (reported with
the reason, never scored): `B` alone (bronchial breathing is abnormal, but neither crackles, wheezes nor normal), `E` or
`I` without a sound, `N` together with an abnormal code (contradictory), any other token (unknown code), an age that is
not 1-3 ASCII digits (`²` is a digit to `str.isdigit` but no number), and a name that does not follow the pattern
(not `BP`/`DP`/`EP` + subject number in ASCII digits + `_`, or not five comma-separated fields). A name that fails in
any other way is reported unmappable too: one bad name never stops the others.

Groups for per-group figures:

- `position`: chest surface and zone, e.g. "posterior lower". The location field is a surface (A anterior, P posterior)
  and, in either order, a side (L left, R right) and a zone (U upper, M middle, L lower), e.g. `P L M` and `A U R`.
  Of the two letters after the surface, U or M is the zone and R is the side; `L L` is left lower. Left and right are
  pooled to keep the groups large enough to say something (at most six groups); the full position is kept in the
  record's details. A field that does not parse this way gives "unrecognised location" (the recording is still scored).
- `filter_mode`: the Littmann 3200 filter, bell (BP), diaphragm (DP) or extended (EP), which changes the spectrum a lot.
"""

from __future__ import annotations

import re
from pathlib import Path

from lungsound.errors import LungsoundError, one_line
from lungsound.external.base import ADAPTERS, ExternalSet, LabelledRecording, Unmappable

FILTER_MODES = {"BP": "bell", "DP": "diaphragm", "EP": "extended"}
SOUND_CODES = {"N": "normal", "W": "wheeze", "C": "crackle", "CREP": "crackle", "B": "bronchial",
               "E": "expiratory", "I": "inspiratory"}
SURFACES = {"A": "anterior", "P": "posterior"}
SIDES = {"L": "left", "R": "right"}
ZONES = {"U": "upper", "M": "middle", "L": "lower"}
UNRECOGNISED_LOCATION = "unrecognised location"
AUDIO_SUFFIXES = (".wav",)

_PREFIX = re.compile(r"^(?P<mode>[A-Za-z]{2})(?P<subject>[0-9]{1,9})_(?P<rest>.+)$")  # ASCII digits only
_AGE = re.compile(r"[0-9]{1,3}")  # str.isdigit() is true for '²', which int() refuses
_TOKENS = re.compile(r"[\s+&/]+")


class KauhAdapter:
    """`lungsound validate-external --dataset kauh`: every `.wav` under the root, labelled from its file name."""

    name = "kauh"
    title = "KAUH lung sound dataset (King Abdullah University Hospital, Jordan)"
    group_kinds = ("position", "filter_mode")

    def load(self, root: str | Path) -> ExternalSet:
        root = Path(root)
        if not root.is_dir():
            raise LungsoundError("no such folder (expected the KAUH recordings, e.g. its AudioFiles folder)", root)
        files = sorted(p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in AUDIO_SUFFIXES)
        if not files:
            raise LungsoundError("no .wav recordings under this folder", root)
        labelled, unmappable = [], []
        for path in files:
            try:
                item = parse_recording(path)
            except Exception as exc:  # one name nobody foresaw never stops the others
                item = Unmappable(path, f"file name could not be parsed: unexpected "
                                        f"{one_line(exc, limit=200, with_type=True)}")
            (labelled if isinstance(item, LabelledRecording) else unmappable).append(item)
        return ExternalSet(self.name, root, labelled, unmappable)


def parse_recording(path: str | Path) -> LabelledRecording | Unmappable:
    """The label of one KAUH file name (see the module docstring), or why it has none."""
    path = Path(path)
    match = _PREFIX.match(path.stem)
    if match is None:
        return Unmappable(path, "file name does not follow <filter mode><subject>_<diagnosis>,<sound types>,"
                                "<chest location>,<age>,<sex>")
    mode = match["mode"].upper()
    if mode not in FILTER_MODES:
        return Unmappable(path, f"unknown filter mode {match['mode']!r} (expected BP, DP or EP)")
    fields = [f.strip() for f in match["rest"].split(",")]
    if len(fields) != 5:
        return Unmappable(path, f"file name has {len(fields)} comma-separated fields after the subject, expected 5 "
                                "(diagnosis, sound types, chest location, age, sex)")
    diagnosis, sounds, location, age, sex = fields
    if not _AGE.fullmatch(age):
        return Unmappable(path, f"age {age!r} is not a number of years (ASCII digits)")
    label = map_sound_types(sounds)
    if isinstance(label, str):
        return Unmappable(path, label)
    crackle, wheeze, bronchial = label
    surface_zone, position = parse_location(location)
    details = {"subject": int(match["subject"]), "filter_mode": mode, "diagnosis": diagnosis, "sound_types": sounds,
               "location": location, "position": position, "bronchial": bronchial,
               "age": int(age), "sex": sex.upper() if sex.upper() in ("M", "F") else None}
    return LabelledRecording(path, crackle, wheeze, {"position": surface_zone, "filter_mode": FILTER_MODES[mode]},
                             details)


def map_sound_types(field: str) -> tuple[bool, bool, bool] | str:
    """(crackles, wheezes, bronchial) of a sound-type field such as `I C E W`, or the reason it cannot be mapped."""
    tokens = [t for t in _TOKENS.split(field.strip().upper()) if t]
    if not tokens:
        return "no sound type in the file name"
    unknown = [t for t in tokens if t not in SOUND_CODES]
    if unknown:
        return (f"unknown sound-type code {unknown[0]!r} in {field.strip()!r} (known: N, W, C, Crep, B, E, I)")
    kinds = {SOUND_CODES[t] for t in tokens}
    crackle, wheeze, bronchial = "crackle" in kinds, "wheeze" in kinds, "bronchial" in kinds
    if "normal" in kinds:
        if crackle or wheeze or bronchial:
            return f"contradictory sound types {field.strip()!r}: normal (N) together with an abnormal sound"
        return False, False, False
    if crackle or wheeze:
        return crackle, wheeze, bronchial
    if bronchial:
        return (f"sound types {field.strip()!r} are bronchial breath sounds (B) only: neither crackles, wheezes nor "
                "normal")
    return f"sound types {field.strip()!r} give only the timing (E/I) and no sound"


def parse_location(field: str) -> tuple[str, str]:
    """(surface and zone group, full position) of a chest-location field such as `P L M` or `A U R` (see the module
    docstring); both are "unrecognised location" when it does not parse."""
    tokens = field.upper().split()
    if len(tokens) != 3 or tokens[0] not in SURFACES:
        return UNRECOGNISED_LOCATION, UNRECOGNISED_LOCATION
    a, b = tokens[1:]
    side, zone = (b, a) if a in ("U", "M") or b == "R" else (a, b)  # U/M is a zone, R a side; L fits either
    if side not in SIDES or zone not in ZONES:
        return UNRECOGNISED_LOCATION, UNRECOGNISED_LOCATION
    surface = SURFACES[tokens[0]]
    return f"{surface} {ZONES[zone]}", f"{surface} {SIDES[side]} {ZONES[zone]}"


ADAPTERS.add(KauhAdapter.name, KauhAdapter())
