"""One tracked training run (`fit`) and a multi-seed group of them (`fit_seeds`).

`fit` wraps the `Trainer` loop with epoch selection per protocol, a training-state checkpoint every epoch
(`<output_dir>/<experiment>/<run name>/last.pt`), the selected model folder (`.../best/`), MLflow logging, and `resume`,
which reopens the same MLflow run and continues from the next epoch. `fit_seeds` makes one MLflow parent run with a child
per seed and logs the mean and std of every final metric on the parent.
"""

from __future__ import annotations

import copy
import math
import tempfile
import time
from pathlib import Path

import numpy as np

from lungsound.config import ExperimentConfig, dump_config, flatten
from lungsound.errors import LungsoundError
from lungsound.evaluation import Evaluation
from lungsound.training import distributed as dist_utils
from lungsound.training.checkpoint import load_state, rng_state, save_model, save_state, set_rng_state
from lungsound.training.trainer import RunResult, Trainer


def _selection_key(cfg: ExperimentConfig, ev_select: Evaluation) -> float | None:
    """The number selection maximises, or None when the epoch is not eligible (Se <= min_se)."""
    s = ev_select.scores
    if not (s["se"] > cfg.train.min_se) or math.isnan(s["score"]):
        return None
    return float(s["score"])


def run_dir(cfg: ExperimentConfig, run_name: str) -> Path:
    return Path(cfg.tracking.output_dir) / cfg.tracking.experiment / run_name


def fit(cfg: ExperimentConfig, *, resume: str | Path | None = None, stop_after: int | None = None,
        parent_run_id: str | None = None, progress: bool = True, data=None, track: bool = True) -> RunResult:
    """Train one seed of `cfg`; with `resume` (a last.pt or its folder) continue an interrupted run."""
    from lungsound.tracking import RunLogger, environment_tags

    dist_utils.init_from_env()
    state = load_state(resume) if resume else None
    if state is not None:
        cfg = state["config"]
    trainer = Trainer(cfg, data=data, progress=progress)
    main = dist_utils.rank() == 0
    run_name = state["run_name"] if state else (cfg.tracking.run_name or f"{cfg.name}-seed{cfg.train.seed}")
    folder = run_dir(cfg, run_name)
    if state is None and (folder / "last.pt").exists():
        folder = folder.with_name(f"{folder.name}-{time.strftime('%Y%m%d-%H%M%S')}")
    logger = None
    if main and track:
        if state is not None and state.get("run_id"):
            logger = RunLogger.resume(state["run_id"])
        else:
            tags = {**environment_tags(), "protocol": cfg.train.protocol, "method": cfg.method.name,
                    "model": cfg.model.name, "experiment_file": cfg.name, "seed": cfg.train.seed,
                    "data_root": str(trainer.data.db.root), "data_fingerprint": _fingerprint(trainer),
                    "world_size": dist_utils.world_size()}
            logger = RunLogger.start(cfg.tracking.experiment, run_name, tags, parent_run_id)
            logger.log_params(flatten(cfg.to_dict()))

    history: list[dict[str, float]] = []
    best_key, best_epoch, start = None, 0, 1
    if state is not None:
        trainer.model.load_state_dict(state["model"])
        trainer.objective.load_state_dict(state["objective"])
        trainer.optimizer.load_state_dict(state["optimizer"])
        trainer.scaler.load_state_dict(state["scaler"])
        set_rng_state(state["rng"])
        history, best_key, best_epoch = state["history"], state["best_key"], state["best_epoch"]
        start = state["epoch"] + 1
        folder = Path(state["folder"])

    select_on = "val" if cfg.train.protocol == "clean" else "test"
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
                save_model(folder / "best", trainer.model, cfg, _meta(cfg, epoch, history[-1], best_key is None))
        if main:
            if logger:
                logger.log_metrics(metrics, step=epoch)
            save_state(folder / "last.pt", {
                "config": cfg, "run_name": run_name, "run_id": logger.run_id if logger else None,
                "folder": str(folder), "epoch": epoch, "model": trainer.model.state_dict(),
                "objective": trainer.objective.state_dict(), "optimizer": trainer.optimizer.state_dict(),
                "scaler": trainer.scaler.state_dict(), "rng": rng_state(), "history": history,
                "best_key": best_key, "best_epoch": best_epoch})
            if progress:
                print(f"[{cfg.name} seed {cfg.train.seed}] epoch {epoch}/{cfg.train.epochs}  "
                      f"loss {logs.get('train_loss', float('nan')):.4f}  test Sp {ev_test.scores['sp']:.2f} "
                      f"Se {ev_test.scores['se']:.2f} Score {ev_test.scores['score']:.2f}"
                      + (f"  val Score {ev_val.scores['score']:.2f}" if ev_val else "")
                      + ("  *" if best_epoch == epoch else ""), flush=True)
        if stop_after is not None and epoch >= stop_after and epoch < cfg.train.epochs:
            if logger:
                logger.end("KILLED")
            return RunResult(logger.run_id if logger else None, {}, folder / "best", history, best_epoch, False)

    final = {f"final_{k}": v for k, v in history[best_epoch - 1].items() if k.startswith(("test_", "val_"))}
    final["selected_epoch"] = float(best_epoch)
    best = None
    if main and (trainer.data.val is not None or logger):
        from lungsound.training.checkpoint import load_model

        best, _, _ = load_model(folder / "best", device=trainer.device)  # the selected weights, loaded once
    if main and trainer.data.val is not None:
        final.update(_calibrate(folder / "best", best, trainer, logger))
    if main and logger:
        logger.log_metrics(final)
        logger.set_tags({"selected_epoch": best_epoch, "selection": select_on,
                         "selection_fallback": str(best_key is None).lower()})
        _log_artifacts(logger, cfg, folder, best, trainer, best_epoch)
        logger.end("FINISHED")
    return RunResult(logger.run_id if logger else None, final, folder / "best", history, best_epoch, True)


