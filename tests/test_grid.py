"""The augmentation grid: its cells, skipping finished cells, and the pivoted table of Score and per-class accuracy."""

from __future__ import annotations

from pathlib import Path

import pytest

from lungsound.sweeps import grid, sweep
from lungsound.cli import main
from lungsound.config import load_config
from lungsound.errors import LungsoundError
from lungsound.tracking import RunLogger
from lungsound.training.seeds import start_parent

EXPERIMENTS = Path(__file__).resolve().parents[1] / "experiments"


def test_plan_leaves_specaugment_out_for_waveform_models():
    cells = grid.plan([EXPERIMENTS / "icbhi_ast_repaugment.yaml", EXPERIMENTS / "icbhi_repaug_hubert.yaml"])
    names = [c.name for c in cells]
    assert names == ["icbhi_ast_repaugment-" + a for a in grid.AUGMENTATIONS] + \
        ["icbhi_repaug_hubert-" + a for a in ("none", "rep_mask", "rep_gen", "repaugment")]
    spec = next(c for c in cells if c.augmentation == "specaugment")
    assert "augment.specaug=true" in spec.overrides and "augment.representation=none" in spec.overrides
    with pytest.raises(LungsoundError, match="unknown grid cell"):
        grid.plan([EXPERIMENTS / "icbhi_ast_repaugment.yaml"], ["mixup"])


def _log(experiment: str, model: str, specaug: bool, rep: str, seed: int, score: float, accs: tuple,
         file: str = "icbhi_ast_repaugment", weighted: bool | None = None):
    logger = RunLogger.start(experiment, f"{model}-{rep}-{seed}", {"experiment_file": file,
                                                                   "protocol": "paper", "seed": seed,
                                                                   "data_fingerprint": "d"})
    logger.log_params({"model.name": model, "augment.specaug": specaug, "augment.representation": rep,
                       "train.seed": seed, **({} if weighted is None else {"method.class_weighted": weighted})})
    metrics = {"final_test_score": score, "final_test_sp": 80.0, "final_test_se": 2 * score - 80.0}
    metrics |= {f"final_test_acc_{c}": a for c, a in zip(("normal", "crackle", "wheeze", "both"), accs)}
    logger.log_metrics(metrics)
    logger.end("FINISHED")


def test_grid_table_pivots_cells_with_mean_std_and_minority_accuracy(mlflow_store, tmp_path):
    for seed, score in ((1, 60.0), (2, 62.0)):
        _log("grid-t", "ast", True, "none", seed, score, (80.0, 40.0, 30.0, 20.0))
        _log("grid-t", "ast", False, "repaugment", seed, score + 1.0, (78.0, 44.0, 36.0, 28.0))
    rows, notes = grid.grid_table("grid-t")
    assert len(rows) == 1 and set(rows[0]["cells"]) == {"specaugment", "repaugment"}
    rep = rows[0]["cells"]["repaugment"]
    assert rep["seeds"] == 2 and rep["score_mean"] == pytest.approx(62.0) and rep["score_std"] == pytest.approx(1.0)
    md = grid.to_markdown(rows, notes)
    assert "| protocol | SpecAugment | RepAugment | published Score |" in md  # only the cells that were run
    assert "| ast (icbhi_ast_repaugment) | paper | 61.00 ± 1.00 (n=2) | 62.00 ± 1.00 (n=2) | 61.51 |" in md
    assert "| ast | paper | RepAugment | 78.00 ± 0.00 | 44.00 ± 0.00 | 36.00 ± 0.00 | 28.00 ± 0.00 | 36.00 |" in md
    assert main(["grid", "--table-only", "--experiment", "grid-t", "--out", str(tmp_path)]) == 0
    assert (tmp_path / "grid.png").stat().st_size > 10_000 and (tmp_path / "grid.md").read_text().startswith("Score")


def test_finished_cells_are_skipped(mlflow_store, monkeypatch):
    cells = grid.plan([EXPERIMENTS / "icbhi_ast_repaugment.yaml"], ["none", "rep_mask"],
                      ["tracking.experiment=grid-skip"])
    start_parent(cells[0].cfg, [1, 2]).end("FINISHED")  # the `none` cell's group, finished before
    trained = []
    monkeypatch.setattr(sweep, "train_seed", lambda task: trained.append((task.cfg.tracking.run_name, task.seed))
                        or {"run_id": None, "metrics": {"final_test_score": 50.0}})
    groups = grid.run_grid(cells, [1, 2], progress=False)
    assert trained == [("icbhi_ast_repaugment-rep_mask", 1), ("icbhi_ast_repaugment-rep_mask", 2)]
    assert [g.status for g in groups] == ["kept", "new"]
    trained.clear()
    grid.run_grid(cells, [1, 2, 3], progress=False)  # other seeds: the finished groups do not count
    assert [name for name, _ in trained] == ["icbhi_ast_repaugment-none"] * 3 + ["icbhi_ast_repaugment-rep_mask"] * 3


