"""The ICBHI 2017 challenge metric (docs/methods.md section 6; Rocha et al., Physiol. Meas. 2019).

Every paper this toolkit reproduces ([PMCL] Bae et al. 2023, [SGSCL] Kim et al. 2024, [REPAUG] Kim et al. 2024,
[AFT] Kim et al. 2023) reports the same three numbers on the 4-class task (normal 0, crackle 1, wheeze 2, both 3).
With C the confusion matrix (rows = true class, columns = predicted class):

    Sp    = C[0, 0] / sum_j C[0, j]                                  (recall of normal cycles)
    Se    = sum_{k>=1} C[k, k] / sum_{k>=1} sum_j C[k, j]            (abnormal cycles given their exact class)
    Score = (Sp + Se) / 2

All three are returned in percent, as the papers print them. In the two-class evaluation any abnormal prediction on an
abnormal cycle is a hit, so Se = sum_{k>=1} sum_{j>=1} C[k, j] / sum_{k>=1} sum_j C[k, j]; Sp is unchanged.
The same code serves an n-class task whose class 0 is "normal" (n_classes=2 gives the plain normal/abnormal task).

Undefined terms: with no normal cycle Sp is NaN, with no abnormal cycle Se is NaN, and then the Score is NaN too.
A Score built from one term alone would not be the ICBHI Score, so it is never silently substituted. This matters for
per-group breakdowns (a device whose test cycles are all normal has no Se). Per-class accuracy (class recall) is NaN
for a class with no cycles. An empty input, labels outside [0, n_classes), or unequal lengths raise `LungsoundError`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from lungsound.data.labels import CLASSES
from lungsound.errors import LungsoundError


def class_names(n_classes: int) -> tuple[str, ...]:
    """Names of the class indices: the ICBHI four, normal/abnormal for two, ``class<i>`` otherwise."""
    if n_classes == len(CLASSES):
        return CLASSES
    if n_classes == 2:
        return ("normal", "abnormal")
    return tuple(f"class{i}" for i in range(n_classes))


def _to_numpy(values: Any) -> np.ndarray:
    """A list, numpy array or torch tensor (possibly on a GPU) as a numpy array."""
    if hasattr(values, "detach"):
        values = values.detach().cpu().numpy()
    return np.asarray(values)


def _as_labels(values: Any, what: str, n_classes: int) -> np.ndarray:
    """Validate a 1-D sequence of integer labels in [0, n_classes) and return it as an int64 array."""
    arr = _to_numpy(values)
    if arr.ndim != 1:
        raise LungsoundError(f"{what} must be a 1-D sequence of class indices, got shape {arr.shape}")
    if arr.dtype.kind == "f":
        if not np.all(np.isfinite(arr)) or not np.all(arr == np.round(arr)):
            raise LungsoundError(f"{what} must hold integer class indices, got non-integer values")
    elif arr.dtype.kind not in "iub" and arr.size:
        raise LungsoundError(f"{what} must hold integer class indices, got dtype {arr.dtype}")
    arr = arr.astype(np.int64)
    bad = (arr < 0) | (arr >= n_classes)
    if bad.any():
        raise LungsoundError(
            f"{what} has {int(bad.sum())} label(s) outside [0, {n_classes}), e.g. {int(arr[bad][0])} at index "
            f"{int(np.flatnonzero(bad)[0])}"
        )
    return arr


def confusion_matrix(y_true: Any, y_pred: Any, n_classes: int = 4) -> np.ndarray:
    """Integer (n_classes, n_classes) confusion matrix, rows = true class, columns = predicted class."""
    if n_classes < 2:
        raise LungsoundError(f"n_classes must be at least 2 (normal plus one abnormal class), got {n_classes}")
    t = _as_labels(y_true, "y_true", n_classes)
    p = _as_labels(y_pred, "y_pred", n_classes)
    if len(t) != len(p):
        raise LungsoundError(f"y_true and y_pred differ in length: {len(t)} vs {len(p)}")
    if len(t) == 0:
        raise LungsoundError("no samples to score: y_true and y_pred are empty")
    flat = np.bincount(t * n_classes + p, minlength=n_classes * n_classes)
    return flat.reshape(n_classes, n_classes).astype(np.int64)


def _percent(numerator: float, denominator: float) -> float:
    return 100.0 * numerator / denominator if denominator > 0 else math.nan


def scores_from_confusion(confusion: np.ndarray, two_class_eval: bool = False) -> dict:
    """Sp, Se, Score (percent), per-class accuracy and the confusion itself from a confusion matrix (rows = true)."""
    c = np.asarray(confusion)
    if c.ndim != 2 or c.shape[0] != c.shape[1] or c.shape[0] < 2:
        raise LungsoundError(f"confusion must be a square matrix of at least 2 x 2, got shape {c.shape}")
    if (c < 0).any():
        raise LungsoundError("confusion has negative counts")
    c = c.astype(np.int64)
    n_classes = c.shape[0]
    abnormal = c[1:, :]  # true abnormal rows
    hits = abnormal[:, 1:].sum() if two_class_eval else np.trace(c[1:, 1:])
    sp = _percent(c[0, 0], c[0].sum())
    se = _percent(hits, abnormal.sum())
    row_totals = c.sum(axis=1)
    per_class = {name: _percent(c[k, k], row_totals[k]) for k, name in enumerate(class_names(n_classes))}
    return {
        "sp": sp,
        "se": se,
        "score": (sp + se) / 2.0,  # NaN when either term is undefined
        "per_class_acc": per_class,
        "confusion": c,
        "n": int(c.sum()),
    }


def icbhi_scores(y_true: Any, y_pred: Any, two_class_eval: bool = False, n_classes: int = 4) -> dict:
    """ICBHI scores of predicted class indices against the true ones.

    Returns ``{"sp", "se", "score"}`` in percent, ``"per_class_acc"`` (class name -> percent, NaN for an absent
    class), ``"confusion"`` (n_classes x n_classes int array, rows = true) and ``"n"`` (number of cycles).
    """
    return scores_from_confusion(confusion_matrix(y_true, y_pred, n_classes), two_class_eval)


def per_group_scores(
    y_true: Any,
    y_pred: Any,
    groups: Any,
    names: Sequence[str] | None = None,
    two_class_eval: bool = False,
    n_classes: int = 4,
) -> dict[str, dict]:
    """ICBHI scores within each group of a metadata field (device, location, age group, ...).

    ``groups`` holds one group per cycle. With ``names`` the groups are integer indices into it (e.g. device indices
    with ``names=db.devices``) and the result follows the order of ``names``; without it the group values themselves
    (strings or numbers) are the keys, in sorted order. Groups without any cycle are left out (the ICBHI test split
    has no LittC2SE recording, for instance).
    """
    g, t, p = _to_numpy(groups), _to_numpy(y_true), _to_numpy(y_pred)
    if g.ndim != 1 or t.ndim != 1 or p.ndim != 1:
        raise LungsoundError(f"groups, y_true and y_pred must be 1-D, got shapes {g.shape}, {t.shape}, {p.shape}")
    if not len(g) == len(t) == len(p):
        raise LungsoundError(f"groups, y_true and y_pred differ in length: {len(g)}, {len(t)}, {len(p)}")
    if len(t) == 0:
        raise LungsoundError("no samples to score: y_true and y_pred are empty")

    if names is not None:
        index = _as_labels(g, "groups", len(names))
        keys = [(name, index == i) for i, name in enumerate(names)]
    else:
        keys = [(str(value), g == value) for value in np.unique(g)]
    return {
        key: icbhi_scores(t[mask], p[mask], two_class_eval=two_class_eval, n_classes=n_classes)
        for key, mask in keys
        if mask.any()
    }


def format_scores(scores: dict) -> str:
    """One-line summary, e.g. ``Score 62.37 | Sp 81.66 | Se 43.07 | n 2756 | normal 81.66 crackle 50.00 ...``."""

    def fmt(value: float) -> str:
        return "nan" if math.isnan(value) else f"{value:.2f}"

    head = f"Score {fmt(scores['score'])} | Sp {fmt(scores['sp'])} | Se {fmt(scores['se'])} | n {scores['n']}"
    per_class = " ".join(f"{name} {fmt(acc)}" for name, acc in scores.get("per_class_acc", {}).items())
    return f"{head} | {per_class}" if per_class else head
