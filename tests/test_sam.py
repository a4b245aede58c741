"""Sharpness-aware minimisation (lungsound.training.sam, docs/methods.md section 14): one step on a quadratic with a
known Hessian equals the update worked out by hand (SAM and ASAM, SGD and AdamW bases), the scaled (AMP) path equals the
unscaled one, accumulation over micro-batches equals the whole batch, two gloo processes equal one process on the
concatenated batch, and the config keys are checked."""

from __future__ import annotations

import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from lungsound.config import load_config
from lungsound.errors import LungsoundError
from lungsound.training.accumulate import Replay, split_batch
from lungsound.training.optim import build_optimizer
from lungsound.training.sam import SAM, sam_update
from lungsound.methods import Batch

HESSIAN = torch.tensor([[2.0, 1.0], [1.0, 3.0]])  # L(w) = w^T H w / 2, so grad L(w) = H w


def quadratic_step(w0, base: str = "sgd", rho: float = 0.5, adaptive: bool = False, scaler=None, **kwargs):
    w = torch.nn.Parameter(torch.tensor(w0))
    optimizer = {"sgd": torch.optim.SGD, "adamw": torch.optim.AdamW}[base]([w], lr=0.1, **kwargs)
    sam = SAM(optimizer, rho=rho, adaptive=adaptive)
    loss, _ = sam_update(sam, lambda _: (0.5 * w @ HESSIAN @ w, {}), [None], scaler=scaler)
    return w.detach(), loss


def test_one_sam_step_on_a_quadratic_is_the_hand_computed_update():
    # w = (1, 1): g = H w = (3, 4), ||g|| = 5, e = 0.5 (0.6, 0.8) = (0.3, 0.4), w + e = (1.3, 1.4),
    # g_sam = H (w + e) = (2.6 + 1.4, 1.3 + 4.2) = (4.0, 5.5), w' = w - 0.1 g_sam = (0.6, 0.45).
    w, loss = quadratic_step([1.0, 1.0])
    torch.testing.assert_close(w, torch.tensor([0.6, 0.45]))
    assert loss == pytest.approx(3.5)  # L(w) = (2 + 2 + 3) / 2 at the weights before the step


def test_one_asam_step_scales_the_ascent_by_the_weights():
    # w = (1, 2): g = (4, 7), T_w g = (4, 14), ||T_w g|| = sqrt(212), e = 0.5 T_w^2 g / sqrt(212) = 0.5 (4, 28) / sqrt(212)
    # = (0.137361, 0.961524); g_sam = H (1.137361, 2.961524) = (5.236246, 10.021933); w' = w - 0.1 g_sam.
    w, _ = quadratic_step([1.0, 2.0], adaptive=True)
    torch.testing.assert_close(w, torch.tensor([1 - 0.5236246, 2 - 1.0021933]))
    plain, _ = quadratic_step([1.0, 2.0])  # the plain ascent: e = 0.5 (4, 7) / sqrt(65)
    e = [0.5 * 4 / math.sqrt(65), 0.5 * 7 / math.sqrt(65)]
    torch.testing.assert_close(plain, torch.tensor([1 - 0.1 * (2 * (1 + e[0]) + 2 + e[1]),
                                                    2 - 0.1 * (1 + e[0] + 3 * (2 + e[1]))]))


def test_the_base_adamw_steps_with_the_gradient_at_the_perturbed_point():
    # Adam's first step is lr * m / (sqrt(v) + eps) = lr * sign(g_sam) (bias-corrected); AdamW first decays
    # w by lr * wd: w' = w (1 - 0.1 * 0.5) - 0.1 sign(g_sam), g_sam = (4.0, 5.5) > 0 as above.
    w, _ = quadratic_step([1.0, 1.0], base="adamw", weight_decay=0.5)
    torch.testing.assert_close(w, torch.tensor([0.95 - 0.1, 0.95 - 0.1]), rtol=0, atol=1e-6)
    w, _ = quadratic_step([-1.0, 1.0], base="adamw", weight_decay=0.0)  # g = (-1, 2): g_sam keeps those signs
    torch.testing.assert_close(w, torch.tensor([-0.9, 0.9]), rtol=0, atol=1e-6)


def test_the_scaled_amp_path_unscales_before_the_norm_and_equals_the_plain_step():
    scaler = torch.amp.GradScaler("cpu", init_scale=1024.0)
    w, _ = quadratic_step([1.0, 1.0], scaler=scaler)
    torch.testing.assert_close(w, torch.tensor([0.6, 0.45]))
    assert scaler.get_scale() == 1024.0  # a finite step: the scale is unchanged (growth only after 2000 steps)


def test_an_ascent_from_non_finite_gradients_is_skipped():
    w = torch.nn.Parameter(torch.tensor([1.0, 1.0]))
    sam = SAM(torch.optim.SGD([w], lr=0.1), rho=0.05)
    w.grad = torch.tensor([float("inf"), 1.0])
    assert sam.ascent() == []  # the scaler then skips the step (its own inf check) and lowers the scale
    w.grad = torch.tensor([3.0, 4.0])
    (param, e), = sam.ascent(grad_scale=2.0)
    assert param is w
    torch.testing.assert_close(e, torch.tensor([0.03, 0.04]))  # the unscaled direction, length rho


