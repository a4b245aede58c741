"""One tracked training run: `fit`.

`fit` wraps the `Trainer` loop with epoch selection per protocol, a training-state checkpoint every epoch, the selected
model folder, MLflow logging, and `resume`, which reopens the same MLflow run and continues from the next epoch.

Run folder: `<output_dir>/<experiment>/<run name>-<MLflow run id[:12]>/` (a random id when untracked), created
exclusively, so two trainings started together can never share a folder, whatever their names and overrides. It holds
`last.pt` (the training state, written atomically) and `best/` (the selected model, swapped in as a whole folder, with
the selected epoch's evaluation `evaluation.npz`). A run that raises or is interrupted ends its MLflow run as FAILED or
KILLED. Resuming checks `best/` and rebuilds it from `last.pt` (which keeps the selected epoch's weights) if damaged.

One evaluation per epoch: selection, the logged per-epoch metrics, the final metrics, the test report and the
calibration all come from the same forward pass of that epoch (same precision), never from a second evaluation.
Multi-seed groups are in `lungsound.training.seeds`.
"""

from __future__ import annotations

import hashlib
import io
import math
import tempfile
import time
import uuid
import warnings
from pathlib import Path

import numpy as np
import torch

from lungsound.config import ExperimentConfig, dump_config, flatten
from lungsound.errors import LungsoundError, one_line
from lungsound.evaluation.calibration import calibrate_checkpoint, reliability_diagram, softmax
from lungsound.evaluation.evaluate import Evaluation
from lungsound.evaluation.report import write_run_report
from lungsound.limits import check_stop_after
from lungsound.models.build import checkpoint_config
from lungsound.models.folder import EVAL_FILE, load_model, save_model
from lungsound.storage import exclusive_dir
from lungsound.tracking import (DATA_FINGERPRINT_TAG, DATA_ROOT_TAG, RUN_FOLDER_TAG, SEED_TAG, SELECTED_EPOCH_TAG,
                                SELECTION_FALLBACK_TAG, SELECTION_TAG, WORLD_SIZE_TAG, RunLogger, config_tags,
                                ends_on_error, environment_tags)
from lungsound.training import distributed as dist_utils
from lungsound.training.checkpoint import load_state, rng_state, save_state, set_rng_state
from lungsound.training.trainer import RunResult, Trainer


def _selection_key(cfg: ExperimentConfig, ev_select: Evaluation) -> float | None:
    """The number selection maximises, or None when the epoch is not eligible (Se <= min_se)."""
    s = ev_select.scores
    if not (s["se"] > cfg.train.min_se) or math.isnan(s["score"]):
        return None
    return float(s["score"])


def run_dir(tracking, run_name: str, run_id: str | None = None) -> Path:
    """Create this run's own folder under `tracking.output_dir/tracking.experiment` (exclusively: never one another
    run also uses)."""
    key = (run_id or uuid.uuid4().hex)[:12]
    return exclusive_dir(Path(tracking.output_dir) / tracking.experiment, f"{run_name}-{key}")


def _eval_arrays(ev_test: Evaluation, ev_val: Evaluation | None) -> dict[str, np.ndarray]:
    out = {"test_logits": ev_test.logits, "test_labels": ev_test.labels, "test_devices": ev_test.devices}
    if ev_val is not None:
        out |= {"val_logits": ev_val.logits, "val_labels": ev_val.labels, "val_devices": ev_val.devices}
    return out


def _npz_bytes(arrays: dict[str, np.ndarray]) -> bytes:
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    return buf.getvalue()


class _Best:
    """The selected epoch in memory: weights (CPU copy), meta and evaluation arrays, to write `best/` and rebuild it."""

    def __init__(self, model_state=None, meta=None, arrays=None):
        self.model_state, self.meta, self.arrays = model_state, meta, arrays

    def capture(self, model: torch.nn.Module, meta: dict, arrays: dict[str, np.ndarray]) -> None:
        self.model_state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
        self.meta, self.arrays = meta, arrays

    def write(self, folder: Path, cfg: ExperimentConfig) -> None:
        save_model(folder, self.model_state, cfg, self.meta, extra={EVAL_FILE: _npz_bytes(self.arrays)})

    def to_state(self) -> dict:
        return {"model": self.model_state, "meta": self.meta,
                "arrays": {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in self.arrays.items()}}

    @classmethod
    def from_state(cls, d: dict) -> "_Best":
        return cls(d["model"], d["meta"], {k: v.numpy() for k, v in d["arrays"].items()})


def _check_best(folder: Path, best: _Best, cfg: ExperimentConfig) -> None:
    """On resume: `best/` must load and hold its evaluation; otherwise rebuild it from the training state."""
    try:
        load_model(folder)
        with np.load(folder / EVAL_FILE) as npz:
            npz["test_logits"]
    except (LungsoundError, OSError, ValueError, KeyError) as exc:
        warnings.warn(f"{folder}: damaged selected-model folder ({one_line(exc, limit=160)}); rebuilt from last.pt", stacklevel=3)
        best.write(folder, cfg)