def test_table_without_runs_is_a_clear_error(mlflow_store):
    RunLogger.start("grid-empty", "x", {}).end("FINISHED")
    with pytest.raises(LungsoundError, match="no finished runs in MLflow experiment 'grid-empty'"):
        grid.write_grid("grid-empty", None)


def test_weighting_is_an_axis_and_the_specaugment_cell_draws_as_the_authors_did():
    paper, clean = EXPERIMENTS / "icbhi_ast_repaugment.yaml", EXPERIMENTS / "icbhi_ast_repaugment_clean.yaml"
    cells = grid.plan([paper], ["none", "specaugment"], weightings=["unweighted", "weighted"])
    assert [c.name for c in cells] == ["icbhi_ast_repaugment-none", "icbhi_ast_repaugment-specaugment",
                                       "icbhi_ast_repaugment-none-weighted", "icbhi_ast_repaugment-specaugment-weighted"]
    cfgs = [load_config(c.experiment, c.overrides) for c in cells]
    assert [c.method.class_weighted for c in cfgs] == [False, False, True, True]
    assert [c.tracking.run_name for c in cfgs] == [c.name for c in cells]
    # The SpecAugment cell: one in-place draw for the whole batch with the 0.841 gate (paper), fresh per-sample
    # masks with p = 1 (clean).
    spec = cfgs[1].augment
    assert (spec.specaug, spec.per, spec.semantics, spec.representation) == (True, "batch", "paper", "none")
    spec = load_config(clean, grid.plan([clean], ["specaugment"])[0].overrides).augment
    assert (spec.specaug, spec.per, spec.semantics) == (True, "sample", "clean")
    # Without the axis: the file's own weighting (unweighted), named as the axis names it.
    assert [c.name for c in grid.plan([paper], ["none"])] == ["icbhi_ast_repaugment-none"]
    with pytest.raises(LungsoundError, match="unknown weighting.s. balanced; known: unweighted, weighted"):
        grid.plan([paper], ["none"], weightings=["balanced"])


def test_the_grid_command_takes_the_weighting_axis(monkeypatch, capsys):
    planned = []
    monkeypatch.setattr("lungsound.sweeps.grid.run_grid", lambda cells, seeds, progress: planned.extend(cells) or [])
    monkeypatch.setattr("lungsound.sweeps.grid.write_grid", lambda name, out: f"table of {name}")
    args = ["grid", "-c", str(EXPERIMENTS / "icbhi_repaug_hubert.yaml"), "--cells", "rep_gen", "--seeds", "1"]
    assert main([*args, "--weighting", "weighted,unweighted"]) == 0
    assert [c.name for c in planned] == ["icbhi_repaug_hubert-rep_gen-weighted", "icbhi_repaug_hubert-rep_gen"]
    assert main([*args, "--weighting", "both"]) == 2
    assert "unknown weighting(s) both" in capsys.readouterr().err


def test_a_sweep_weighting_axis_names_cells_as_the_grid_does():
    cells = sweep.plan([EXPERIMENTS / "icbhi_ast_repaugment.yaml"], ["method.class_weighted=false,true"],
                       augmentations=["rep_mask"])
    assert [(c.name, c.cfg.method.class_weighted) for c in cells] == [("icbhi_ast_repaugment-rep_mask", False),
                                                                      ("icbhi_ast_repaugment-rep_mask-weighted", True)]


def test_grid_table_rows_per_weighting_and_wavlm_marked_an_extension(mlflow_store):
    for seed in (1, 2):
        _log("grid-w", "ast", False, "repaugment", seed, 60.0 + seed, (80.0, 40.0, 30.0, 20.0), weighted=False)
        _log("grid-w", "ast", False, "repaugment", seed, 58.0 + seed, (70.0, 50.0, 40.0, 30.0), weighted=True)
        _log("grid-w", "wavlm_base_plus", False, "rep_mask", seed, 55.0, (70.0, 30.0, 20.0, 10.0),
             file="icbhi_repaug_wavlm", weighted=False)
    rows, notes = grid.grid_table("grid-w")
    assert [(r["model"], r["weighted"]) for r in rows] == [("ast", False), ("ast", True), ("wavlm_base_plus", False)]
    md = grid.to_markdown(rows, notes)
    assert "| ast (icbhi_ast_repaugment) | paper | – | 61.50 ± 0.50 (n=2) | 61.51 |" in md
    assert "| ast (icbhi_ast_repaugment, weighted CE) | paper | – | 59.50 ± 0.50 (n=2) | 61.51 |" in md
    assert ("| wavlm_base_plus (icbhi_repaug_wavlm, extension) | paper | 55.00 ± 0.00 (n=2) | – | "
            "extension: not in the paper |") in md
    assert "| ast (weighted CE) | paper | RepAugment | 70.00 ± 0.00 |" in md
    assert "| wavlm_base_plus (extension) | paper | Rep-Mask |" in md