def _calibrate(folder: Path, model, trainer: Trainer, logger) -> dict[str, float]:
    """Temperature scaling of the selected model on the validation split; stored in its meta.json, diagram to MLflow."""
    from lungsound.calibration import calibrate_checkpoint, reliability_diagram, softmax
    from lungsound.evaluation import predict

    logits, labels, _ = predict(model, trainer.data.val, trainer.device, trainer.cfg.train.eval_batch_size)
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
    import hashlib

    d = trainer.data
    h = hashlib.sha1()
    for ds in (d.train, d.test) + ((d.val,) if d.val is not None else ()):
        h.update(ds.labels.tobytes())
        h.update(np.asarray(ds.rows).tobytes())
        h.update(",".join(r.stem for r in ds.recordings).encode())
    return h.hexdigest()[:16]


def _meta(cfg: ExperimentConfig, epoch: int, metrics: dict, fallback: bool) -> dict:
    return {"selected_epoch": epoch, "protocol": cfg.train.protocol, "method": cfg.method.name,
            "experiment": cfg.name, "seed": cfg.train.seed, "selection_fallback": fallback,
            "metrics": {k: v for k, v in metrics.items() if k.startswith(("test_", "val_"))}}


def _log_artifacts(logger, cfg: ExperimentConfig, folder: Path, model, trainer: Trainer, epoch: int) -> None:
    """The resolved config, the selected model, and its test report (confusion matrix PNG, per-class/device tables)."""
    from lungsound.evaluation import evaluate
    from lungsound.reports import write_run_report

    ev = evaluate(model, trainer.data.test, trainer.device, cfg.train.eval_batch_size)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        (tmp / "config.yaml").write_text(dump_config(cfg))
        logger.log_artifact(tmp / "config.yaml")
        title = f"{cfg.name} seed {cfg.train.seed}, epoch {epoch} ({cfg.train.protocol} protocol), test split"
        write_run_report(ev, tmp / "report", title=title)
        logger.log_artifact(tmp / "report", "report")
    logger.log_artifact(folder / "best", "model")


def parse_seeds(text: str | None, default: int) -> list[int]:
    """'1-5' -> [1..5]; '1,3,7' -> [1, 3, 7]; None -> [default]."""
    if not text:
        return [default]
    seeds: list[int] = []
    try:
        for part in str(text).split(","):
            if "-" in part:
                lo, hi = part.split("-")
                seeds.extend(range(int(lo), int(hi) + 1))
            else:
                seeds.append(int(part))
    except ValueError:
        raise LungsoundError(f"--seeds must look like 1-5 or 1,2,3, got {text!r}") from None
    if not seeds:
        raise LungsoundError(f"--seeds {text!r} selects no seed")
    return seeds


def fit_seeds(cfg: ExperimentConfig, seeds: list[int], progress: bool = True) -> dict:
    """One parent MLflow run, one child per seed; the parent gets mean and std of each final metric."""
    import os

    from lungsound.tracking import RunLogger, environment_tags

    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        raise LungsoundError("under torchrun, train one seed per launch: drop --seeds and set train.seed=N")
    parent = RunLogger.start(cfg.tracking.experiment, cfg.tracking.run_name or f"{cfg.name}",
                             {**environment_tags(), "protocol": cfg.train.protocol, "method": cfg.method.name,
                              "model": cfg.model.name, "experiment_file": cfg.name, "seeds": ",".join(map(str, seeds)),
                              "role": "parent"})
    parent.log_params(flatten(cfg.to_dict()))
    results = []
    try:
        for seed in seeds:
            child_cfg = copy.deepcopy(cfg)
            child_cfg.train.seed = seed
            child_cfg.tracking.run_name = f"{cfg.tracking.run_name or cfg.name}-seed{seed}"
            results.append(fit(child_cfg, parent_run_id=parent.run_id, progress=progress))
    except BaseException:
        parent.end("FAILED")
        raise
    summary = aggregate([r.metrics for r in results])
    parent.log_metrics(summary)
    parent.end("FINISHED")
    return {"parent_run_id": parent.run_id, "summary": summary, "results": results}


def aggregate(metrics: list[dict[str, float]]) -> dict[str, float]:
    """mean and (population) std over seeds of every metric the runs share: `<name>_mean`, `<name>_std`."""
    keys = sorted(set.intersection(*(set(m) for m in metrics))) if metrics else []
    out = {}
    for k in keys:
        values = np.array([m[k] for m in metrics], dtype=float)
        out[f"{k}_mean"], out[f"{k}_std"] = float(np.nanmean(values)), float(np.nanstd(values))
    return out
