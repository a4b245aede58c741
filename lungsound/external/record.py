"""Where external-validation figures are kept: the model folder's meta.json and the model's MLflow run.

- meta.json: `meta["evaluations"]["external:<dataset>"]` = `meta_entry(result)` (counts, sensitivity, specificity,
  their Wilson intervals, the confusion table, n scored, the date), written atomically like the calibration record of
  `lungsound.evaluation.calibration.calibrate_checkpoint`. The app's model card shows it (app/evaluations.py). A model loaded by
  MLflow run id is a downloaded copy, so its figures go to the run only.
- MLflow: metrics `external_<dataset>_{recordings,scored,unmappable}` and
  `external_<dataset>_{crackle,wheeze}_{sensitivity,specificity}[_ci_low|_ci_high]` (fractions; an undefined one, n = 0,
  is not logged), and the whole result as the artifact `external_validation/<dataset>.json`, on the run that trained
  the model: the run given by id, or for a model folder the run whose `run_folder` tag (set by `lungsound train`) is
  the folder's parent. No store, or no such run: nothing is logged, and `run_of_folder` says why. A model loaded from
  MLflow shows those figures too: `lungsound.inference.sources.run_evaluations` reads them back for any model loaded
  from a run (the compact record `meta_entry`, the key `evaluation_key` and `ARTIFACT_DIR` are defined there, with the
  reader).
"""

from __future__ import annotations

import json
import tempfile
from datetime import datetime, timezone
from pathlib import Path

from lungsound.errors import LungsoundError, one_line
from lungsound.inference.sources import ARTIFACT_DIR, evaluation_key, meta_entry
from lungsound.tracking import (RunLogger, artifact_paths, client, download_artifacts, live_run, run_of_model_folder,
                                store_exists, tracking_uri)

EVALUATIONS = "evaluations"


def save_to_meta(folder: str | Path, result: dict) -> Path:
    """Store `meta_entry(result)` under evaluations["external:<dataset>"] in the folder's meta.json (atomic)."""
    from lungsound.storage import atomic_write_json
    from lungsound.models.folder import META_FILE, read_meta

    folder = Path(folder)
    folder = folder.parent if folder.is_file() else folder
    path = folder / META_FILE
    if not path.is_file():
        raise LungsoundError(f"not a lungsound checkpoint: {META_FILE} is missing", folder)
    meta = read_meta(folder)
    meta.setdefault(EVALUATIONS, {})[evaluation_key(result["dataset"])] = meta_entry(result)
    try:
        atomic_write_json(path, meta)
    except OSError as exc:
        raise LungsoundError(f"cannot update {META_FILE}: {exc.strerror or exc}", folder) from None
    return path


def metrics_of(result: dict) -> dict[str, float]:
    """The MLflow metrics of a result (see the module docstring)."""
    prefix = f"external_{result['dataset']}"
    out = {f"{prefix}_recordings": result["recordings"], f"{prefix}_scored": result["scored"],
           f"{prefix}_unmappable": len(result["unmappable"])}
    for finding in ("crackle", "wheeze"):
        for measure in ("sensitivity", "specificity"):
            value, ci = result[finding][measure], result[finding]["ci"][measure]
            if value is None:
                continue
            name = f"{prefix}_{finding}_{measure}"
            out |= {name: value, f"{name}_ci_low": ci[0], f"{name}_ci_high": ci[1]}
    return {k: float(v) for k, v in out.items()}


def log_to_run(run_id: str, result: dict) -> str:
    """Log the metrics and the JSON artifact to an existing MLflow run; returns the artifact's path in the run."""
    mlf = client()
    live_run(mlf, run_id, "log an external validation to")  # a missing or deleted run: one line
    logger = RunLogger(mlf, run_id)  # not RunLogger.resume: the run keeps its status (FINISHED)
    logger.log_metrics(metrics_of(result))
    name = f"{result['dataset']}.json"
    with tempfile.TemporaryDirectory(prefix="lungsound-external-") as tmp:
        path = Path(tmp) / name
        dated = {**result, "date": datetime.now(timezone.utc).isoformat(timespec="seconds")}
        path.write_text(json.dumps(dated, indent=2, default=float) + "\n")
        logger.log_artifact(path, ARTIFACT_DIR)
    return f"{ARTIFACT_DIR}/{name}"


def run_of_folder(folder: str | Path) -> tuple[str | None, str]:
    """(run id, "") of the MLflow run that wrote this model folder, or (None, why not). Only an existing store is read
    (`lungsound.tracking.store_exists`): none is created."""
    if not store_exists():
        return None, "no MLflow store here ($MLFLOW_TRACKING_URI unset, no ./mlruns/mlflow.db)"
    try:
        run = run_of_model_folder(client(), folder)
    except Exception as exc:  # a locked or old-schema store: say so, the figures are still in meta.json
        return None, f"could not read the MLflow store {tracking_uri()}: {one_line(exc, with_type=True)}"
    if run is None:
        return None, f"no MLflow run in {tracking_uri()} wrote {Path(folder).resolve()}"
    return run.info.run_id, ""
