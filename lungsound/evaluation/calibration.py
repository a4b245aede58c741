"""Confidence calibration by temperature scaling (Guo, Pleiss, Sun, Weinberger, "On Calibration of Modern Neural
Networks", ICML 2017).

A classifier's softmax p = softmax(z) is often over-confident. Temperature scaling divides every logit vector by one
scalar T > 0 fitted on held-out data (the clean protocol's validation patients):

    p_T = softmax(z / T),    T* = argmin_T  NLL(T) = -(1/N) sum_i log softmax(z_i / T)[y_i]

NLL is convex in beta = 1/T (a log-sum-exp of functions linear in beta minus a linear term), so it is unimodal in
log T and a bounded 1-D search over log T in [log 0.05, log 20] finds the minimum. T does not change the arg-max, so
accuracy, Sp, Se and Score are unchanged; only the confidences move.

Expected calibration error, top-label, equal-width bins (Naeini et al., AAAI 2015; Guo et al. 2017): with confidence
c_i = max_k p_ik, prediction yhat_i = argmax_k p_ik and bins B_m = ((m-1)/M, m/M] for m = 1..M,

    ECE = sum_m |B_m| / N * | acc(B_m) - conf(B_m) |,   acc(B_m) = mean 1[yhat_i = y_i],  conf(B_m) = mean c_i.

`calibrate_checkpoint` stores {"temperature", "ece_before", "ece_after", "n"} under "calibration" in a model folder's
meta.json; `lungsound.inference.Predictor` divides logits by that temperature. A stored temperature must lie in
`TEMPERATURE_RANGE` = [0.01, 100] (checked where meta.json is read: `lungsound.models.folder.check_temperature`,
re-exported here): it holds every value the fit can give (0.05 to 20) with room for one set by hand, while T -> 0
turns z / T into infinities and softmax into NaN (1e-300 does), and T -> inf makes every probability 1/C whatever the
model says.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
from scipy.optimize import minimize_scalar
from scipy.special import log_softmax

from lungsound.errors import LungsoundError
# TEMPERATURE_RANGE and check_temperature are re-exported: the range is a rule of meta.json, explained here
from lungsound.models.folder import META_FILE, TEMPERATURE_RANGE, check_temperature, read_meta  # noqa: F401
from lungsound.storage import atomic_write_json

LOG_T_BOUNDS = (math.log(0.05), math.log(20.0))


def softmax(logits: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    """softmax(z / T) along the last axis, computed in float64."""
    return np.exp(log_softmax(np.asarray(logits, dtype=np.float64) / temperature, axis=-1))


def nll(logits: np.ndarray, labels: np.ndarray, temperature: float = 1.0) -> float:
    """Mean negative log-likelihood of `labels` under softmax(logits / T)."""
    logits, labels = _check(logits, labels)
    logp = log_softmax(logits / temperature, axis=1)
    return float(-logp[np.arange(len(labels)), labels].mean())


def fit_temperature(logits: np.ndarray, labels: np.ndarray) -> float:
    """The temperature T > 0 minimising the NLL of `labels` under softmax(logits / T) (bounded search over log T)."""
    logits, labels = _check(logits, labels)
    result = minimize_scalar(lambda log_t: nll(logits, labels, math.exp(log_t)), bounds=LOG_T_BOUNDS,
                             method="bounded", options={"xatol": 1e-5})
    return float(math.exp(result.x))


def expected_calibration_error(probs: np.ndarray, labels: np.ndarray, n_bins: int = 15) -> float:
    """Top-label ECE with `n_bins` equal-width confidence bins ((m-1)/M, m/M] (see the module docstring)."""
    probs, labels = _check(probs, labels)
    confidence, correct, bins = _binned(probs, labels, n_bins)
    ece = 0.0
    for m in range(n_bins):
        in_bin = bins == m
        if in_bin.any():
            ece += in_bin.mean() * abs(correct[in_bin].mean() - confidence[in_bin].mean())
    return float(ece)


def reliability_diagram(probs: np.ndarray, labels: np.ndarray, path: str | Path, title: str = "Reliability diagram",
                        calibrated: np.ndarray | None = None, n_bins: int = 15) -> Path:
    """PNG of accuracy against confidence per bin (bars), with the diagonal of perfect calibration.

    `calibrated` (probabilities after temperature scaling, same items) adds its per-bin accuracy as a line.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    probs, labels = _check(probs, labels)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    centres = (np.arange(n_bins) + 0.5) / n_bins
    fig, ax = plt.subplots(figsize=(5, 5))
    ax.plot([0, 1], [0, 1], linestyle="--", color="grey", label="perfect calibration")
    acc = _bin_accuracy(probs, labels, n_bins)
    ece = expected_calibration_error(probs, labels, n_bins)
    ax.bar(centres, np.nan_to_num(acc), width=1.0 / n_bins, edgecolor="black", alpha=0.6,
           label=f"before (ECE {100 * ece:.1f}%)")
    if calibrated is not None:
        calibrated, _ = _check(calibrated, labels)
        acc_after = _bin_accuracy(calibrated, labels, n_bins)
        ece_after = expected_calibration_error(calibrated, labels, n_bins)
        shown = ~np.isnan(acc_after)
        ax.plot(centres[shown], acc_after[shown], marker="o", color="C3", label=f"after (ECE {100 * ece_after:.1f}%)")
    ax.set(xlim=(0, 1), ylim=(0, 1), xlabel="confidence (top-label probability)", ylabel="accuracy", title=title)
    ax.legend(loc="upper left")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def calibrate_checkpoint(folder: str | Path, logits: np.ndarray, labels: np.ndarray, n_bins: int = 15) -> dict:
    """Fit T on held-out logits/labels and store the calibration under "calibration" in the folder's meta.json."""
    logits, labels = _check(logits, labels)
    meta_path = Path(folder) / META_FILE
    if not meta_path.exists():
        raise LungsoundError(f"not a lungsound checkpoint: {META_FILE} is missing", folder)
    temperature = fit_temperature(logits, labels)
    record = {
        "temperature": temperature,
        "ece_before": expected_calibration_error(softmax(logits), labels, n_bins),
        "ece_after": expected_calibration_error(softmax(logits, temperature), labels, n_bins),
        "n": int(len(labels)),
    }
    meta = read_meta(folder)
    meta["calibration"] = record
    atomic_write_json(meta_path, meta)
    return record


