"""The vocoder's step loop, `train_vocoder` (see `lungsound.generation.train` for what is trained and why).

It reuses the classifier engine's pieces rather than copying the trainer: `run_dir` (an exclusive run folder), the
weights-only `last.pt` state (`save_state` / `read_weights_only`), RNG capture, MLflow's `RunLogger` (a run that
raises ends FAILED, Ctrl-C or SIGTERM ends KILLED), torchrun's gradient averaging, and tqdm progress with steps/s.
"""

from __future__ import annotations

import tempfile
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import soundfile as sf
import torch
from tqdm.auto import tqdm

from lungsound.config import flatten, typed_from_dict
from lungsound.errors import LungsoundError
from lungsound.generation.batches import EpochBatcher
from lungsound.generation.diffusion import sample, training_loss
from lungsound.generation.mel import SAMPLE_RATE, vocoder_mel
from lungsound.generation.plots import mel_comparison
from lungsound.generation.train import (VocoderExperiment, build_vocoder, check_vocoder_config, crop_batch,
                                        training_clips)
from lungsound.generation.vocoder_io import save_vocoder
from lungsound.limits import check_stop_after
from lungsound.tracking import (CLIPS_TAG, DATA_ROOT_TAG, KIND_TAG, PROTOCOL_TAG, RUN_FOLDER_TAG, VOCODER_KIND,
                                RunLogger, ends_on_error, environment_tags)
from lungsound.training import distributed as dist_utils
from lungsound.training.checkpoint import read_weights_only, rng_state, save_state, set_rng_state
from lungsound.training.run import run_dir
from lungsound.training.trainer import resolve_device

EXAMPLES = 3  # clips vocoded at every sample_every step


def _load_resume(resume: str | Path) -> dict:
    path = Path(resume)
    path = path / "last.pt" if path.is_dir() else path
    state = read_weights_only(path)
    needed = {"config", "step", "model", "optimizer", "scaler", "rng", "folder", "losses"}
    if not isinstance(state, dict) or not needed <= set(state) or state.get("kind") != "vocoder":
        raise LungsoundError("not a lungsound vocoder training state", path)
    state["path"] = str(path)
    source = f"{path} (config)"
    state["config"] = check_vocoder_config(typed_from_dict(VocoderExperiment, state["config"], source), source)
    return state


def train_vocoder(cfg: VocoderExperiment | None, *, resume: str | Path | None = None, stop_after: int | None = None,
                  progress: bool = True, track: bool = True) -> dict:
    """Train (or, with `resume`, continue) a vocoder; returns {run_id, folder, vocoder, step, loss, finished}."""
    check_stop_after(stop_after)
    dist_utils.init_from_env()
    state = _load_resume(resume) if resume else None
    cfg = state["config"] if state else cfg
    main = dist_utils.rank() == 0
    device = resolve_device(cfg.train.device)
    if cfg.train.threads:
        torch.set_num_threads(cfg.train.threads)
    torch.manual_seed(cfg.train.seed)
    d = cfg.data
    clips = training_clips(d.root, d.split, d.duration, cfg.train.protocol, d.val_fraction, d.val_seed,
                           progress=progress and main, use_cache=d.cache)
    batcher = EpochBatcher(len(clips.labels), cfg.train.batch_size, cfg.train.seed, rank=dist_utils.rank(),
                           world=dist_utils.world_size())
    model, dw_config = build_vocoder(cfg)
    model.to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=cfg.train.lr)
    amp = cfg.train.amp and device.type == "cuda"
    scaler = torch.amp.GradScaler("cuda", enabled=amp)
    run_name = cfg.tracking.run_name or cfg.name
    logger, losses, start = None, [], 1
    if state:
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scaler.load_state_dict(state["scaler"])
        set_rng_state(state["rng"])
        if "batcher" in state:
            batcher.load_state_dict(state["batcher"], state["path"])
        else:  # a state saved before the epoch batches: stand where a new run would after as many steps
            batcher.seek(state["step"])
        folder, losses, start = Path(state["folder"]), list(state["losses"]), state["step"] + 1
        if main and track and state.get("run_id"):
            logger = RunLogger.resume(state["run_id"])
    elif main:
        if track:
            logger = RunLogger.start(cfg.tracking.experiment, run_name,
                                     {**environment_tags(), KIND_TAG: VOCODER_KIND, PROTOCOL_TAG: cfg.train.protocol,
                                      DATA_ROOT_TAG: clips.root, CLIPS_TAG: len(clips.labels)})
            logger.log_params(flatten(asdict(cfg)))
        folder = run_dir(cfg.tracking, run_name, logger.run_id if logger else None)
        if logger:
            logger.set_tags({RUN_FOLDER_TAG: str(folder.resolve())})
    else:
        folder = Path(cfg.tracking.output_dir) / cfg.tracking.experiment / f"{run_name}-rank{dist_utils.rank()}"
    dist_utils.broadcast_parameters([model])
    with ends_on_error(logger):
        return _loop(cfg, model, dw_config, optimizer, scaler, amp, device, clips, batcher, folder, logger, losses,
                     start, stop_after, progress and main, main)


