"""Named train/test splits of an ICBHI-format database, and the evaluations beyond the official split they enable.

- `official`: the challenge's 60/40 split file (docs/methods.md section 1).
- `fold0` .. `fold4`: patient folds of `patient_list_foldwise.txt`; fold k is the test side, the other four train.
- `official_noleak`: the official split with its patient leak removed. Patients 156 and 218 have recordings on both
  sides of the official split; their *test-side* recordings are set aside, so no test patient was seen in training. The
  training side is unchanged, so a model trained on `official` and one trained on `official_noleak` saw the same cycles.
  On the real annotation files: train 4,142 cycles as in `official`; test 2,636 of 2,756 cycles (12 recordings set aside; the table
  per class is in data_cards/icbhi_2017.md).
- `device_out=<D>` (D one of Meditron, LittC2SE, Litt3200, AKGC417L): leave one stethoscope out.
  Test side: the held-out device's recordings of the official test side, so the figure can be put beside the
  in-distribution model's score on exactly the same cycles. LittC2SE has no recording on the official test side; its
  fold tests on every LittC2SE recording (all 87 are official training recordings), and there is no in-distribution
  figure to put beside it (the official model trained on those very recordings).
  Training side: the official training recordings of the other three devices, minus every recording of a patient who
  has a recording on the test side (patients 158 and 226 were recorded with LittC2SE and another device; 218 with
  Litt3200 and Meditron), so a fold is patient-disjoint as well as device-disjoint.
  Everything else (the other devices' test recordings, the held-out device's training recordings) is in neither side.

`assign(split, recordings)` takes recordings already placed by the official split (or a fold) and places them by
`split`, returning what it set aside with the reason, which `lungsound data stats` prints.
"""

from __future__ import annotations

from collections import defaultdict

from lungsound.data.naming import DEVICES
from lungsound.errors import LungsoundError

DEVICE_OUT = "device_out="
FOLD_SPLITS = tuple(f"fold{k}" for k in range(5))
DEVICE_OUT_SPLITS = tuple(f"{DEVICE_OUT}{d}" for d in DEVICES)
SPLIT_CHOICES = ("official", *FOLD_SPLITS, "official_noleak", *DEVICE_OUT_SPLITS)


def check_split(name: str) -> str:
    """`name` when it is a known split, else a `LungsoundError` listing them."""
    if name in SPLIT_CHOICES:
        return name
    if isinstance(name, str) and name.startswith(DEVICE_OUT):
        raise LungsoundError(f"unknown device {name[len(DEVICE_OUT):]!r} in split {name!r}; "
                             f"choose one of {', '.join(DEVICES)}")
    raise LungsoundError(f"unknown split {name!r}; choose one of {', '.join(SPLIT_CHOICES)}")


def base_split(name: str) -> str:
    """The split whose side files place the recordings before `name` refines them (`official` or a fold)."""
    return name if name == "official" or name in FOLD_SPLITS else "official"


def held_out_device(name: str) -> str | None:
    """The device a `device_out=<D>` split holds out (None for other splits)."""
    return name[len(DEVICE_OUT):] if name.startswith(DEVICE_OUT) else None


def assign(name: str, recordings: list) -> dict[str, list[str]]:
    """Re-place `recordings` (each with `.split` from `base_split(name)`, `.device`, `.patient`, `.stem`) by split
    `name`, in place. Returns reason -> stems of the recordings set aside (in neither side)."""
    check_split(name)
    if name == "official_noleak":
        return _noleak(recordings)
    device = held_out_device(name)
    return _device_out(device, recordings) if device else {}


def _set_aside(recordings: list, keep: dict[int, str]) -> dict[str, list[str]]:
    """Give each recording `keep[id]`'s side ("train"/"test") or a reason for leaving it out (side None)."""
    aside: dict[str, list[str]] = defaultdict(list)
    for rec in recordings:
        verdict = keep.get(id(rec))
        if verdict in ("train", "test"):
            rec.split = verdict
        elif rec.split is not None:
            aside[verdict].append(rec.stem)
            rec.split = None
    return dict(aside)


def _noleak(recordings: list) -> dict[str, list[str]]:
    train_patients = {r.patient for r in recordings if r.split == "train"}
    leaked = sorted({r.patient for r in recordings if r.split == "test" and r.patient in train_patients})
    reason = f"test recordings of patients also on the training side ({', '.join(map(str, leaked))})"
    keep = {id(r): reason if r.split == "test" and r.patient in train_patients else r.split for r in recordings}
    return _set_aside(recordings, keep)


def _device_out(device: str, recordings: list) -> dict[str, list[str]]:
    placed = [r for r in recordings if r.split in ("train", "test")]
    own = [r for r in placed if r.device == device]
    test = [r for r in own if r.split == "test"] or own  # LittC2SE: no official test recording -> all of its recordings
    if not test:
        raise LungsoundError(f"split {DEVICE_OUT}{device}: no recording of device {device} in this database")
    test_ids = {id(r) for r in test}
    test_patients = {r.patient for r in test}
    keep: dict[int, str] = {}
    for rec in placed:
        if id(rec) in test_ids:
            keep[id(rec)] = "test"
        elif rec.device == device:
            keep[id(rec)] = f"{device} training recordings (the held-out device is only tested)"
        elif rec.split == "test":
            keep[id(rec)] = "official test recordings of the other devices"
        elif rec.patient in test_patients:
            keep[id(rec)] = f"training recordings of patients with a {device} test recording (patient-disjoint fold)"
        else:
            keep[id(rec)] = "train"
    return _set_aside(placed, keep)
