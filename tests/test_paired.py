"""Issue 12, item 5: paired comparison of two experiments over the same seeds, and which std the compare table uses."""

from __future__ import annotations

import csv
import json
import math

import numpy as np
import pytest
from scipy import stats

from lungsound.cli import main
from lungsound.results.paired import paired_stats
from lungsound.tracking import RunLogger

A = [60.0, 62.0, 61.0, 63.0, 64.0]
B = [58.0, 61.0, 60.0, 60.0, 62.0]
# By hand: d = A - B = [2, 1, 1, 3, 2], n = 5, mean d = 9 / 5 = 1.8.
# Deviations from 1.8: 0.2, -0.8, -0.8, 1.2, 0.2; squares 0.04 + 0.64 + 0.64 + 1.44 + 0.04 = 2.8.
# Sample variance 2.8 / (n - 1) = 0.7, s_d = sqrt(0.7) = 0.83666; SE = s_d / sqrt(5) = sqrt(0.14) = 0.374166.
# t = 1.8 / 0.374166 = 4.81070, df = 4. t_{0.975, 4} = 2.776445 (Student t table: 2.776),
# half width 2.776445 * 0.374166 = 1.038851, so the 95% interval is [0.761149, 2.838851].
T_CRIT_4 = 2.7764451051977934
HAND = {"mean_diff": 1.8, "sd_diff": math.sqrt(0.7), "t": 1.8 / math.sqrt(0.14),
        "ci_low": 1.8 - T_CRIT_4 * math.sqrt(0.14), "ci_high": 1.8 + T_CRIT_4 * math.sqrt(0.14)}


def _seeds(values: list[float], first: int = 1) -> dict[str, float]:
    return {str(first + i): v for i, v in enumerate(values)}


def test_paired_statistics_match_hand_arithmetic_and_scipy():
    r = paired_stats(_seeds(A), _seeds(B))
    assert r.n == 5 and r.df == 4 and r.seeds == ["1", "2", "3", "4", "5"] and not r.only_a and not r.only_b
    assert (r.mean_a, r.mean_b) == pytest.approx((62.0, 60.2))
    for key, value in HAND.items():
        assert getattr(r, key) == pytest.approx(value, rel=1e-9), key
    assert r.ci_low == pytest.approx(0.761149, abs=1e-6) and r.ci_high == pytest.approx(2.838851, abs=1e-6)
    ref = stats.ttest_rel(A, B)
    assert r.t == pytest.approx(float(ref.statistic), rel=1e-12) and r.p == pytest.approx(float(ref.pvalue), rel=1e-9)
    assert 0.0085 < r.p < 0.0087 and r.notes == []
    flipped = paired_stats(_seeds(B), _seeds(A))  # B - A: the mirror image, same p
    assert flipped.mean_diff == pytest.approx(-1.8) and flipped.ci_low == pytest.approx(-HAND["ci_high"])
    assert flipped.p == pytest.approx(r.p)


def test_only_common_seeds_are_paired_and_the_others_reported():
    a = {**_seeds(A), "6": 99.0}  # seed 6 only in A
    b = {**_seeds(B), "17": 10.0}  # seed 17 only in B; keys in another order than A's
    r = paired_stats(a, dict(reversed(list(b.items()))))
    assert r.n == 5 and r.only_a == ["6"] and r.only_b == ["17"]
    assert r.mean_diff == pytest.approx(1.8) and r.t == pytest.approx(HAND["t"])
    assert r.notes == ["seeds only in A: 6; only in B: 17 (left out of the pairing)"]
    assert paired_stats({"10": 1.0, "2": 2.0, "1": 3.0}, {"1": 0.0, "2": 0.0, "10": 0.0}).seeds == ["1", "2", "10"]


def test_fewer_than_two_seeds_give_a_note_not_a_crash():
    one = paired_stats({"1": 60.0, "2": 61.0}, {"2": 58.5, "3": 57.0})
    assert one.n == 1 and one.mean_diff == pytest.approx(2.5) and math.isnan(one.t) and math.isnan(one.p)
    assert math.isnan(one.ci_low) and any("only 1 common seed" in n for n in one.notes)
    none = paired_stats({"1": 60.0}, {"2": 58.0})
    assert none.n == 0 and math.isnan(none.mean_diff) and "no seed in common: nothing to pair" in none.notes


def test_zero_variance_differences_are_numbers_with_a_note():
    same = paired_stats(_seeds(A), _seeds(A))
    assert (same.mean_diff, same.sd_diff, same.ci_low, same.ci_high, same.t, same.p) == (0, 0, 0, 0, 0, 1)
    assert "same on every common seed" in same.notes[0]
    shifted = paired_stats(_seeds([a + 0.1 for a in A]), _seeds([a - 2.0 for a in A]))  # 2.1 everywhere, up to rounding
    assert shifted.mean_diff == pytest.approx(2.1) and shifted.ci_low == shifted.ci_high == shifted.mean_diff
    assert shifted.t == math.inf and shifted.p == 0.0 and "no variation" in shifted.notes[0]


def test_a_nan_score_is_named_not_dropped():
    r = paired_stats(_seeds([60.0, float("nan"), 61.0]), _seeds([58.0, 59.0, 60.0]))
    assert r.n == 3 and math.isnan(r.mean_diff) and math.isnan(r.p) and "NaN score in seed(s) 2" in r.notes[0]