def fit(cfg: ExperimentConfig, *, resume: str | Path | None = None, stop_after: int | None = None,
        parent_run_id: str | None = None, progress: bool = True, data=None, track: bool = True) -> RunResult:
    """Train one seed of `cfg`; with `resume` (a last.pt or its folder) continue an interrupted run."""
    check_stop_after(stop_after)

    dist_utils.init_from_env()
    state = load_state(resume) if resume else None
    if state is not None:
        cfg = state["config"]
    trainer = Trainer(cfg, data=data, progress=progress)
    main = dist_utils.rank() == 0
    run_name = state["run_name"] if state else (cfg.tracking.run_name or f"{cfg.name}-seed{cfg.train.seed}")
    logger, tags = None, None
    if main and track:
        if state is not None and state.get("run_id"):
            logger = RunLogger.resume(state["run_id"])
        else:
            tags = {**environment_tags(), **config_tags(cfg), SEED_TAG: cfg.train.seed,
                    DATA_ROOT_TAG: str(trainer.data.db.root), DATA_FINGERPRINT_TAG: _fingerprint(trainer),
                    WORLD_SIZE_TAG: dist_utils.world_size()}
            logger = RunLogger.start(cfg.tracking.experiment, run_name, tags, parent_run_id)
    with ends_on_error(logger):  # from the run's creation on: no write can leave it RUNNING
        if tags is not None:  # a new run
            logger.log_params(flatten(cfg.to_dict()))
            logger.log_dataset(**_dataset_input(cfg, trainer, tags[DATA_FINGERPRINT_TAG]))
            masking = getattr(trainer.model, "speech_masking_params", None)
            if masking is not None:  # the speech checkpoint's own masking and layer drop, as in effect
                logger.log_params({f"model.effective.{k}": v for k, v in masking().items()})
        return _train(cfg, trainer, state, logger, run_name, main, stop_after)


def _train(cfg: ExperimentConfig, trainer: Trainer, state: dict | None, logger, run_name: str, main: bool,
           stop_after: int | None) -> RunResult:
    history: list[dict[str, float]] = []
    best_key, best_epoch, start = None, 0, 1
    best = _Best()
    model_cfg = checkpoint_config(cfg, trainer.model)  # what best/config.yaml holds: rebuilds the model offline
    if state is not None:
        trainer.model.load_state_dict(state["model"])
        trainer.objective.load_state_dict(state["objective"])
        trainer.optimizer.load_state_dict(state["optimizer"])
        trainer.scaler.load_state_dict(state["scaler"])
        set_rng_state(state["rng"])
        history, best_key, best_epoch = state["history"], state["best_key"], state["best_epoch"]
        start = state["epoch"] + 1
        folder = Path(state["folder"])
        best = _Best.from_state(state["best"])
        if main:
            _check_best(folder / "best", best, model_cfg)
    elif main:
        folder = run_dir(cfg.tracking, run_name, logger.run_id if logger else None)
        if logger:
            logger.set_tags({RUN_FOLDER_TAG: str(folder.resolve())})
    else:
        folder = Path(cfg.tracking.output_dir) / cfg.tracking.experiment / f"{run_name}-rank{dist_utils.rank()}"

    for epoch in range(start, cfg.train.epochs + 1):
        t0 = time.time()
        logs = trainer.train_epoch(epoch)
        ev_test = trainer.evaluate("test")
        ev_val = trainer.evaluate("val") if cfg.train.protocol == "clean" else None
        metrics = {**logs, **ev_test.metrics("test"), **(ev_val.metrics("val") if ev_val else {}),
                   "epoch_seconds": time.time() - t0}
        history.append(metrics)
        key = _selection_key(cfg, ev_val if ev_val else ev_test)
        improved = key is not None and (best_key is None or key > best_key)
        if improved or best_epoch == 0:  # the first epoch is kept until an eligible one comes
            best_key, best_epoch = (key if improved else best_key), epoch
            if main:
                best.capture(trainer.model, _meta(cfg, epoch, metrics, best_key is None, trainer.data.db.devices),
                             _eval_arrays(ev_test, ev_val))
                best.write(folder / "best", model_cfg)
        if main:
            if logger:
                logger.log_metrics(metrics, step=epoch)
            save_state(folder / "last.pt", {
                "config": cfg.to_dict(), "run_name": run_name, "run_id": logger.run_id if logger else None,
                "folder": str(folder), "epoch": epoch, "model": trainer.model.state_dict(),
                "objective": trainer.objective.state_dict(), "optimizer": trainer.optimizer.state_dict(),
                "scaler": trainer.scaler.state_dict(), "rng": rng_state(), "history": history,
                "best_key": best_key, "best_epoch": best_epoch, "best": best.to_state()})
            # One line per epoch, with --quiet too (which only hides the per-batch bars); * marks the selected epoch.
            print(f"[{cfg.name} seed {cfg.train.seed}] epoch {epoch}/{cfg.train.epochs}  "
                  f"loss {logs.get('train_loss', float('nan')):.4f}  test Sp {ev_test.scores['sp']:.2f} "
                  f"Se {ev_test.scores['se']:.2f} Score {ev_test.scores['score']:.2f}"
                  + (f"  val Score {ev_val.scores['score']:.2f}" if ev_val else "")
                  + f"  {metrics['epoch_seconds']:.0f} s/epoch" + ("  *" if best_epoch == epoch else ""), flush=True)
        if stop_after is not None and epoch >= stop_after and epoch < cfg.train.epochs:
            if logger:
                logger.end("KILLED")
            return RunResult(logger.run_id if logger else None, {}, folder / "best", history, best_epoch, False)

    final = {f"final_{k}": v for k, v in history[best_epoch - 1].items() if k.startswith(("test_", "val_"))}
    final["selected_epoch"] = float(best_epoch)
    if main and "val_logits" in best.arrays:
        final.update(_calibrate(folder / "best", best.arrays, logger))
    if main and logger:
        logger.log_metrics(final)
        logger.set_tags({SELECTED_EPOCH_TAG: best_epoch,
                         SELECTION_TAG: "val" if cfg.train.protocol == "clean" else "test",
                         SELECTION_FALLBACK_TAG: str(best_key is None).lower()})
        _log_artifacts(logger, cfg, folder, best.arrays, best_epoch, trainer.data.db.devices)
        logger.end("FINISHED")
    return RunResult(logger.run_id if logger else None, final, folder / "best", history, best_epoch, True)


