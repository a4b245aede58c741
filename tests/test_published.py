"""The published table (lungsound.results.published) and how `compare --published` shows it: the [AFT] 5-s baseline is set
beside the 8-s 59.55 of [PMCL] with a note that they are not like for like (methods.md sections 5 and 10)."""

from __future__ import annotations

from lungsound.results.compare import METRICS, published_notes, summarise, to_markdown
from lungsound.results.published import PUBLISHED, published_for

NOTE = "not like for like: it is the [PMCL] AST baseline on 8-s cycles"


def run(experiment: str, protocol: str, seed: int) -> dict:
    """One finished run as `collect_runs` gives it (no MLflow needed)."""
    return {"mlflow_experiment": "icbhi-aft", "experiment": experiment, "protocol": protocol, "seed": str(seed),
            "data": "d1", "config": {"data.duration": "5.0"}, "run_id": f"{experiment}-{seed}", "start_time": seed,
            **{k: 50.0 for k in METRICS + ["score_Meditron", "score_AKGC417L"]}}


def test_the_aft_baseline_row_says_it_is_not_like_for_like():
    assert PUBLISHED["icbhi_aft_ce_real"]["score"] == PUBLISHED["icbhi_ast_ce"]["score"] == 59.55
    assert published_for("icbhi_aft_ce_real_clean")["note"].startswith(NOTE)
    assert "5-s cycles with batch 32" in PUBLISHED["icbhi_aft_ce_real"]["note"]
    assert "note" not in PUBLISHED["icbhi_ast_ce"]  # the 8-s row is the 8-s number


def test_compare_lists_the_note_under_the_table_where_the_row_is_shown():
    table = summarise([run("icbhi_aft_ce_real", "paper", 1), run("icbhi_aft_ce_real_clean", "clean", 1),
                       run("icbhi_aft_mixed500", "paper", 1)])
    md = to_markdown(table, published=True)
    notes = [line for line in md.splitlines() if NOTE in line]
    assert notes == [f"- icbhi_aft_ce_real (paper): published Score 59.55* is {PUBLISHED['icbhi_aft_ce_real']['note']}",
                     f"- icbhi_aft_ce_real_clean (clean): published Score 59.55* is "
                     f"{PUBLISHED['icbhi_aft_ce_real']['note']}"]
    lines = md.splitlines()
    assert lines[2].startswith("| icbhi_aft_ce_real | paper | 1 |") and lines[2].endswith(" 59.55* |")
    assert lines[4].endswith(" 61.79 |") and md.index("Notes:") < md.index(notes[0])
    assert NOTE not in to_markdown(table)  # without the published column there is nothing to qualify
    assert published_notes(summarise([run("icbhi_aft_mixed500", "paper", 1)])) == []


def test_the_sam_figure_is_shown_only_beside_two_class_figures():
    from lungsound.results.published import PUBLISHED_TWO_CLASS, two_class_published_for

    assert "icbhi_ast_sam" not in PUBLISHED and published_for("icbhi_ast_sam") is None
    assert two_class_published_for("icbhi_ast_sam_clean") == PUBLISHED_TWO_CLASS["icbhi_ast_sam"]
    sam = {**run("icbhi_ast_sam", "paper", 1), "se_2class": 70.0, "score_2class": 60.0}
    sam2 = {**run("icbhi_ast_sam", "paper", 2), "se_2class": 60.0, "score_2class": 55.0}
    table = summarise([sam, sam2, run("icbhi_aft_mixed500", "paper", 1)])
    md = to_markdown(table, published=True)
    lines = md.splitlines()
    # The 4-class table: the SAM row has an empty published Score cell; 68.10 is nowhere in it.
    four = lines[:lines.index("")]
    sam_row = next(line for line in four if line.startswith("| icbhi_ast_sam |"))
    assert sam_row.endswith(" |  |") and "68.10" not in "\n".join(four)
    assert next(line for line in four if line.startswith("| icbhi_aft_mixed500 |")).endswith(" 61.79 |")
    # The two-class table: the runs' two-class Se and Score (mean ± population std) beside the published ones.
    start = lines.index("Two-class evaluation (normal vs abnormal: an abnormal cycle predicted as any abnormal class is a "
                        "hit; Sp as above), for the rows whose paper reports it:")
    assert lines[start + 2].startswith("| experiment | protocol | seeds | Sp | Se (2-class) | Score (2-class) |")
    assert lines[start + 4] == "| icbhi_ast_sam | paper | 2 | 50.00 ± 0.00 | 65.00 ± 5.00 | 57.50 ± 2.50 | 68.31 | 68.10 |"
    assert lines[start + 5] == ""  # only the rows with a published two-class figure
    note = next(line for line in lines if line.startswith("- icbhi_ast_sam (paper):"))
    assert "no published 4-class Score" in note and "best test epoch of one run" in note and "68.10" not in note
    assert "Two-class evaluation" not in to_markdown(table)  # nothing published asked for, nothing shown
    plain = to_markdown(summarise([run("icbhi_aft_mixed500", "paper", 1)]), published=True)
    assert "Two-class evaluation" not in plain  # no row with a two-class figure: no second table