# --- the CLI on an MLflow store holding two fake experiment groups ---------------------------------------------------

def _log_run(file: str, protocol: str, seed: int, score: float, se: float = 40.0) -> None:
    logger = RunLogger.start("paired-cli", f"{file}-{seed}", {"experiment_file": file, "protocol": protocol,
                                                               "seed": seed, "data_fingerprint": "d1"})
    logger.log_params({"train.seed": seed, "train.protocol": protocol, "tracking.run_name": f"{file}-{seed}"})
    logger.log_metrics({"final_test_score": score, "final_test_se": se, "final_test_sp": 2 * score - se})
    logger.end("FINISHED")


@pytest.fixture(scope="module")
def two_groups(mlflow_store):
    for seed, (a, b) in enumerate(zip(A, B), start=1):
        _log_run("method_a", "clean", seed, a)
        _log_run("method_b", "clean", seed, b)
    _log_run("method_b", "clean", 6, 59.0)  # a seed B has and A has not
    _log_run("method_a", "paper", 1, 70.0)  # method_a also has a paper-protocol row
    return mlflow_store


def test_cli_paired_prints_and_writes_the_hand_computed_numbers(two_groups, tmp_path, capsys):
    out = tmp_path / "cmp"
    assert main(["compare", "--experiment", "paired-cli", "--out", str(out),
                 "--paired", "method_a:clean", "method_b"]) == 0
    printed = capsys.readouterr().out
    # Score: hand values above. Sp = 2 Score - 40, so its differences are doubled (same t and p);
    # Se is 40 everywhere in both: all differences 0.
    assert "n = 5 common seeds (1, 2, 3, 4, 5)" in printed
    assert "| Score | 5 | 62.00 | 60.20 | 1.80 | [0.76, 2.84] | 4.81 | 0.0086 |" in printed
    assert "| Sp | 5 | 84.00 | 80.40 | 3.60 | [1.52, 5.68] | 4.81 | 0.0086 |" in printed
    assert "| Se | 5 | 40.00 | 40.00 | 0.00 | [0.00, 0.00] | 0.00 | 1.0000 |" in printed
    assert "the interval excludes 0: A scores higher than B" in printed
    assert "seeds only in A: none; only in B: 6 (left out of the pairing)" in printed
    saved = json.loads((out / "paired-method_a-clean-vs-method_b-clean.json").read_text())
    score = saved["metrics"]["score"]
    assert saved["a"]["row"] == "method_a:clean" and saved["b"]["seeds"] == ["1", "2", "3", "4", "5", "6"]
    assert score["n"] == 5 and score["only_b"] == ["6"] and score["mean_diff"] == pytest.approx(HAND["mean_diff"])
    assert (score["ci_low"], score["ci_high"]) == pytest.approx((HAND["ci_low"], HAND["ci_high"]))
    assert score["p"] == pytest.approx(float(stats.ttest_rel(A, B).pvalue), rel=1e-9)
    md = (out / "paired-method_a-clean-vs-method_b-clean.md").read_text()
    assert "| Score | 5 | 62.00 | 60.20 | 1.80 |" in md and "sample std of the differences (ddof=1)" in md


def test_compare_table_says_seeds_and_which_std(two_groups, tmp_path, capsys):
    out = tmp_path / "cmp"
    assert main(["compare", "--experiment", "paired-cli", "--out", str(out)]) == 0
    md = (out / "comparison.md").read_text()
    assert "population std (ddof=0, dividing by n)" in md and "| method_b | clean | 6 |" in md
    rows = {(r["experiment"], r["protocol"]): r for r in csv.DictReader(open(out / "comparison.csv"))}
    b = rows[("method_b", "clean")]
    # B over its 6 seeds: 58, 61, 60, 60, 62, 59: mean 60, squared deviations 4+1+0+0+4+1 = 10,
    # population std sqrt(10/6)
    assert b["seeds"] == "6" and b["seed_list"] == "1,2,3,4,5,6" and b["std_kind"] == "population (ddof=0)"
    assert float(b["score_mean"]) == pytest.approx(60.0) and float(b["score_std"]) == pytest.approx(math.sqrt(10 / 6))
    assert float(b["score_std"]) == pytest.approx(np.std([58, 61, 60, 60, 62, 59], ddof=0))


def test_cli_paired_unknown_or_ambiguous_row_is_a_one_line_error(two_groups, tmp_path, capsys):
    out = tmp_path / "never"
    assert main(["compare", "--experiment", "paired-cli", "--out", str(out), "--paired", "method_z", "method_b"]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "--paired A: no row 'method_z'" in err
    assert "rows: method_a:clean; method_a:paper; method_b:clean" in err
    assert not out.exists()  # the error fired before anything was written
    assert main(["compare", "--experiment", "paired-cli", "--out", str(out), "--paired", "method_b", "method_a"]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "--paired B: 'method_a' matches 2 rows: method_a:clean; method_a:paper" in err
    assert main(["compare", "--experiment", "paired-cli", "--out", str(out), "--paired", "method_b",
                 "method_b:clean"]) == 2
    assert "A and B are the same row" in capsys.readouterr().err