def _calibrate(folder: Path, arrays: dict[str, np.ndarray], logger) -> dict[str, float]:
    """Temperature scaling of the selected model on the validation split of its own epoch's evaluation."""
    logits, labels = arrays["val_logits"], arrays["val_labels"]
    record = calibrate_checkpoint(folder, logits, labels)
    if logger:
        with tempfile.TemporaryDirectory() as tmp:
            path = reliability_diagram(softmax(logits), labels, Path(tmp) / "reliability_diagram.png",
                                       title=f"validation split: ECE {100 * record['ece_before']:.1f}% -> "
                                             f"{100 * record['ece_after']:.1f}% (T = {record['temperature']:.2f})",
                                       calibrated=softmax(logits, record["temperature"]))
            logger.log_artifact(path, "report")
    return {"calibration_temperature": record["temperature"], "calibration_ece_before": record["ece_before"],
            "calibration_ece_after": record["ece_after"]}


def _fingerprint(trainer: Trainer) -> str:
    d = trainer.data
    h = hashlib.sha1()
    for ds in (d.train, d.test) + ((d.val,) if d.val is not None else ()):
        h.update(ds.labels.tobytes())
        h.update(np.asarray(ds.rows).tobytes())
        h.update(",".join(r.stem for r in ds.recordings).encode())
        h.update(getattr(ds, "fingerprint_extra", "").encode())  # a generated set's manifest
    return h.hexdigest()[:16]


def _dataset_input(cfg: ExperimentConfig, trainer: Trainer, fingerprint: str) -> dict:
    """The run's data as `RunLogger.log_dataset` records it: named after its folder (the built-in synthetic set is
    `synthetic-default`), digest = the data fingerprint, and the split, protocol and cycle counts as its profile."""
    d = trainer.data
    profile = {"split": d.db.split_name or "none", "protocol": cfg.train.protocol, "recordings": len(d.db.recordings),
               "train_cycles": len(d.train), "test_cycles": len(d.test), "val_cycles": len(d.val) if d.val else 0}
    generated = getattr(d.train, "generated", None)
    if generated is not None:  # [AFT]: the generated clips are part of the training cycles
        profile["generated_cycles"] = len(generated)
    return {"name": Path(d.db.root).resolve().name, "root": d.db.root, "digest": fingerprint, "profile": profile}


def _meta(cfg: ExperimentConfig, epoch: int, metrics: dict, fallback: bool, devices: tuple[str, ...]) -> dict:
    """The selected model's meta.json: the selection, and the device vocabulary its evaluation arrays index into."""
    return {"selected_epoch": epoch, "protocol": cfg.train.protocol, "method": cfg.method.name,
            "experiment": cfg.name, "seed": cfg.train.seed, "selection_fallback": fallback, "devices": list(devices),
            "metrics": {k: v for k, v in metrics.items() if k.startswith(("test_", "val_"))}}


def _log_artifacts(logger, cfg: ExperimentConfig, folder: Path, arrays: dict[str, np.ndarray], epoch: int,
                   devices: tuple[str, ...]) -> None:
    """The resolved config, the selected model, and its test report (confusion matrix PNG, per-class/device tables),
    from the selected epoch's own evaluation."""
    ev = Evaluation.from_arrays(arrays["test_logits"], arrays["test_labels"], arrays["test_devices"], devices)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        (tmp / "config.yaml").write_text(dump_config(cfg))
        logger.log_artifact(tmp / "config.yaml")
        title = f"{cfg.name} seed {cfg.train.seed}, epoch {epoch} ({cfg.train.protocol} protocol), test split"
        write_run_report(ev, tmp / "report", title=title)
        logger.log_artifact(tmp / "report", "report")
    logger.log_artifact(folder / "best", "model")