def _check(scores: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(N, C) finite float64 scores and (N,) integer labels in [0, C)."""
    scores = np.asarray(scores, dtype=np.float64)
    labels = np.asarray(labels)
    if scores.ndim != 2 or scores.shape[0] == 0 or scores.shape[1] < 2:
        raise LungsoundError(f"expected an (N, C) array with N >= 1 and C >= 2, got shape {scores.shape}")
    if labels.shape != (scores.shape[0],):
        raise LungsoundError(f"expected {scores.shape[0]} labels, got shape {labels.shape}")
    if not np.all(np.isfinite(scores)):
        raise LungsoundError("logits/probabilities contain NaN or infinite values")
    if not np.issubdtype(labels.dtype, np.integer) or labels.min() < 0 or labels.max() >= scores.shape[1]:
        raise LungsoundError(f"labels must be integers in [0, {scores.shape[1]})")
    return scores, labels.astype(np.int64)


def _binned(probs: np.ndarray, labels: np.ndarray, n_bins: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Confidence, correctness and bin index m - 1 of each item (bin m holds confidences in ((m-1)/M, m/M])."""
    if n_bins < 1:
        raise LungsoundError(f"n_bins must be at least 1, got {n_bins}")
    confidence = probs.max(axis=1)
    correct = (probs.argmax(axis=1) == labels).astype(np.float64)
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    bins = np.clip(np.searchsorted(edges, confidence, side="left") - 1, 0, n_bins - 1)
    return confidence, correct, bins


def _bin_accuracy(probs: np.ndarray, labels: np.ndarray, n_bins: int) -> np.ndarray:
    """Accuracy per bin (NaN for empty bins)."""
    _, correct, bins = _binned(probs, labels, n_bins)
    counts = np.bincount(bins, minlength=n_bins)
    sums = np.bincount(bins, weights=correct, minlength=n_bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(counts > 0, sums / np.maximum(counts, 1), np.nan)
