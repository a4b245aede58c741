"""The training loop shared by every method (docs/methods.md section 5).

Per epoch e = 1..E: set the cosine learning rate, run the steps (objective loss, backward, the optimiser of
`train.optimizer` (Adam by default; SAM takes two passes per step, lungsound.training.sam), moving-average blend),
evaluate, select, checkpoint. Selection follows the protocol: `paper` keeps the epoch with the best test Score among
those with Se > min_se (what the papers report); `clean` keeps the epoch with the best validation Score (patients held out
of the training split) and reports the test split at that epoch.

Determinism: the data order, the augmentation and the objective's random draws of epoch e depend only on (seed, e), so
a run resumed from the checkpoint of epoch k ends with the same metrics as an uninterrupted one.
Devices: CPU by default; CUDA with autocast + GradScaler when present; under `torchrun` (WORLD_SIZE > 1) each process
takes a disjoint shard of every epoch and gradients are averaged across processes (gloo on CPU, NCCL on GPU).
"""

from __future__ import annotations

import dataclasses
import random
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from lungsound.config import ExperimentConfig
from lungsound.errors import LungsoundError
from lungsound.evaluation.evaluate import Evaluation, evaluate
from lungsound.features.specaugment import SpecAugConfig, SpecAugment
from lungsound.data.dataset import collate_samples
from lungsound.data.formats import FORMATS
from lungsound.data.labels import Vocabularies, domain_size
from lungsound.data.sampler import BalancedOversampler, ClassWeightedSampler
from lungsound.errors import LungsoundError
from lungsound.methods import Batch, StepContext, class_weights_from_counts, create_objective, objective_spec
from lungsound.methods.repaugment import RepAugment
from lungsound.training import distributed as dist_utils
from lungsound.models.build import build_model, check_model_input, metadata_definitions
from lungsound.models.conditioning import bind_metadata
from lungsound.models.registry import METADATA_OPTIONS
from lungsound.training.accumulate import Replay, backward_chunks, split_batch
from lungsound.training.data import RunData, build_run_data
from lungsound.training.optim import MovingAverageBlend, build_optimizer, cosine_lr, set_lr, warmup_linear_lr
from lungsound.training.sam import SAM, sam_update


@dataclass
class RunResult:
    run_id: str | None
    metrics: dict[str, float]  # final metrics at the selected epoch
    checkpoint: Path  # the selected model folder
    history: list[dict[str, float]]
    selected_epoch: int
    finished: bool  # False when stopped early with stop_after