def test_bf16_autocast_step_matches_the_float32_step_on_a_linear_model():
    torch.manual_seed(0)
    x, y = torch.randn(8, 3), torch.tensor([0, 1, 2, 3, 0, 1, 2, 3])
    results = []
    for amp in (False, True):
        torch.manual_seed(1)
        model = torch.nn.Linear(3, 4)
        sam = SAM(torch.optim.SGD(model.parameters(), lr=0.1), rho=0.05)

        def loss_of(_):
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=amp):
                return F.cross_entropy(model(x).float(), y), {}

        sam_update(sam, loss_of, [None], scaler=torch.amp.GradScaler("cpu", init_scale=256.0, enabled=amp))
        results.append(torch.cat([p.detach().flatten() for p in model.parameters()]))
    torch.testing.assert_close(results[1], results[0], rtol=0, atol=2e-2)  # bf16 keeps 8 bits of mantissa
    assert not torch.equal(results[1], results[0])  # the bf16 path really ran in bf16


def test_accumulating_micro_batches_equals_the_whole_batch():
    torch.manual_seed(0)
    batch = Batch(x=torch.randn(8, 3), label=torch.tensor([0, 1, 2, 3, 0, 1, 2, 3]), device=torch.zeros(8, dtype=torch.long),
                  index=torch.arange(8), meta=list("abcdefgh"))
    parts = split_batch(batch, 4)
    assert [p.meta for p in parts] == [["a", "b"], ["c", "d"], ["e", "f"], ["g", "h"]] and parts[0].domain is None
    states = []
    for k in (1, 4):
        torch.manual_seed(1)
        model = torch.nn.Linear(3, 4)
        sam = SAM(torch.optim.SGD(model.parameters(), lr=0.1), rho=0.05)
        sam_update(sam, lambda b: (F.cross_entropy(model(b.x), b.label), {}), split_batch(batch, k))
        states.append(torch.cat([p.detach().flatten() for p in model.parameters()]))
    torch.testing.assert_close(states[1], states[0])


def test_replay_returns_the_first_pass_augmentation_in_every_later_pass():
    draws = iter(range(100))
    replay = Replay(lambda x: x + next(draws))
    first = [replay(torch.zeros(1)), replay(torch.zeros(1))]  # two views in one objective call: two draws
    replay.rewind()
    second = [replay(torch.zeros(1)), replay(torch.zeros(1))]
    assert [float(t) for t in first] == [0.0, 1.0] and [float(t) for t in second] == [0.0, 1.0]


@pytest.mark.parametrize("base,mode", [("sgd", "plain"), ("adamw", "adaptive")])
def test_two_gloo_processes_take_the_single_process_step(tmp_path, base, mode):
    helper = Path(__file__).parent / "helpers" / "sam_ddp.py"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    env.pop("WORLD_SIZE", None)
    for name, launcher in (("single", []),
                           ("ddp", ["-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"])):
        proc = subprocess.run([sys.executable, *launcher, str(helper), str(tmp_path / f"{name}.pt"), base, mode],
                              env=env, capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, proc.stderr[-3000:]
    single, ddp = torch.load(tmp_path / "single.pt"), torch.load(tmp_path / "ddp.pt")
    assert (single["world_size"], ddp["world_size"]) == (1, 2)
    torch.manual_seed(0)
    start = torch.nn.Linear(3, 4).state_dict()
    for key, value in single["state"].items():
        assert not torch.allclose(value, start[key])  # the step moved every weight
        torch.testing.assert_close(ddp["state"][key], value, rtol=1e-5, atol=1e-6, msg=key)


def test_the_factory_builds_sam_around_the_chosen_base():
    cfg = load_config(None, ["train.optimizer=sam", "train.sam_base=adamw", "train.sam_rho=0.1",
                             "train.sam_adaptive=true", "train.lr=1e-5", "train.weight_decay=1e-4"])
    sam = build_optimizer([torch.nn.Parameter(torch.zeros(2))], cfg.train)
    assert isinstance(sam, SAM) and isinstance(sam.base, torch.optim.AdamW)
    assert (sam.rho, sam.adaptive) == (0.1, True)
    assert sam.param_groups[0]["lr"] == 1e-5 and sam.param_groups[0]["weight_decay"] == 1e-4
    plain = build_optimizer([torch.nn.Parameter(torch.zeros(2))], load_config(None, []).train)
    assert type(plain) is torch.optim.Adam  # the default stays the papers' Adam


@pytest.mark.parametrize("override,message", [
    ("train.sam_rho=0", "train.sam_rho must be > 0, got 0.0"),
    ("train.sam_rho=-0.05", "train.sam_rho must be > 0, got -0.05"),
    ("train.optimizer=lamb", "train.optimizer must be one of adam, adamw, sgd, sam, got 'lamb'"),
    ("train.sam_base=sam", "train.sam_base must be one of adam, adamw, sgd, got 'sam'"),
    ("train.sam_adaptive=maybe", "train.sam_adaptive: expected bool, got 'maybe'"),
    ("train.momentum=1.0", "train.momentum must be in [0, 1), got 1.0"),
    ("train.grad_accum=0", "train.grad_accum must be an integer >= 1, got 0"),
    ("train.grad_accum=3", "train.grad_accum=3 must divide train.batch_size=8"),
])
def test_bad_sam_settings_are_one_line_errors(override, message):
    with pytest.raises(LungsoundError) as info:
        load_config(None, ["train.optimizer=sam", override])
    assert message in str(info.value) and "\n" not in str(info.value)
