"""The paper selection rule (methods.md section 5) through a real tiny `fit`, with scripted test scores per epoch.

Rule: keep the epoch with the best test Score among the epochs with Se > min_se (5 by default); a tie keeps the earlier
epoch; while no epoch qualifies, the first epoch is kept (flagged as a fallback in meta.json) until an eligible one
comes.
`Trainer.evaluate` is replaced by a script, so the selected epoch is known in advance; the training itself is real
(one step per epoch), so the saved best/ weights can be checked against the weights of the selected epoch.
"""

from __future__ import annotations

import copy
import json
import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from lungsound.config import load_config
from lungsound.data.formats.icbhi import DEVICES
from lungsound.evaluation.evaluate import Evaluation
from lungsound.evaluation.metrics import icbhi_scores, per_group_scores
from lungsound.training.data import build_run_data
from lungsound.training.run import _selection_key, fit
from lungsound.training.trainer import Trainer

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


def scripted_evaluation(sp: int, se: int) -> Evaluation:
    """A real Evaluation of 100 normal and 100 abnormal test cycles (40 crackle, 30 wheeze, 30 both) whose
    predictions give exactly Sp = sp % and Se = se %: `sp` normal cycles called normal, the rest crackle; the first
    `se` abnormal cycles given their own class, the rest called normal."""
    labels = np.array([0] * 100 + [1] * 40 + [2] * 30 + [3] * 30)
    preds = np.where(np.arange(100) < sp, 0, 1).tolist() + np.where(np.arange(100) < se, labels[100:], 0).tolist()
    preds = np.array(preds)
    devices = np.zeros(200, dtype=np.int64)
    return Evaluation(scores=icbhi_scores(labels, preds),
                      scores_2class=icbhi_scores(labels, preds, two_class_eval=True),
                      per_device=per_group_scores(labels, preds, devices, names=list(DEVICES)),
                      logits=np.eye(4, dtype=np.float32)[preds], labels=labels, devices=devices)


@pytest.fixture(scope="module")
def cfg_and_data(small_icbhi, tmp_path_factory):
    out = tmp_path_factory.mktemp("selection")
    cfg = load_config(None, [f"data.root={small_icbhi}", "data.duration=2.0", "model.name=ast_tiny",
                             "model.params.embed_dim=16", "model.params.depth=1", "train.batch_size=4",
                             "train.max_steps_per_epoch=1", "train.device=cpu", f"tracking.output_dir={out}",
                             "tracking.experiment=selection"])
    return cfg, build_run_data(cfg, progress=False)


def run_scripted(cfg_and_data, monkeypatch, name: str, script: list[tuple[int, int]]):
    """fit() over len(script) epochs; epoch e's test evaluation gives (Sp, Se) = script[e - 1]. Returns the result,
    best/meta.json and the model weights at each epoch's evaluation."""
    cfg, data = cfg_and_data
    cfg = copy.deepcopy(cfg)
    cfg.train.epochs = len(script)
    cfg.tracking.run_name = name
    calls, weights = [], []

    def evaluate(self, which):
        assert which == "test"  # paper protocol: no validation split
        calls.append(which)
        weights.append({k: v.detach().clone() for k, v in self.model.state_dict().items()})
        return scripted_evaluation(*script[len(calls) - 1])

    monkeypatch.setattr(Trainer, "evaluate", evaluate)
    result = fit(cfg, data=data, progress=False, track=False)
    assert result.finished and len(calls) == len(script)
    meta = json.loads((result.checkpoint / "meta.json").read_text())
    return result, meta, weights


def assert_saved_weights_are_epoch(result, weights, epoch):
    """best/model.safetensors holds the weights of `epoch` exactly, and differs from every other epoch's."""
    saved = load_file(str(result.checkpoint / "model.safetensors"))
    assert set(saved) == set(weights[epoch - 1])
    for k, v in weights[epoch - 1].items():
        assert torch.equal(saved[k], v), k
    for e, w in enumerate(weights, start=1):
        if e != epoch:  # each epoch's step moved the weights, so the match above singles out one epoch
            assert any(not torch.equal(saved[k], w[k]) for k in saved), e


