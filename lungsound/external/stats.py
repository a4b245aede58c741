"""Recording-level sensitivity and specificity with Wilson score 95% intervals, and the confusion table of findings.

For one finding (crackles, or wheezes), over the scored recordings with label y_i and prediction yhat_i (present or
not):

    sensitivity = TP / (TP + FN)   (recordings labelled present that the model finds present)
    specificity = TN / (TN + FP)   (recordings labelled absent that the model finds absent)

Interval: the Wilson score interval (Wilson, JASA 22 (1927) 209-212; recommended over the Wald interval for small n by
Newcombe, Stat. Med. 17 (1998) 857-872, method 3). For k successes in n trials, p = k / n and z = 1.959964 (95%):

    centre = (p + z^2 / (2n)) / (1 + z^2 / n)
    half   = z / (1 + z^2 / n) * sqrt(p (1 - p) / n + z^2 / (4 n^2))
    CI     = [centre - half, centre + half]   (clipped to [0, 1] against rounding)

It always lies in [0, 1] and contains p; for 8/10 it is [0.4902, 0.9433], for 0/10 [0, 0.2775]. With n = 0 (no
recording labelled present, or none labelled absent) the proportion and its interval are undefined: None here (JSON
null, "n/a" in the report), and not logged as a metric.
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np

from lungsound.external.base import FINDINGS
from lungsound.evaluation.metrics import confusion_matrix

Z95 = 1.959963984540054  # the 97.5% quantile of the standard normal
INTERVAL = "Wilson score 95% interval"


def wilson_interval(k: int, n: int, z: float = Z95) -> tuple[float, float] | None:
    """The Wilson score interval of k successes in n trials (None when n = 0)."""
    if not 0 <= k <= n:
        raise ValueError(f"need 0 <= k <= n, got k={k}, n={n}")
    if n == 0:
        return None
    p, z2 = k / n, z * z
    denominator = 1.0 + z2 / n
    centre = (p + z2 / (2 * n)) / denominator
    half = z / denominator * math.sqrt(p * (1.0 - p) / n + z2 / (4.0 * n * n))
    return max(0.0, centre - half), min(1.0, centre + half)


def proportion(k: int, n: int) -> float | None:
    return k / n if n else None


def binary_scores(truth: Sequence[bool], predicted: Sequence[bool]) -> dict:
    """Sensitivity, specificity (fractions in [0, 1] or None), their Wilson intervals and the four counts."""
    t, p = np.asarray(truth, dtype=bool), np.asarray(predicted, dtype=bool)
    if t.shape != p.shape:
        raise ValueError(f"truth and predictions differ in length: {t.shape} vs {p.shape}")
    tp, fn = int((t & p).sum()), int((t & ~p).sum())
    tn, fp = int((~t & ~p).sum()), int((~t & p).sum())
    se_ci, sp_ci = wilson_interval(tp, tp + fn), wilson_interval(tn, tn + fp)
    return {"sensitivity": proportion(tp, tp + fn), "specificity": proportion(tn, tn + fp),
            "ci": {"sensitivity": list(se_ci) if se_ci else None, "specificity": list(sp_ci) if sp_ci else None},
            "positives": tp + fn, "negatives": tn + fp, "tp": tp, "fn": fn, "tn": tn, "fp": fp}


def finding_confusion(truth: Sequence[str], predicted: Sequence[str]) -> list[list[int]]:
    """4 x 4 counts, rows = labelled finding, columns = predicted finding, both in `FINDINGS` order (all zeros when
    nothing was scored)."""
    if len(truth) == 0:
        return [[0] * len(FINDINGS) for _ in FINDINGS]
    index = {f: i for i, f in enumerate(FINDINGS)}
    matrix = confusion_matrix([index[f] for f in truth], [index[f] for f in predicted], n_classes=len(FINDINGS))
    return matrix.tolist()
