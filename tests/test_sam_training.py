"""SAM in the training engine: a tiny AST trains with `train.optimizer: sam` and accumulation, each step runs the
objective twice per micro-batch on one augmented input, and a run resumed from last.pt ends like an uninterrupted one."""

from __future__ import annotations

import pytest
import torch

from lungsound.config import load_config
from lungsound.methods import StepContext
from lungsound.training.run import fit
from lungsound.training.sam import SAM
from lungsound.training.trainer import Trainer, to_batch
from lungsound.data.dataset import collate_samples

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


def sam_cfg(root, tmp_path, *extra):
    return load_config(None, [f"data.root={root}", "data.duration=2.0", "model.name=ast_tiny", "train.epochs=2",
                              "train.batch_size=4", "train.optimizer=sam", "train.sam_base=adamw", "train.lr=1e-4",
                              "train.schedule=constant", "train.ma_beta=null", "train.grad_accum=2",
                              f"tracking.output_dir={tmp_path}/out", *extra])


def test_a_sam_step_runs_the_objective_twice_per_micro_batch_on_one_augmented_input(small_icbhi, tmp_path):
    trainer = Trainer(sam_cfg(small_icbhi, tmp_path), progress=False)
    assert isinstance(trainer.optimizer, SAM) and isinstance(trainer.optimizer.base, torch.optim.AdamW)
    batch = to_batch(collate_samples([trainer.data.train[i] for i in range(4)]), None, trainer.device)
    seen, augmented = [], []
    objective = trainer.objective.forward

    def counting(model, part, ctx):
        seen.append(part.index.tolist())
        return objective(model, part, ctx)

    def augment(x):
        augmented.append(x.shape[0])
        return x + torch.randn_like(x)

    trainer.objective.forward = counting
    before = [p.detach().clone() for p in trainer.model.parameters()]
    loss, logs = trainer.step(batch, StepContext(augment=augment))
    index = batch.index.tolist()
    assert seen == [index[:2], index[2:], index[:2], index[2:]]  # pass at w, then at w + e, over both halves
    assert augmented == [2, 2]  # the second pass replays the first pass's noise
    assert loss > 0 and "loss_ce" in logs
    assert any(not torch.equal(a, b) for a, b in zip(before, trainer.model.parameters()))


def test_a_resumed_sam_run_ends_like_an_uninterrupted_one(small_icbhi, tmp_path):
    full = fit(sam_cfg(small_icbhi, tmp_path, "tracking.run_name=full"), progress=False, track=False)
    part = fit(sam_cfg(small_icbhi, tmp_path, "tracking.run_name=part"), stop_after=1, progress=False, track=False)
    resumed = fit(None, resume=part.checkpoint.parent / "last.pt", progress=False, track=False)
    assert [h["train_loss"] for h in resumed.history] == [h["train_loss"] for h in full.history]
    assert resumed.metrics == full.metrics