def resolve_device(name: str) -> torch.device:
    """The torch device of `train.device`; a device this machine does not have is a one-line error (not a driver
    traceback at the first tensor moved there)."""
    if name == "auto":
        local = dist_utils.local_rank()
        return torch.device(f"cuda:{local}" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise LungsoundError(f"train.device={name} is not a device (use auto, cpu, cuda, cuda:N or mps)") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise LungsoundError(f"train.device={name}, but CUDA is not available here (no GPU, no driver or a "
                                 "CPU-only torch): use train.device=auto or cpu")
        count = torch.cuda.device_count()
        if device.index is not None and device.index >= count:
            raise LungsoundError(f"train.device={name}, but this machine has {count} CUDA device(s): "
                                 f"cuda:0..cuda:{count - 1}")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise LungsoundError(f"train.device={name}, but Apple's MPS is not available here: use train.device=auto or "
                             "cpu")
    return device


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def make_augment(cfg: ExperimentConfig, generator: torch.Generator):
    if cfg.data.input != "fbank" or not cfg.augment.specaug:
        return lambda x: x
    return SpecAugment(SpecAugConfig(semantics=cfg.augment.semantics, per=cfg.augment.per), generator=generator)


def make_represent(cfg: ExperimentConfig, feature_dim: int) -> RepAugment:
    """The experiment's representation augmentation ([REPAUG]) for a `feature_dim`-d representation; the identity when
    augment.representation is none. A Rep-Mask width bound wider than the representation is refused here, before
    training (a tiny model of D < 288 takes augment.rep_max_width_ratio, or a smaller augment.rep_max_width)."""
    a = cfg.augment
    rep = RepAugment(mode=a.representation, fill=a.rep_fill, max_width=a.rep_max_width,
                     max_width_ratio=a.rep_max_width_ratio, blocks=a.rep_blocks, std=a.rep_std,
                     minority=a.rep_minority, gate=a.rep_gate)
    if rep.masks and rep.width(feature_dim) > feature_dim:
        raise LungsoundError(f"augment.rep_max_width={a.rep_max_width} is wider than the {feature_dim}-d representation "
                             f"of model {cfg.model.name!r}: set augment.rep_max_width to at most {feature_dim}, or "
                             "augment.rep_max_width_ratio (0.375 is the AST policy's 288 of 768)", cfg.name)
    return rep


def objective_params(cfg: ExperimentConfig, vocabularies: Vocabularies | None = None) -> dict:
    """The method's params as its objective gets them. DAT's `n_domains`, when the file does not give one, is the number
    of values of its domain under the protocol's definitions (`lungsound.data.labels.domain_size`: the database's
    devices and chest locations (ICBHI 4 and 7), 2 paper age groups, 2 sexes, 2 for real/generated); `vocabularies` is
    the training database (None: the data format's own lists). A value too small is refused by the config check."""
    params = {k: v for k, v in cfg.method.params.items() if k not in METADATA_OPTIONS}  # the model's (build_model)
    if cfg.method.name == "dat" and params.get("n_domains") is None:
        params["n_domains"] = domain_size(params.get("domain", "device"), cfg.train.protocol,
                                          vocabularies or FORMATS.get(cfg.data.format))
    return params


def to_batch(sample, domains: np.ndarray | None, device: torch.device) -> Batch:
    """A collated `Sample` (lungsound.data.dataset.collate_samples) on `device`, with `domain` the items' entries of
    `domains` and `meta` their metadata records."""
    domain = None if domains is None else torch.from_numpy(domains[sample.index.numpy()]).to(device)
    return Batch(x=sample.x.to(device, non_blocking=True), label=sample.label.to(device),
                 device=sample.device.to(device), domain=domain, index=sample.index.to(device), meta=sample.meta)


class Trainer:
    """Train `cfg` once (one seed). `fit()` returns the selected epoch's metrics and checkpoint."""

    def __init__(self, cfg: ExperimentConfig, data: RunData | None = None, progress: bool = True,
                 tracker=None):
        self.cfg, self.progress = cfg, progress
        self.rank = dist_utils.rank()
        self.device = resolve_device(cfg.train.device)
        if cfg.train.threads:
            torch.set_num_threads(cfg.train.threads)
        seed_everything(cfg.train.seed)
        check_model_input(cfg)  # before the data is built: a wrong pairing fails at once
        self.data = data or build_run_data(cfg, progress=progress and self.rank == 0)
        self.model = build_model(cfg).to(self.device)
        self.meta_definitions = metadata_definitions(cfg)  # None unless the model reads each sample's metadata
        self.represent = make_represent(cfg, self.model.feature_dim)
        weights = class_weights_from_counts(self.data.train.class_counts()) if cfg.method.class_weighted else None
        params = objective_params(cfg, self.data.db)
        self.domains = None  # batch.domain: another metadata domain, when the method or the data config names one
        domain = params.get("domain", cfg.data.domain)
        if objective_spec(cfg.method.name).uses_domain and domain != "device":  # only a domain method reads it
            self.domains = self.data.train.domain_labels(domain, definitions=cfg.train.protocol)
        self.objective = create_objective(cfg.method.name, self.model.feature_dim, self.model.num_classes,
                                          class_weights=weights, **params).to(self.device)
        trainable = [p for m in (self.model, self.objective) for p in m.parameters() if p.requires_grad]
        self.optimizer = build_optimizer(trainable, cfg.train)  # train.optimizer (Adam by default; sam: section 14)
        self.amp = cfg.train.amp and self.device.type == "cuda"
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.amp)
        self.blend = (MovingAverageBlend([self.model, self.objective], cfg.train.ma_beta)
                      if cfg.train.ma_beta is not None else None)
        self.tracker = tracker
        dist_utils.broadcast_parameters([self.model, self.objective])

    # -- one epoch -------------------------------------------------------------------------------------------------
    def _loader(self, epoch: int) -> DataLoader:
        g = torch.Generator().manual_seed(self.cfg.train.seed * 100_003 + epoch)
        if hasattr(self.data.train, "set_epoch"):  # waveform augmentation's draws (lungsound.data.wave_augment)
            self.data.train.set_epoch(epoch)
        if self.cfg.data.balance == "oversample":  # every class balance_per_class times (lungsound.data.sampler)
            sampler = BalancedOversampler(self.data.train.labels, self.cfg.data.balance_per_class,
                                          seed=self.cfg.train.seed * 100_003, rank=self.rank,
                                          world_size=dist_utils.world_size(), draw=self.cfg.data.balance_draw)
            sampler.set_epoch(epoch)
        elif self.cfg.data.balance == "weighted":  # N draws with replacement, weights 1 / class count (section 14)
            sampler = ClassWeightedSampler(self.data.train.labels, seed=self.cfg.train.seed * 100_003, rank=self.rank,
                                           world_size=dist_utils.world_size(), num_classes=self.model.num_classes)
            sampler.set_epoch(epoch)
        else:
            sampler = dist_utils.epoch_sampler(len(self.data.train), g)
        return DataLoader(self.data.train, batch_size=self.cfg.train.batch_size, sampler=sampler, drop_last=True,
                          num_workers=self.cfg.data.loader_workers, pin_memory=self.device.type == "cuda",
                          collate_fn=collate_samples)

    def train_epoch(self, epoch: int) -> dict[str, float]:
        cfg = self.cfg.train
        lr = cosine_lr(epoch, cfg.epochs, cfg.lr, cfg.eta_min_ratio) if cfg.schedule == "cosine" else cfg.lr
        if cfg.schedule == "warmup_linear":  # [EFFAT]'s schedule; eta_min_ratio is its final ratio
            lr = warmup_linear_lr(epoch, cfg.lr, cfg.warmup_epochs, cfg.rampdown_epochs, cfg.eta_min_ratio)
        set_lr(self.optimizer, lr)
        torch.manual_seed(cfg.seed * 1_000_003 + epoch * 7919 + self.rank)  # the objective's draws (Patch-Mix, ...)
        augment = make_augment(self.cfg, torch.Generator().manual_seed(cfg.seed * 10_007 + epoch + 97 * self.rank))
        rep_gen = torch.Generator(device=self.device).manual_seed(cfg.seed * 20_011 + epoch + 89 * self.rank)
        self.represent.train()
        loader = self._loader(epoch)
        steps = len(loader) if cfg.max_steps_per_epoch is None else min(len(loader), cfg.max_steps_per_epoch)
        self.model.train()
        self.objective.train()
        totals: dict[str, float] = {}
        bar = tqdm(total=steps, desc=f"epoch {epoch}/{cfg.epochs}", leave=False,
                   disable=not (self.progress and self.rank == 0))
        for step, sample in enumerate(loader):
            if step >= steps:
                break
            batch = to_batch(sample, self.domains, self.device)
            ctx = StepContext(augment=augment, progress=((epoch - 1) * steps + step) / max(1, cfg.epochs * steps),
                              epoch=epoch, step=step,
                              represent=lambda z, labels: self.represent(z, labels, generator=rep_gen))
            if self.blend:
                self.blend.snapshot()
            loss, logs = self.step(batch, ctx)
            if self.blend:
                self.blend.blend()
            logs = {"loss": loss, **logs}
            for k, v in logs.items():
                totals[k] = totals.get(k, 0.0) + v
            bar.set_postfix(loss=f"{logs['loss']:.4f}")
            bar.update()
        bar.close()
        return {f"train_{k}": v / max(1, steps) for k, v in totals.items()} | {"lr": lr}

    def step(self, batch: Batch, ctx: StepContext) -> tuple[float, dict[str, float]]:
        """One optimiser step on `batch` (in `train.grad_accum` micro-batches, each pass over a micro-batch seeing the
        same augmented input): the loss at the weights before the step and the objective's logs."""
        chunks = [(part, Replay(ctx.augment)) for part in split_batch(batch, self.cfg.train.grad_accum)]

        def loss_of(chunk):
            part, augment = chunk
            augment.rewind()
            with torch.autocast(device_type=self.device.type, enabled=self.amp):
                return self.objective(bind_metadata(self.model, part.meta, self.meta_definitions), part,
                                      dataclasses.replace(ctx, augment=augment))

        def sync():
            dist_utils.average_gradients(self.optimizer)

        if isinstance(self.optimizer, SAM):  # two passes: at w and at w + e (lungsound.training.sam)
            return sam_update(self.optimizer, loss_of, chunks, self.scaler, sync)
        self.optimizer.zero_grad(set_to_none=True)
        loss, logs = backward_chunks(loss_of, chunks, self.scaler)
        sync()
        self.scaler.step(self.optimizer)
        self.scaler.update()
        return loss, logs

    def evaluate(self, which: str) -> Evaluation:
        dataset = getattr(self.data, which)
        return evaluate(self.model, dataset, self.device, self.cfg.train.eval_batch_size, self.amp,
                        progress=self.progress and self.rank == 0, desc=f"evaluating {which}",
                        meta_definitions=self.meta_definitions)