def _loop(cfg, model, dw_config, optimizer, scaler, amp, device, clips, batcher: EpochBatcher, folder: Path, logger,
          losses: list, start: int, stop_after, progress: bool, main: bool) -> dict:
    t = cfg.train
    bar = tqdm(total=t.steps, initial=start - 1, desc="vocoder", unit="step", disable=not progress,
               dynamic_ncols=True)
    window, t0 = [], time.perf_counter()
    step = start - 1
    for step in range(start, t.steps + 1):
        g = torch.Generator().manual_seed(t.seed * 1_000_003 + step * 7919 + dist_utils.rank())
        audio, mel, labels = crop_batch(clips, batcher.next(), cfg.data.crop_frames, g)
        audio, mel = audio.to(device), mel.to(device)
        model.train()
        with torch.autocast(device_type=device.type, enabled=amp):
            loss = training_loss(model, audio, mel, generator=g,
                                 class_label=labels.to(device) if dw_config.num_classes else None)
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        dist_utils.average_gradients(optimizer)
        scaler.step(optimizer)
        scaler.update()
        window.append(float(loss.detach()))
        bar.update()
        if step % t.log_every == 0 or step == t.steps:
            losses.append([step, float(np.mean(window))])
            rate = len(window) / max(1e-9, time.perf_counter() - t0)
            bar.set_postfix(loss=f"{losses[-1][1]:.4f}")
            if logger:
                logger.log_metrics({"loss": losses[-1][1], "steps_per_second": rate}, step=step)
            window, t0 = [], time.perf_counter()
        if main and (step % t.checkpoint_every == 0 or step == t.steps or step == stop_after):
            _checkpoint(cfg, model, dw_config, optimizer, scaler, batcher, folder, logger, losses, step, clips.root)
        if main and logger and (step % t.sample_every == 0 or step == t.steps):
            _log_examples(model, clips, logger, step)
        if stop_after is not None and step >= stop_after and step < t.steps:
            break
    bar.close()
    finished = step >= t.steps
    if logger:
        logger.log_artifact(folder / "vocoder", "vocoder")
        logger.end("FINISHED" if finished else "KILLED")
    return {"run_id": logger.run_id if logger else None, "folder": folder, "vocoder": folder / "vocoder",
            "step": step, "loss": losses[-1][1] if losses else float("nan"), "finished": finished}


def _checkpoint(cfg, model, dw_config, optimizer, scaler, batcher: EpochBatcher, folder: Path, logger, losses,
                step: int, root: str) -> None:
    save_state(folder / "last.pt", {
        "kind": "vocoder", "config": asdict(cfg), "step": step, "model": model.state_dict(),
        "optimizer": optimizer.state_dict(), "scaler": scaler.state_dict(), "rng": rng_state(),
        "batcher": batcher.state_dict(), "folder": str(folder), "losses": losses,
        "run_id": logger.run_id if logger else None})
    save_vocoder(folder / "vocoder", model, dw_config,
                 {"step": step, "protocol": cfg.train.protocol, "data_root": root, "split": cfg.data.split,
                  "duration": cfg.data.duration, "val_fraction": cfg.data.val_fraction, "val_seed": cfg.data.val_seed,
                  "loss": losses[-1][1] if losses else None, "experiment": cfg.name})


@torch.no_grad()
def _log_examples(model, clips, logger, step: int) -> None:
    """A few training cycles vocoded from their mels (fast schedule): wavs and a real-vs-generated mel picture."""
    picks = [int(np.flatnonzero(clips.labels == c)[0]) for c in np.unique(clips.labels)][:EXAMPLES]
    real = torch.stack([torch.from_numpy(np.array(clips.waves[clips.rows[i]], dtype=np.float32)) for i in picks])
    mels = vocoder_mel(real).to(next(model.parameters()).device)
    fake = sample(model, mels, schedule="fast", generator=torch.Generator().manual_seed(step)).cpu()
    with tempfile.TemporaryDirectory() as tmp:
        for k, i in enumerate(picks):
            sf.write(Path(tmp) / f"step{step:08d}_{k}_{clips.source[i][0]}_real.wav", real[k].numpy(), SAMPLE_RATE)
            sf.write(Path(tmp) / f"step{step:08d}_{k}_{clips.source[i][0]}_generated.wav", fake[k].numpy(), SAMPLE_RATE)
        mel_comparison(mels.cpu().numpy(), vocoder_mel(fake).numpy(), Path(tmp) / f"mels_step{step:08d}.png",
                       titles=[clips.source[i][0] for i in picks])
        logger.log_artifact(tmp, "examples")
