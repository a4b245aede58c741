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
from lungsound.training.run import aggregate, parse_seeds


def test_cosine_schedule_hand_computed():
    lr = 5e-5
    assert cosine_lr(50, 50, lr) == pytest.approx(5e-8, rel=1e-12)  # eta_min = lr * 1e-3 at the last epoch
    assert cosine_lr(25, 50, lr) == pytest.approx(5e-8 + 4.995e-5 * 0.5, rel=1e-12)
    # epoch 1: (1 + cos(pi/50)) / 2 = 0.999013364214136
    assert cosine_lr(1, 50, lr) == pytest.approx(4.995071754249604e-05, rel=1e-9)
    assert cosine_lr(0, 50, lr) == pytest.approx(lr)


def test_moving_average_blend_of_weights_and_bn_buffers():
    model = nn.Sequential(nn.Linear(2, 1, bias=False), nn.BatchNorm1d(1))
    with torch.no_grad():
        model[0].weight.copy_(torch.tensor([[1.0, 2.0]]))
    blend = MovingAverageBlend([model], beta=0.5)
    blend.snapshot()
    opt = torch.optim.SGD(model.parameters(), lr=1.0)
    model.train()
    x = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    model(x).sum().backward()  # BN forward also updates running stats: mean of [1, 2, 3] = 2, momentum 0.1
    grad = model[0].weight.grad.clone()
    opt.step()
    blend.blend()
    torch.testing.assert_close(model[0].weight.detach(), torch.tensor([[1.0, 2.0]]) - 0.5 * grad)
    # running_mean: old 0, new 0.1 * 2 = 0.2 -> blended 0.1; num_batches_tracked keeps the new count
    torch.testing.assert_close(model[1].running_mean, torch.tensor([0.1]))
    assert int(model[1].num_batches_tracked) == 1
    # BN weight got a gradient step too and is blended the same way
    assert model[1].weight.grad is not None


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
    cfg = load_config(path)
    assert cfg.name == path.stem and cfg.description