def test_scripted_evaluation_gives_the_scripted_scores():
    ev = scripted_evaluation(90, 30)
    assert (ev.scores["sp"], ev.scores["se"], ev.scores["score"]) == (90.0, 30.0, 60.0)


def test_best_eligible_score_wins_and_a_tie_keeps_the_earlier_epoch(cfg_and_data, monkeypatch):
    script = [  # (Sp, Se) per epoch; Score = (Sp + Se) / 2
        (100, 4),  # 1: Score 52, Se 4 <= 5: not eligible (kept only as the fallback until epoch 2)
        (90, 10),  # 2: Score 50, eligible -> best so far, although epoch 1 scored higher
        (80, 40),  # 3: Score 60 -> best
        (70, 50),  # 4: Score 60, a tie with epoch 3 -> epoch 3 stays
        (100, 3),  # 5: Score 51.5, not eligible
        (75, 40),  # 6: Score 57.5 < 60
    ]
    result, meta, weights = run_scripted(cfg_and_data, monkeypatch, "ties", script)
    assert result.selected_epoch == 3
    assert meta["selected_epoch"] == 3 and meta["selection_fallback"] is False
    assert {k: meta["metrics"][k] for k in ("test_sp", "test_se", "test_score")} == \
        {"test_sp": 80.0, "test_se": 40.0, "test_score": 60.0}
    assert (result.metrics["final_test_sp"], result.metrics["final_test_se"], result.metrics["final_test_score"],
            result.metrics["selected_epoch"]) == (80.0, 40.0, 60.0, 3.0)
    assert [h["test_score"] for h in result.history] == [52.0, 50.0, 60.0, 60.0, 51.5, 57.5]
    assert_saved_weights_are_epoch(result, weights, 3)


def test_no_eligible_epoch_keeps_the_first(cfg_and_data, monkeypatch):
    script = [(50, 0), (90, 5), (100, 2)]  # Scores 25, 47.5, 51; Se never above 5
    result, meta, weights = run_scripted(cfg_and_data, monkeypatch, "fallback", script)
    assert result.selected_epoch == 1  # not epoch 3, the best Score among ineligible epochs
    assert meta["selected_epoch"] == 1 and meta["selection_fallback"] is True
    assert result.metrics["final_test_score"] == 25.0
    assert_saved_weights_are_epoch(result, weights, 1)


def test_fallback_gives_way_to_the_first_eligible_epoch(cfg_and_data, monkeypatch):
    script = [
        (100, 0),  # 1: Score 50, not eligible: kept as the fallback
        (100, 5),  # 2: Score 52.5, Se exactly 5 is not > 5: not eligible, the fallback stays epoch 1
        (40, 6),  # 3: Score 23, the first eligible epoch: selected despite its low Score
        (100, 1),  # 4: Score 50.5, not eligible
    ]
    result, meta, weights = run_scripted(cfg_and_data, monkeypatch, "late", script)
    assert result.selected_epoch == 3
    assert meta["selected_epoch"] == 3 and meta["selection_fallback"] is False
    assert result.metrics["final_test_score"] == 23.0
    assert_saved_weights_are_epoch(result, weights, 3)


def test_selection_key_threshold_and_nan():
    cfg = load_config(None, [])
    assert cfg.train.min_se == 5.0

    def key(sp, se, score=None):
        score = (sp + se) / 2 if score is None else score
        return _selection_key(cfg, SimpleNamespace(scores={"sp": sp, "se": se, "score": score}))

    assert key(80.0, 5.0) is None  # Se must exceed 5
    assert key(80.0, 5.01) == pytest.approx(42.505)
    assert key(math.nan, 50.0) is None  # no normal cycle: Score NaN, never selected
    assert key(80.0, math.nan) is None  # no abnormal cycle: Se NaN
    cfg.train.min_se = 0.0
    assert key(80.0, 0.5) == pytest.approx(40.25)
