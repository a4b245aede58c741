"""Model-card sections beyond the ICBHI test scores: the data split a model was trained on, and its external validation.

Shared by the app's model card and the card `lungsound push` writes (`lungsound.sharing.card`), so both say the same.
`card_sections(card)` returns Markdown blocks for the card of `Predictor.card`:

- a note when the model was trained on another split than the official ICBHI one (`card["split"]`, the config's
  `data.split`): a held-out stethoscope (`device_out=<D>`: its test scores are on a stethoscope it never heard), the
  leak-free official split (`official_noleak`), or a patient fold (`fold0`..`fold4`);
- a table of the external validations in meta.json (`card["evaluations"]`, written by `lungsound validate-external`,
  `lungsound.external.record`): per dataset, recordings scored, and recording-level sensitivity and specificity for
  crackles and for wheezes with their Wilson 95% intervals, and the date measured. Entries that are not objects, and
  figures that are not numbers, are shown as "n/a" rather than breaking the card.
"""

from __future__ import annotations

import math
from typing import Any

from lungsound.data.splits import DEVICE_OUT


def card_sections(card: dict[str, Any]) -> list[str]:
    """The Markdown blocks to add to the model card (none for an official-split model without external figures)."""
    parts = []
    split = split_text(card.get("split"))
    if split:
        parts.append(f"**Data split**: {split}")
    table = evaluations_markdown(card.get("evaluations"))
    if table:
        parts.append(table)
    return parts


def split_text(split: Any) -> str | None:
    """What a non-official training split means for the test scores (None for the official split or none)."""
    if not isinstance(split, str) or split in ("", "official"):
        return None
    if split.startswith(DEVICE_OUT):
        device = split[len(DEVICE_OUT):]
        return (f"tested on a held-out stethoscope (`{split}`): the model was trained without any {device} "
                f"recording, and its test scores are on {device} recordings only, a stethoscope it never heard.")
    if split == "official_noleak":
        return ("the official ICBHI split made leak-free (`official_noleak`): test recordings of patients who also "
                "have training recordings are set aside, so no test patient was seen in training.")
    if split.startswith("fold") and split[4:].isdigit():
        return (f"patient fold {split[4:]} of 5 held out for testing (`{split}`), not the official split: its "
                "scores are not comparable with published ICBHI figures.")
    return f"`{split}`, not the official ICBHI split: its scores are not comparable with published ICBHI figures."


def evaluations_markdown(evaluations: Any) -> str | None:
    """A Markdown table of the external validations (None when there are none)."""
    if not isinstance(evaluations, dict) or not evaluations:
        return None
    header = ("| Dataset | Recordings scored | Crackles: sensitivity | Crackles: specificity | Wheezes: sensitivity "
              "| Wheezes: specificity | Measured |\n|---|---|---|---|---|---|---|")
    rows = [_row(key, entry) for key, entry in sorted(evaluations.items())]
    return ("**External validation** (whole recordings of another dataset against the findings in its labels; "
            "95% Wilson intervals in brackets)\n\n" + header + "\n" + "\n".join(rows) + "\n\nRecording labels "
            "say only whether crackles or wheezes were heard somewhere in the recording, and a few dozen recordings "
            "give wide intervals: read these figures as indicative.")


def _row(key: str, entry: Any) -> str:
    if not isinstance(entry, dict):
        return f"| {_cell(key)} | n/a | n/a | n/a | n/a | n/a | n/a |"
    title = str(entry.get("title") or entry.get("dataset") or key).split(" (")[0]
    scored, found = entry.get("scored", entry.get("n")), entry.get("recordings")
    recordings = (f"{scored} of {found}" if _is_number(scored) and _is_number(found) else
                  str(scored) if _is_number(scored) else "n/a")
    cells = [title, recordings]
    for finding in ("crackle", "wheeze"):
        scores = entry.get(finding) if isinstance(entry.get(finding), dict) else {}
        ci = scores.get("ci") if isinstance(scores.get("ci"), dict) else {}
        cells += [_rate(scores.get(measure), ci.get(measure)) for measure in ("sensitivity", "specificity")]
    cells.append(str(entry.get("date", "n/a"))[:10])
    return "| " + " | ".join(_cell(c) for c in cells) + " |"


def _rate(value: Any, ci: Any) -> str:
    if not _is_number(value):
        return "n/a"
    text = f"{100 * value:.1f}%"
    if isinstance(ci, (list, tuple)) and len(ci) == 2 and all(_is_number(v) for v in ci):
        text += f" [{100 * ci[0]:.1f}-{100 * ci[1]:.1f}%]"
    return text


def _cell(value: Any) -> str:
    return str(value).replace("|", "/")


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(float(v))
