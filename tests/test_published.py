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
