"""The leave-one-stethoscope-out table: fold scores beside the official model's score on the same device's cycles."""

from __future__ import annotations

import json
import math

import pytest

from lungsound.cli import main
from lungsound.results.device_ood import device_ood, device_ood_rows
from lungsound.errors import LungsoundError
from lungsound.tracking import RunLogger


def _log(experiment: str, split: str, seed: int, score: float, per_device: dict[str, float] | None = None,
         protocol: str = "paper") -> None:
    logger = RunLogger.start(experiment, f"{split}-{seed}", {"experiment_file": "exp", "protocol": protocol,
                                                               "seed": seed, "data_fingerprint": split})
    logger.log_params({"data.split": split, "train.seed": seed})
    metrics = {"final_test_score": score, "final_test_sp": score + 10, "final_test_se": score - 10,
               "final_test_acc_normal": score + 10, "final_test_acc_crackle": score - 5}
    metrics.update({f"final_test_score_{d}": v for d, v in (per_device or {}).items()})
    logger.log_metrics(metrics)
    logger.end("FINISHED")


def test_table_puts_each_fold_beside_the_official_models_score_on_that_device(mlflow_store, tmp_path):
    # Official split, two seeds: scores per device (no LittC2SE test cycle, as in ICBHI).
    _log("ood", "official", 1, 60.0, {"Meditron": 70.0, "Litt3200": 50.0, "AKGC417L": 58.0})
    _log("ood", "official", 2, 62.0, {"Meditron": 74.0, "Litt3200": 54.0, "AKGC417L": 60.0})
    for seed, meditron in ((1, 50.0), (2, 54.0)):
        _log("ood", "device_out=Meditron", seed, meditron)
    _log("ood", "device_out=LittC2SE", 1, 45.0)
    _log("ood", "device_out=Litt3200", 1, 30.0)
    notes: list[str] = []
    rows = {r["held_out"]: r for r in device_ood_rows("exp", mlflow_experiments=["ood"], notes=notes)}
    med = rows["Meditron"]
    assert med["seeds"] == 2 and med["score"] == pytest.approx((52.0, 2.0))  # mean of 50, 54; population std 2
    assert med["id_score"] == pytest.approx((72.0, 2.0))  # the official runs' Meditron scores 70, 74
    assert med["delta"] == pytest.approx(52.0 - 72.0)
    assert med["sp"] == pytest.approx((62.0, 2.0)) and med["acc_crackle"] == pytest.approx((47.0, 2.0))
    assert rows["Litt3200"]["delta"] == pytest.approx(30.0 - 52.0)
    assert math.isnan(rows["LittC2SE"]["id_score"][0]) and rows["LittC2SE"]["score"][0] == 45.0
    assert rows["AKGC417L"]["seeds"] == 0 and math.isnan(rows["AKGC417L"]["score"][0])
    assert rows["none (official split)"]["score"] == pytest.approx((61.0, 1.0))
    assert any("LittC2SE: no official test cycle" in n for n in notes)
    assert any("device_out=AKGC417L" in n for n in notes)

    md = device_ood("exp", tmp_path / "out", mlflow_experiments=["ood"])
    assert "| Meditron | 2 | 62.00 ± 2.00 | 42.00 ± 2.00 | 52.00 ± 2.00 |" in md and "| 72.00 ± 2.00 | -20.00 |" in md
    written = json.loads((tmp_path / "out" / "device_ood.json").read_text())
    assert written[0]["held_out"] == "Meditron" and written[1]["id_score"] == {"mean": None, "std": None}
    assert (tmp_path / "out" / "device_ood.png").stat().st_size > 10_000


def test_no_runs_or_mixed_protocols_are_one_line_errors(mlflow_store):
    _log("ood-mixed", "official", 1, 60.0, protocol="paper")
    _log("ood-mixed", "official", 1, 58.0, protocol="clean")
    with pytest.raises(LungsoundError, match="protocols clean, paper; pick one"):
        device_ood_rows("exp", mlflow_experiments=["ood-mixed"])
    with pytest.raises(LungsoundError, match="no finished runs of experiment file 'other'"):
        device_ood_rows("other", mlflow_experiments=["ood-mixed"])
    assert device_ood_rows("exp", "clean", ["ood-mixed"])[-1]["score"][0] == 58.0


def test_cli_prints_the_table(mlflow_store, tmp_path, capsys):
    exp = tmp_path / "exp.yaml"
    exp.write_text("name: exp\ntracking:\n  experiment: ood-cli\n")
    _log("ood-cli", "official", 1, 60.0, {"Meditron": 70.0})
    _log("ood-cli", "device_out=Meditron", 1, 50.0)
    assert main(["device-ood", "-c", str(exp), "--out", str(tmp_path / "o")]) == 0
    out = capsys.readouterr().out
    assert "Leave-one-stethoscope-out: exp" in out and "| Meditron | 1 |" in out and "-20.00" in out
