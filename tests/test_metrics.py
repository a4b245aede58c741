"""ICBHI Sp / Se / Score against hand-computed confusion matrices (methods.md section 6)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from lungsound.data.formats.icbhi import DEVICES
from lungsound.errors import LungsoundError
from lungsound.evaluation.metrics import (
    confusion_matrix,
    format_scores,
    icbhi_scores,
    per_group_scores,
    scores_from_confusion,
)

# Ten cycles; the confusion below is written by hand from these two lists.
Y_TRUE = [0, 0, 0, 0, 1, 1, 1, 2, 2, 3]
Y_PRED = [0, 0, 1, 3, 1, 2, 1, 2, 0, 3]
# rows = true class, columns = predicted class
CONFUSION = np.array(
    [
        [2, 1, 0, 1],  # normal: 0,0 right; one called crackle, one both
        [0, 2, 1, 0],  # crackle: two right, one called wheeze
        [1, 0, 1, 0],  # wheeze: one called normal, one right
        [0, 0, 0, 1],  # both: right
    ]
)


def test_confusion_is_built_rows_true():
    assert confusion_matrix(Y_TRUE, Y_PRED).tolist() == CONFUSION.tolist()
    assert icbhi_scores(Y_TRUE, Y_PRED)["confusion"].dtype.kind == "i"


def test_four_class_scores_by_hand():
    s = icbhi_scores(Y_TRUE, Y_PRED)
    assert s["sp"] == pytest.approx(100 * 2 / 4)  # 2 of 4 normal cycles
    assert s["se"] == pytest.approx(100 * 4 / 6)  # crackle 2 + wheeze 1 + both 1 of 6 abnormal cycles
    assert s["score"] == pytest.approx((50.0 + 400 / 6) / 2)
    assert s["n"] == 10
    acc = s["per_class_acc"]
    assert list(acc) == ["normal", "crackle", "wheeze", "both"]
    assert [acc[k] for k in acc] == pytest.approx([50.0, 200 / 3, 50.0, 100.0])


def test_two_class_rule_counts_any_abnormal_prediction():
    s = icbhi_scores(Y_TRUE, Y_PRED, two_class_eval=True)
    # abnormal cycles predicted abnormal: crackle 3 (incl. the one called wheeze), wheeze 1, both 1 -> 5 of 6
    assert s["se"] == pytest.approx(100 * 5 / 6)
    assert s["sp"] == pytest.approx(50.0)  # Sp unchanged
    assert s["score"] == pytest.approx((50.0 + 500 / 6) / 2)
    assert s["confusion"].tolist() == CONFUSION.tolist()


def test_abnormal_predicted_normal_is_a_miss_in_both_evaluations():
    y_true, y_pred = [0, 2, 3], [0, 0, 0]
    for two in (False, True):
        s = icbhi_scores(y_true, y_pred, two_class_eval=two)
        assert s["sp"] == 100.0 and s["se"] == 0.0 and s["score"] == 50.0


# A larger confusion (rows = true normal, crackle, wheeze, both; columns = predicted), worked out by hand:
#   normal row 30 + 5 + 3 + 2 = 40 cycles, 30 right            -> Sp = 30 / 40 = 75.0
#   abnormal rows 20 + 15 + 10 = 45 cycles, exact class 12 + 8 + 6 = 26 -> Se = 26 / 45 = 57.777...
#   Score = (75 + 57.777...) / 2 = 66.3888...
#   two-class hits: crackle 12 + 2 + 2 = 16, wheeze 1 + 8 + 0 = 9, both 2 + 1 + 6 = 9 -> 34 / 45 = 75.555...
#   two-class Score = (75 + 75.555...) / 2 = 75.2777...
#   per class: normal 30/40 = 75, crackle 12/20 = 60, wheeze 8/15 = 53.333..., both 6/10 = 60
BIG = np.array([[30, 5, 3, 2], [4, 12, 2, 2], [6, 1, 8, 0], [1, 2, 1, 6]])
BIG_FOUR = {"sp": 75.0, "se": 57.77777777777778, "score": 66.38888888888889}
BIG_TWO = {"sp": 75.0, "se": 75.55555555555556, "score": 75.27777777777777}


def labels_from_confusion(c: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """One (true, predicted) pair per count of the confusion, in shuffled order."""
    pairs = [(t, p) for t in range(c.shape[0]) for p in range(c.shape[1]) for _ in range(c[t, p])]
    order = np.random.default_rng(1).permutation(len(pairs))
    arr = np.array(pairs)[order]
    return arr[:, 0], arr[:, 1]


def test_scores_from_a_hand_worked_confusion():
    four = scores_from_confusion(BIG)
    assert {k: four[k] for k in BIG_FOUR} == pytest.approx(BIG_FOUR)
    assert four["n"] == 85  # 40 normal + 45 abnormal
    assert list(four["per_class_acc"].values()) == pytest.approx([75.0, 60.0, 160 / 3, 60.0])
    two = scores_from_confusion(BIG, two_class_eval=True)
    assert {k: two[k] for k in BIG_TWO} == pytest.approx(BIG_TWO)


def test_labels_reach_the_same_hand_worked_scores():
    y_true, y_pred = labels_from_confusion(BIG)
    four = icbhi_scores(y_true, y_pred)
    assert four["confusion"].tolist() == BIG.tolist()
    assert {k: four[k] for k in BIG_FOUR} == pytest.approx(BIG_FOUR)
    two = icbhi_scores(y_true, y_pred, two_class_eval=True)
    assert {k: two[k] for k in BIG_TWO} == pytest.approx(BIG_TWO)


def test_bad_confusions_raise():
    with pytest.raises(LungsoundError, match=r"square matrix of at least 2 x 2, got shape \(2, 3\)"):
        scores_from_confusion(np.zeros((2, 3)))
    with pytest.raises(LungsoundError, match="negative counts"):
        scores_from_confusion(np.array([[1, -1], [0, 1]]))


def test_confusion_agrees_with_sklearn_on_random_labels():
    sklearn_metrics = pytest.importorskip("sklearn.metrics")
    rng = np.random.default_rng(0)
    t, p = rng.integers(0, 4, 500), rng.integers(0, 4, 500)
    expected = sklearn_metrics.confusion_matrix(t, p, labels=[0, 1, 2, 3])
    s = icbhi_scores(t, p)
    assert s["confusion"].tolist() == expected.tolist()
    assert s["sp"] == pytest.approx(100 * expected[0, 0] / expected[0].sum())
    assert s["se"] == pytest.approx(100 * np.trace(expected[1:, 1:]) / expected[1:].sum())


def test_published_example_is_consistent():
    # [PMCL] Patch-Mix CL: Sp 81.66, Se 43.07, Score 62.37 (= 62.365 before rounding).
    # 10,000 normal cycles with 8,166 right, 10,000 abnormal cycles with 4,307 given their exact class.
    y_true = np.array([0] * 10000 + [1] * 5000 + [2] * 3000 + [3] * 2000)
    y_pred = y_true.copy()
    y_pred[8166:10000] = 2  # normal misses
    abnormal = np.arange(10000, 20000)
    y_pred[abnormal[4307:]] = 0  # 5,693 abnormal cycles called normal
    s = icbhi_scores(y_true, y_pred)
    assert s["sp"] == pytest.approx(81.66)
    assert s["se"] == pytest.approx(43.07)
    assert s["score"] == pytest.approx(62.365)


def test_torch_tensors_are_accepted():
    s = icbhi_scores(torch.tensor(Y_TRUE), torch.tensor(Y_PRED))
    assert s["confusion"].tolist() == CONFUSION.tolist()


def test_binary_task_names_and_scores():
    s = icbhi_scores([0, 0, 1, 1, 1], [0, 1, 1, 1, 0], n_classes=2)
    assert s["sp"] == pytest.approx(50.0) and s["se"] == pytest.approx(200 / 3)
    assert list(s["per_class_acc"]) == ["normal", "abnormal"]


def test_missing_terms_are_nan():
    only_normal = icbhi_scores([0, 0, 0], [0, 1, 0])
    assert only_normal["sp"] == pytest.approx(200 / 3)
    assert math.isnan(only_normal["se"]) and math.isnan(only_normal["score"])
    assert math.isnan(only_normal["per_class_acc"]["wheeze"])
    only_abnormal = icbhi_scores([1, 2], [1, 1])
    assert math.isnan(only_abnormal["sp"]) and only_abnormal["se"] == pytest.approx(50.0)
    assert math.isnan(only_abnormal["score"])


def test_per_device_breakdown_by_hand():
    groups = [3, 3, 0, 0, 3, 0, 3, 0, 3, 3]  # AKGC417L = 3, Meditron = 0; no LittC2SE or Litt3200 cycle
    by_device = per_group_scores(Y_TRUE, Y_PRED, groups, names=DEVICES)
    assert list(by_device) == ["Meditron", "AKGC417L"]
    med = by_device["Meditron"]  # cycles 2,3,5,7: true [0,0,1,2], pred [1,3,2,2]
    assert med["confusion"].tolist() == [[0, 1, 0, 1], [0, 0, 1, 0], [0, 0, 1, 0], [0, 0, 0, 0]]
    assert (med["sp"], med["se"], med["score"], med["n"]) == (0.0, 50.0, 25.0, 4)
    akg = by_device["AKGC417L"]  # cycles 0,1,4,6,8,9: true [0,0,1,1,2,3], pred [0,0,1,1,0,3]
    assert (akg["sp"], akg["se"], akg["score"], akg["n"]) == (100.0, 75.0, 87.5, 6)
    two = per_group_scores(Y_TRUE, Y_PRED, groups, names=DEVICES, two_class_eval=True)
    assert two["Meditron"]["se"] == 100.0  # both abnormal cycles predicted abnormal


def test_per_group_with_string_values():
    locs = ["Tc", "Tc", "Al", "Al", "Tc", "Al", "Tc", "Al", "Tc", "Tc"]
    by_loc = per_group_scores(Y_TRUE, Y_PRED, locs)
    assert list(by_loc) == ["Al", "Tc"]
    assert by_loc["Al"]["score"] == 25.0 and by_loc["Tc"]["score"] == 87.5


def test_format_scores_one_line():
    line = format_scores(icbhi_scores(Y_TRUE, Y_PRED))
    assert line == "Score 58.33 | Sp 50.00 | Se 66.67 | n 10 | normal 50.00 crackle 66.67 wheeze 50.00 both 100.00"
    assert "Se nan" in format_scores(icbhi_scores([0], [0]))


@pytest.mark.parametrize(
    ("y_true", "y_pred", "kwargs", "message"),
    [
        ([0, 1, 2], [0, 1], {}, "differ in length: 3 vs 2"),
        ([0, 4], [0, 1], {}, "y_true has 1 label(s) outside [0, 4), e.g. 4 at index 1"),
        ([0, 1], [0, -1], {}, "y_pred has 1 label(s) outside [0, 4), e.g. -1 at index 1"),
        ([0, 2], [0, 2], {"n_classes": 2}, "outside [0, 2)"),
        ([0, 1.5], [0, 1], {}, "non-integer"),
        ([[0, 1]], [[0, 1]], {}, "must be a 1-D sequence"),
        ([], [], {}, "no samples to score"),
        (["a"], [0], {}, "integer class indices"),
        ([0], [0], {"n_classes": 1}, "at least 2"),
    ],
)
def test_input_validation(y_true, y_pred, kwargs, message):
    with pytest.raises(LungsoundError) as err:
        icbhi_scores(y_true, y_pred, **kwargs)
    assert message in str(err.value)
    assert err.value.path is None


def test_per_group_validation():
    with pytest.raises(LungsoundError, match="differ in length"):
        per_group_scores([0, 1], [0, 1], [0])
    with pytest.raises(LungsoundError, match=r"groups has 1 label\(s\) outside \[0, 4\)"):
        per_group_scores([0, 1], [0, 1], [0, 7], names=DEVICES)
