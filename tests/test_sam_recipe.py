"""The pieces of the AST + SAM recipe (docs/methods.md section 14): CE with label smoothing, class-weighted sampling
with replacement (data.balance: weighted), the AST's mean-token pooling and its Dropout + Linear head."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from lungsound.config import load_config
from lungsound.data.sampler import ClassWeightedSampler
from lungsound.errors import LungsoundError
from lungsound.methods import Batch, StepContext, create_objective
from lungsound.models import create_model


class Fixed(torch.nn.Module):
    """A 'model' whose logits are given."""

    def __init__(self, logits):
        super().__init__()
        self.logits = logits

    def forward_features(self, x):
        return x

    def forward_head(self, z):
        return self.logits


def test_label_smoothing_trains_against_the_smoothed_target():
    # logits (2, 0, 0, 0), y = 0, eps 0.1: target (0.925, 0.025, 0.025, 0.025); log p = (2, 0, 0, 0) - ln(e^2 + 3),
    # loss = -(0.925 (2 - lse) + 0.075 (0 - lse)) = lse - 1.85.
    lse = math.log(math.e ** 2 + 3)
    batch = Batch(x=torch.zeros(1, 4), label=torch.tensor([0]), device=torch.tensor([0]))
    model = Fixed(torch.tensor([[2.0, 0.0, 0.0, 0.0]]))
    smoothed, _ = create_objective("ce", 4, 4, label_smoothing=0.1)(model, batch, StepContext())
    plain, _ = create_objective("ce", 4, 4)(model, batch, StepContext())
    assert float(smoothed) == pytest.approx(lse - 1.85, abs=1e-6)
    assert float(plain) == pytest.approx(lse - 2.0, abs=1e-6)


@pytest.mark.parametrize("value", [1.0, -0.1, "0.1", True])
def test_a_bad_label_smoothing_is_a_one_line_error(value):
    with pytest.raises(LungsoundError, match=r"^method\.params\.label_smoothing must be a number in \[0, 1\), got"):
        create_objective("ce", 4, 4, label_smoothing=value)


def test_weighted_sampling_draws_every_class_equally_often_with_replacement():
    labels = [0] * 6 + [1] * 2 + [2, 3]  # weights 1/6, 1/2, 1, 1 per item
    sampler = ClassWeightedSampler(labels, seed=5)
    counts = torch.zeros(4)
    repeated = False
    for epoch in range(400):
        sampler.set_epoch(epoch)
        order = list(sampler)
        assert len(order) == len(sampler) == 10  # as many draws as training cycles
        repeated |= order.count(8) > 1  # the single wheeze item drawn twice in one epoch
        counts += torch.bincount(torch.tensor([labels[i] for i in order]), minlength=4)
    assert repeated
    torch.testing.assert_close(counts / counts.sum(), torch.full((4,), 0.25), atol=0.02, rtol=0)
    sampler.set_epoch(3)
    assert list(sampler) == sampler.epoch_indices(3) == ClassWeightedSampler(labels, seed=5).epoch_indices(3)


def test_weighted_sampling_shards_one_list_over_processes():
    labels = [0] * 6 + [1] * 2 + [2, 3, 3]  # 11 items: padded to 12 for 2 processes
    shares = [ClassWeightedSampler(labels, seed=1, rank=r, world_size=2) for r in range(2)]
    for s in shares:
        s.set_epoch(2)
    whole = shares[0].epoch_indices()
    whole = whole + whole[:1]
    assert list(shares[0]) == whole[0::2] and list(shares[1]) == whole[1::2] and len(shares[1]) == 6


def test_the_mean_token_pooling_and_the_dropout_head():
    torch.manual_seed(0)
    model = create_model("ast_tiny", input_frames=198, pooling="mean", head="dropout", head_dropout=0.3).eval()
    x = torch.randn(2, 198, 128)
    hidden = model.backbone(x).last_hidden_state  # (2, N + 2, 64) after the final LayerNorm
    torch.testing.assert_close(model.forward_features(x), hidden.mean(dim=1))
    assert isinstance(model.head.norm, torch.nn.Identity) and model.head.drop.p == 0.3
    assert not any(k.startswith("head.norm") for k in model.state_dict())  # Linear(D, 4) only
    torch.testing.assert_close(model(x), model.head.fc(hidden.mean(dim=1)))  # no dropout at inference
    default = create_model("ast_tiny", input_frames=198)
    assert isinstance(default.head.norm, torch.nn.LayerNorm)  # the papers' head and (cls + dist) / 2 unchanged


@pytest.mark.parametrize("override,message", [
    ("model.params.pooling=max", "pooling"),
    ("model.params.head_dropout=0.3", "head_dropout applies to head: dropout"),
    ("model.params.head_dropout=1.0", "head_dropout"),
    ("data.balance=random", "data.balance must be one of none, oversample, weighted, got 'random'"),
])
def test_bad_recipe_settings_are_one_line_errors(override, message):
    with pytest.raises(LungsoundError) as info:
        load_config(None, ["model.name=ast_tiny", override])
    assert message in str(info.value) and "\n" not in str(info.value)


def test_a_sam_model_card_names_and_cites_the_optimiser():
    from lungsound.sharing.references import method_words, references_for

    sam = load_config(Path(__file__).resolve().parents[1] / "experiments" / "icbhi_ast_sam.yaml")
    assert method_words(sam) == "cross-entropy fine-tuning (`ce`), trained with SAM (rho 0.05)"
    cited = {ref.key: why for ref, why in references_for(sam, synthetic=False)}
    assert cited["SAM"] == "the sharpness-aware optimiser" and "ASAM" not in cited and "ICBHI" in cited
    adaptive = load_config(None, ["train.optimizer=sam", "train.sam_adaptive=true"])
    assert "ASAM" in {ref.key for ref, _ in references_for(adaptive, synthetic=True)}
    assert "SAM" not in method_words(load_config(None, []))  # Adam runs say nothing of it
