"""Counts of a database per split, from the annotation files alone (`lungsound data stats`); devices are the
database's own vocabulary."""

from __future__ import annotations

from collections import Counter

from lungsound.data.database import Database
from lungsound.data.labels import CLASSES


def database_stats(db: Database) -> dict:
    """Recordings, cycles per class, recordings per device and patients, for 'train' and 'test'."""
    out: dict = {"root": str(db.root), "split": db.split_name}
    patients = {}
    for split in ("train", "test"):
        recs = db.select(split)
        labels = Counter(c.label for r in recs for c in r.cycles)
        devices = Counter(r.device for r in recs)
        patients[split] = {r.patient for r in recs}
        out[split] = {
            "recordings": len(recs),
            "cycles": sum(labels.values()),
            **{name: labels.get(i, 0) for i, name in enumerate(CLASSES)},
            "devices": {d: devices.get(d, 0) for d in db.devices},
            "patients": len(patients[split]),
            "recordings_with_audio": sum(r.audio is not None for r in recs),
        }
    out["patients_in_both_splits"] = sorted(patients["train"] & patients["test"])
    out["recordings"] = len(db.recordings)
    out["recordings_without_audio"] = len(db.report.missing_audio)
    out["unassigned_recordings"] = db.report.unmatched_recordings
    out["unmatched_split_entries"] = db.report.unmatched_split_entries
    out["renamed"] = [{"file": a, "split_file": b} for a, b in db.report.renamed]
    out["duplicates"] = db.report.duplicates
    out["set_aside"] = {reason: len(stems) for reason, stems in db.report.set_aside.items()}
    return out


def format_stats(stats: dict, title: str = "ICBHI") -> str:
    """A plain-text report of `database_stats` (`title`: the format's name for the corpus, `DataFormat.title`)."""
    cols = ["recordings", "cycles", *CLASSES, "patients"]
    devices = list(stats["train"]["devices"])  # the database's vocabulary, in its order
    lines = [f"{title}-format database at {stats['root']} (split: {stats['split']})", ""]
    lines.append(f"{'split':<6}" + "".join(f"{c:>12}" for c in cols))
    for split in ("train", "test"):
        lines.append(f"{split:<6}" + "".join(f"{stats[split][c]:>12}" for c in cols))
    lines += ["", "recordings per device:", f"{'split':<6}" + "".join(f"{d:>12}" for d in devices)]
    for split in ("train", "test"):
        lines.append(f"{split:<6}" + "".join(f"{stats[split]['devices'][d]:>12}" for d in devices))
    both = stats["patients_in_both_splits"]
    lines += ["", f"patients in both splits: {', '.join(map(str, both)) if both else 'none'}"]
    lines.append(f"recordings without audio: {stats['recordings_without_audio']} of {stats['recordings']}"
                 + (" (counts above come from the annotation files)" if stats["recordings_without_audio"] else ""))
    if stats["renamed"]:
        lines.append(f"recordings whose file name differs from the split file ({len(stats['renamed'])}): "
                     + ", ".join(f"{r['file']} -> {r['split_file']}" for r in stats["renamed"][:5]))
    for reason, n in stats.get("set_aside", {}).items():
        lines.append(f"set aside by split {stats['split']}: {n} recording(s), {reason}")
    for key, what in (("unassigned_recordings", "recordings with no split entry"),
                      ("unmatched_split_entries", "split entries with no annotation file"),
                      ("duplicates", "duplicate annotation files ignored")):
        if stats[key]:
            lines.append(f"{what} ({len(stats[key])}): {', '.join(stats[key][:10])}")
    return "\n".join(lines)
