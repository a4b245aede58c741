"""Schedule, moving-average blending and experiment configs against hand-computed values."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from lungsound.config import flatten, load_config
from lungsound.errors import LungsoundError
from lungsound.methods import class_weights_from_counts
from lungsound.training.optim import MovingAverageBlend, cosine_lr
from lungsound.training.seeds import aggregate, parse_seeds


def test_cosine_schedule_hand_computed():
    lr = 5e-5
    assert cosine_lr(50, 50, lr) == pytest.approx(5e-8, rel=1e-12)  # eta_min = lr * 1e-3 at the last epoch
    assert cosine_lr(25, 50, lr) == pytest.approx(5e-8 + 4.995e-5 * 0.5, rel=1e-12)
    # epoch 1: (1 + cos(pi/50)) / 2 = 0.999013364214136
    assert cosine_lr(1, 50, lr) == pytest.approx(4.995071754249604e-05, rel=1e-9)
    assert cosine_lr(0, 50, lr) == pytest.approx(lr)


def test_moving_average_blend_of_weights_and_bn_buffers():
    """One SGD step (lr 1) on Linear(2->1) + BatchNorm1d, then the 0.5 blend, every number worked out by hand.

    x = [[1, 0], [0, 1], [1, 1]], w = [1, 2] -> z = [1, 2, 3]; batch mean 2, biased variance 2/3, s = sqrt(2/3)
    (eps 1e-12, negligible), z_hat = [-1, 0, 1] / s. Loss = y[0] = gamma * z_hat[0] + beta, with gamma = 1, beta = 0:
      dL/dbeta = 1;  dL/dgamma = z_hat[0] = -1/s = -sqrt(3/2) = -1.224745
      dL/dz = (gamma/s) (c - mean(c) - z_hat * mean(c z_hat)), c = [1, 0, 0]:
            = (1/s) ([1, 0, 0] - 1/3 - [1/2, 0, -1/2]) = (1/s) [1/6, -1/3, 1/6]
      dL/dw = x^T dL/dz = (1/s) [1/3, -1/6] = [0.408248, -0.204124]
    After the step p_new = p - grad; the blend gives 0.5 p_old + 0.5 p_new = p_old - grad / 2:
      w -> [1 - 0.204124, 2 + 0.102062];  gamma -> 1 + 0.612372;  beta -> -0.5
    Running statistics (momentum 0.1), started at mean 1, var 3: the forward makes mean 0.9 * 1 + 0.1 * 2 = 1.1 and
    var 0.9 * 3 + 0.1 * 1 (unbiased variance of [1, 2, 3]) = 2.8; blended 1.05 and 2.9.
    num_batches_tracked is an integer buffer: it keeps the new count 1 (not 0.5).
    """
    model = nn.Sequential(nn.Linear(2, 1, bias=False), nn.BatchNorm1d(1, eps=1e-12))
    with torch.no_grad():
        model[0].weight.copy_(torch.tensor([[1.0, 2.0]]))
        model[1].running_mean.fill_(1.0)
        model[1].running_var.fill_(3.0)
    blend = MovingAverageBlend([model], beta=0.5)
    opt = torch.optim.SGD(model.parameters(), lr=1.0)
    model.train()
    blend.snapshot()  # before the forward, as the trainer does: the running statistics the forward updates are blended
    x = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    model(x)[0, 0].backward()
    r = math.sqrt(1.5)  # 1 / s
    torch.testing.assert_close(model[0].weight.grad, torch.tensor([[r / 3, -r / 6]]))  # the hand gradients hold
    opt.step()
    torch.testing.assert_close(model[0].weight.detach(), torch.tensor([[1 - r / 3, 2 + r / 6]]))  # not blended yet
    blend.blend()
    # [0.795876, 2.102062]
    torch.testing.assert_close(model[0].weight.detach(), torch.tensor([[1 - r / 6, 2 + r / 12]]))
    torch.testing.assert_close(model[1].weight.detach(), torch.tensor([1 + r / 2]))  # 1.612372
    torch.testing.assert_close(model[1].bias.detach(), torch.tensor([-0.5]))
    torch.testing.assert_close(model[1].running_mean, torch.tensor([1.05]))
    torch.testing.assert_close(model[1].running_var, torch.tensor([2.9]))
    assert model[1].num_batches_tracked.dtype == torch.long and int(model[1].num_batches_tracked) == 1


def test_moving_average_beta_weights_the_old_value():
    # beta = 0.25: theta = 0.25 * before + 0.75 * after; a 4 -> 0 change lands on 1.
    p = nn.Linear(1, 1, bias=False)
    with torch.no_grad():
        p.weight.fill_(4.0)
    blend = MovingAverageBlend([p], beta=0.25)
    blend.snapshot()
    with torch.no_grad():
        p.weight.zero_()
    blend.blend()
    assert p.weight.item() == 1.0


def test_blend_requires_snapshot_and_valid_beta():
    with pytest.raises(ValueError, match="beta must be in"):
        MovingAverageBlend([nn.Linear(1, 1)], beta=1.0)
    with pytest.raises(RuntimeError, match="without snapshot"):
        MovingAverageBlend([nn.Linear(1, 1)]).blend()


def test_class_weights_like_reference():
    w = class_weights_from_counts([2063, 1215, 501, 363])
    inv = [4142 / 2063, 4142 / 1215, 4142 / 501, 4142 / 363]
    torch.testing.assert_close(w, torch.tensor([v / sum(inv) for v in inv]))
    assert class_weights_from_counts([3, 0, 1, 1])[1] == 0


def test_config_chain_overrides_and_errors(tmp_path):
    (tmp_path / "base.yaml").write_text("train:\n  epochs: 50\n  lr: 5.0e-5\nmethod:\n  name: ce\n  params: {a: 1}\n")
    (tmp_path / "child.yaml").write_text("base: base.yaml\ntrain:\n  epochs: 3\nmethod:\n  params: {b: 2}\n")
    cfg = load_config(tmp_path / "child.yaml", ["train.batch_size=4", "model.params.depth=2"])
    assert cfg.name == "child" and cfg.train.epochs == 3 and cfg.train.lr == 5e-5 and cfg.train.batch_size == 4
    assert cfg.method.params == {"a": 1, "b": 2} and cfg.model.params == {"depth": 2}
    assert flatten(cfg.to_dict())["train.epochs"] == 3
    (tmp_path / "bad.yaml").write_text("train:\n  epoch: 3\n")
    with pytest.raises(LungsoundError, match=r"bad.yaml: unknown key\(s\) train.epoch"):
        load_config(tmp_path / "bad.yaml")
    (tmp_path / "type.yaml").write_text("train:\n  epochs: three\n")
    with pytest.raises(LungsoundError, match=r"type.yaml: train.epochs: expected int, got 'three'"):
        load_config(tmp_path / "type.yaml")
    (tmp_path / "loop.yaml").write_text("base: loop.yaml\n")
    with pytest.raises(LungsoundError, match="loop"):
        load_config(tmp_path / "loop.yaml")
    with pytest.raises(LungsoundError, match="experiment file not found"):
        load_config(tmp_path / "nope.yaml")
    with pytest.raises(LungsoundError, match="train.protocol must be one of paper, clean"):
        load_config(None, ["train.protocol=best"])


def test_seed_parsing_and_aggregation():
    assert parse_seeds("1-5", 0) == [1, 2, 3, 4, 5] and parse_seeds("1,3,7", 0) == [1, 3, 7]
    assert parse_seeds(None, 4) == [4]
    with pytest.raises(LungsoundError, match="--seeds must look like"):
        parse_seeds("a-b", 0)
    out = aggregate([{"s": 60.0}, {"s": 62.0}, {"s": 64.0}])
    assert out["s_mean"] == 62.0 and out["s_std"] == pytest.approx(math.sqrt(8 / 3))


@pytest.mark.parametrize("path", sorted(__import__("pathlib").Path(__file__).resolve().parents[1]
                                        .joinpath("experiments").glob("*.yaml")), ids=lambda p: p.name)
def test_experiment_files_load(path):
    if path.stem.startswith("vocoder_"):  # a generation config: its own typed loader
        from lungsound.generation.train import load_vocoder_config

        cfg = load_vocoder_config(path)
    else:
        cfg = load_config(path)
    assert cfg.name == path.stem and cfg.description


def test_trainer_blends_every_float_state_entry_after_a_step(small_icbhi, tmp_path):
    """Through the real Trainer: after one step with ma_beta 0.5 every floating state entry (conv and head weights, BN
    running statistics, which the forward updates after the snapshot) is the mean of the initial value and the value
    the same step gives without blending; integer buffers and Adam's moments are those of the unblended step."""
    import copy

    from lungsound.training.data import build_run_data
    from lungsound.training.trainer import Trainer

    cfg = load_config(None, [f"data.root={small_icbhi}", "data.duration=2.0", "model.name=cnn",
                             "model.params.arch=resnet10t", "train.epochs=1", "train.batch_size=4",
                             "train.max_steps_per_epoch=1", "train.device=cpu", "train.lr=1e-2",
                             f"tracking.output_dir={tmp_path}"])
    assert cfg.train.ma_beta == 0.5  # the recipe's default
    data = build_run_data(cfg, progress=False)
    blended = Trainer(cfg, data=data, progress=False)
    init = {k: v.detach().clone() for k, v in blended.model.state_dict().items()}
    blended.train_epoch(1)
    cfg_off = copy.deepcopy(cfg)
    cfg_off.train.ma_beta = None
    plain = Trainer(cfg_off, data=data, progress=False)
    assert plain.blend is None
    for k, v in plain.model.state_dict().items():
        assert torch.equal(v, init[k]), k  # same seed, same start
    plain.train_epoch(1)
    after, got = plain.model.state_dict(), blended.model.state_dict()
    bn_stats = [k for k in init if k.endswith(("running_mean", "running_var"))]
    assert bn_stats and all(not torch.equal(after[k], init[k]) for k in bn_stats)  # the step moved them
    for k, v in got.items():
        if torch.is_floating_point(v):
            torch.testing.assert_close(v, 0.5 * init[k] + 0.5 * after[k], rtol=1e-6, atol=1e-7, msg=k)
        else:
            assert torch.equal(v, after[k]), k  # num_batches_tracked: 1, not blended
    moved = [k for k in got if torch.is_floating_point(got[k]) and not torch.equal(after[k], init[k])]
    assert len(moved) > 20  # convolutions, BN affine and statistics, head
    for p_blend, p_plain in zip(blended.optimizer.param_groups[0]["params"], plain.optimizer.param_groups[0]["params"]):
        s_blend, s_plain = blended.optimizer.state[p_blend], plain.optimizer.state[p_plain]
        assert torch.equal(s_blend["exp_avg"], s_plain["exp_avg"])
        assert torch.equal(s_blend["exp_avg_sq"], s_plain["exp_avg_sq"])
