"""Run a model on every labelled recording of an external set and compare its recording-level findings with the labels.

Each labelled recording is analysed whole by `lungsound.inference.Predictor.predict` (segmentation "auto": detected
breathing cycles, else sliding windows) and its finding is the summary label of `lungsound.inference.result`
(crackles present when at least one segment has P(crackle) + P(both) > 0.5, wheezes likewise): the same rule the app
and `lungsound predict` report, not a second one. A recording the predictor refuses (unreadable, too short, silent,
...) joins the unmappable list with its one-line reason, so `recordings == scored + len(unmappable)` always holds.

The result (`validate_external`) is one JSON-ready dict:

- `dataset`, `title`, `root`, `model` (where the model came from), `segmentation`, `interval` (`stats.INTERVAL`);
- `recordings` (files found), `scored`, `unmappable` ([{file, reason}]);
- `crackle`, `wheeze`: `stats.binary_scores` (sensitivity, specificity, ci, counts), over all scored recordings;
- `confusion`: {labels: FINDINGS, matrix: rows labelled finding, columns predicted finding};
- `groups`: {kind: {value: {scored, crackle, wheeze, confusion}}} for each group kind of the adapter (KAUH: chest
  `position` and stethoscope `filter_mode`);
- `records`: per scored recording its file, labelled and predicted finding, probability, segments, groups, warnings.
"""

from __future__ import annotations

from pathlib import Path

from lungsound.errors import LungsoundError, one_line
from lungsound.external.base import FINDINGS, DatasetAdapter, ExternalSet, LabelledRecording, Unmappable, flags_of
from lungsound.external.stats import INTERVAL, binary_scores, finding_confusion


def validate_external(predictor, adapter: DatasetAdapter, data: str | Path | ExternalSet, *, segmentation: str = "auto",
                      max_seconds: float | None = 120.0, progress: bool = True) -> dict:
    """Score `predictor` (a `lungsound.inference.Predictor`) on an external set: `adapter.load(data)` of a root
    folder, or a set it has already loaded."""
    external = data if isinstance(data, ExternalSet) else adapter.load(data)
    records, failed = [], []
    for rec in _progress(external.labelled, progress, adapter.name):
        try:
            pred = predictor.predict(rec.file, segmentation=segmentation, max_seconds=max_seconds)
        except LungsoundError as exc:
            failed.append(Unmappable(rec.file, f"could not be analysed: {exc.problem}"))
            continue
        except (KeyboardInterrupt, SystemExit):
            raise
        except Exception as exc:  # anything unforeseen: reported for this recording, the others still go on
            failed.append(Unmappable(rec.file, f"could not be analysed: unexpected {one_line(exc, with_type=True)}"))
            continue
        records.append(_record(rec, pred))
    return summarise(external, adapter, records, failed, source=predictor.source, segmentation=segmentation)


def summarise(external: ExternalSet, adapter: DatasetAdapter, records: list[dict], failed: list[Unmappable], *,
              source: str = "", segmentation: str = "auto") -> dict:
    """The result dict of the module docstring from the scored records (`_record`) and the failed recordings."""
    unmappable = [u.to_dict() for u in external.unmappable + failed]
    out = {"dataset": external.dataset, "title": adapter.title, "root": str(external.root), "model": source,
           "segmentation": segmentation, "interval": INTERVAL,
           "recordings": external.found, "scored": len(records), "unmappable": unmappable,
           **_figures(records)}
    out["groups"] = {kind: {value: {"scored": len(members), **_figures(members)}
                            for value, members in _grouped(records, kind).items()}
                     for kind in adapter.group_kinds}
    out["records"] = records
    if out["recordings"] != out["scored"] + len(unmappable):  # every recording is scored or reported
        raise AssertionError("external validation lost a recording")
    return out


def _figures(records: list[dict]) -> dict:
    labelled, predicted = [r["label"] for r in records], [r["predicted"] for r in records]
    truth = [flags_of(f) for f in labelled]
    guess = [flags_of(f) for f in predicted]
    return {"crackle": binary_scores([t[0] for t in truth], [g[0] for g in guess]),
            "wheeze": binary_scores([t[1] for t in truth], [g[1] for g in guess]),
            "confusion": {"labels": list(FINDINGS), "matrix": finding_confusion(labelled, predicted)}}


def _grouped(records: list[dict], kind: str) -> dict[str, list[dict]]:
    groups: dict[str, list[dict]] = {}
    for r in records:
        groups.setdefault(r["groups"].get(kind, "unknown"), []).append(r)
    return dict(sorted(groups.items()))


def _record(rec: LabelledRecording, pred) -> dict:
    summary = pred.summary
    return {"file": str(rec.file), "label": rec.finding, "predicted": summary["label"],
            "probability": summary["probability"], "crackle_segments": summary["crackle_segments"],
            "wheeze_segments": summary["wheeze_segments"], "segments": len(pred.segments),
            "segmentation": pred.segmentation, "duration": pred.duration, "groups": dict(rec.groups),
            "details": dict(rec.details), "warnings": list(pred.warnings)}


def _progress(items: list, enabled: bool, name: str):
    from tqdm.auto import tqdm

    return tqdm(items, desc=f"validating on {name}", unit="recording", disable=not enabled)
