"""Temperature scaling, ECE and the calibration record in a checkpoint's meta.json."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from lungsound.evaluation.calibration import (calibrate_checkpoint, expected_calibration_error, fit_temperature, nll,
                                   reliability_diagram, softmax)
from lungsound.config import load_config
from lungsound.errors import LungsoundError
from lungsound.models.build import build_model
from lungsound.models.folder import META_FILE, save_model


def synthetic(t_true: float, n: int = 20000, classes: int = 4, seed: int = 0):
    """Logits T_true * base with labels drawn from softmax(base): softmax(logits / T_true) is calibrated exactly."""
    rng = np.random.default_rng(seed)
    base = rng.normal(0.0, 2.0, size=(n, classes))
    p = softmax(base)
    labels = (rng.random(n)[:, None] > np.cumsum(p, axis=1)).sum(axis=1)
    return t_true * base, labels


def test_ece_hand_computed():
    # Confidences 0.9 (right), 0.9 (wrong), 0.65 (right), 0.55 (right) with 5 bins:
    # (0.8, 1]: |0.5 - 0.9| * 2/4 = 0.2;  (0.6, 0.8]: |1 - 0.65| / 4 = 0.0875;  (0.4, 0.6]: |1 - 0.55| / 4 = 0.1125.
    probs = np.array([[0.9, 0.1], [0.1, 0.9], [0.35, 0.65], [0.55, 0.45]])
    labels = np.array([0, 0, 1, 0])
    assert expected_calibration_error(probs, labels, n_bins=5) == pytest.approx(0.4)
    # One bin: |accuracy 0.75 - mean confidence 0.75| = 0.
    assert expected_calibration_error(probs, labels, n_bins=1) == pytest.approx(0.0)


def test_ece_bin_edges_are_right_closed():
    # Confidence exactly 0.6 belongs to (0.4, 0.6], not (0.6, 0.8]: a wrong prediction there gives |0 - 0.6|.
    probs = np.array([[0.6, 0.4], [0.7, 0.3]])
    labels = np.array([1, 0])
    assert expected_calibration_error(probs, labels, n_bins=5) == pytest.approx(0.5 * 0.6 + 0.5 * 0.3)


@pytest.mark.parametrize("t_true", [0.5, 2.5])
def test_fit_temperature_recovers_a_known_temperature(t_true):
    logits, labels = synthetic(t_true, seed=int(t_true * 10))
    t = fit_temperature(logits, labels)
    assert t == pytest.approx(t_true, rel=0.1)
    assert nll(logits, labels, t) < nll(logits, labels, 1.0)
    before = expected_calibration_error(softmax(logits), labels)
    after = expected_calibration_error(softmax(logits, t), labels)
    assert after < 0.02 < before


def test_calibrated_data_keeps_t_near_one():
    logits, labels = synthetic(1.0, seed=3)
    assert fit_temperature(logits, labels) == pytest.approx(1.0, abs=0.05)


def test_input_validation():
    with pytest.raises(LungsoundError, match="labels must be integers"):
        fit_temperature(np.zeros((3, 4)), np.array([0, 1, 4]))
    with pytest.raises(LungsoundError, match="expected 3 labels"):
        expected_calibration_error(np.full((3, 2), 0.5), np.array([0, 1]))
    with pytest.raises(LungsoundError, match="NaN"):
        fit_temperature(np.array([[np.nan, 0.0]]), np.array([0]))


def test_reliability_diagram_writes_a_png(tmp_path):
    logits, labels = synthetic(2.0, n=2000)
    t = fit_temperature(logits, labels)
    path = reliability_diagram(softmax(logits), labels, tmp_path / "plots" / "rel.png", "validation",
                               calibrated=softmax(logits, t))
    assert path.exists() and path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 5000


def test_calibrate_checkpoint_stores_the_record_the_predictor_reads(tmp_path):
    from lungsound.inference import Predictor

    torch.manual_seed(0)
    cfg = load_config(None, ["model.name=ast_tiny", "data.duration=2.0"])
    folder = save_model(tmp_path / "m", build_model(cfg), cfg, {"selected_epoch": 2})
    logits, labels = synthetic(3.0, n=4000)
    record = calibrate_checkpoint(folder, logits, labels)
    assert set(record) == {"temperature", "ece_before", "ece_after", "n"}
    assert record["n"] == 4000 and record["temperature"] == pytest.approx(3.0, rel=0.1)
    assert record["ece_after"] < record["ece_before"]
    meta = json.loads((folder / META_FILE).read_text())
    assert meta["calibration"] == record and meta["selected_epoch"] == 2
    predictor = Predictor.from_checkpoint(folder, device="cpu")
    assert predictor.calibrated and predictor.temperature == record["temperature"]
    with pytest.raises(LungsoundError, match="meta.json is missing"):
        calibrate_checkpoint(tmp_path / "nowhere", logits, labels)
