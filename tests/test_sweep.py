"""`lungsound sweep`: the plan and its errors, the retry path, a failed seed and its re-run, and a 2x2 grid x 2 seeds
of the quickstart trained on the local backend and on a local Ray with 2 CPUs (same groups, same numbers)."""

from __future__ import annotations

import time
from collections import Counter
from pathlib import Path

import mlflow
import pytest

from lungsound.sweeps import backends as sweep_backends
from lungsound.sweeps import sweep
from lungsound.cli import main
from lungsound.config import load_config
from lungsound.errors import LungsoundError
from lungsound.tracking import RunLogger
from lungsound.training.seeds import child_config

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")
EXPERIMENTS = Path(__file__).resolve().parents[1] / "experiments"
QUICK = EXPERIMENTS / "quickstart.yaml"


def test_plan_is_the_product_of_the_grid_axes_with_one_child_per_seed():
    cells = sweep.plan([QUICK], ["train.lr=1e-3,3e-4", "data.duration=2,3.5", "train.epochs=1"], ["train.batch_size=4"])
    assert [c.name for c in cells] == ["quickstart-train.lr=1e-3-data.duration=2",
                                       "quickstart-train.lr=1e-3-data.duration=3.5",
                                       "quickstart-train.lr=3e-4-data.duration=2",
                                       "quickstart-train.lr=3e-4-data.duration=3.5"]  # one-valued axes not named
    assert [(c.cfg.train.lr, c.cfg.data.duration) for c in cells] == [(1e-3, 2.0), (1e-3, 3.5), (3e-4, 2.0),
                                                                        (3e-4, 3.5)]
    assert all(c.cfg.train.epochs == 1 and c.cfg.train.batch_size == 4 and c.cfg.model.name == "ast_tiny"
               for c in cells)
    assert cells[2].values == {"train.lr": "3e-4", "data.duration": "2", "train.epochs": "1"}
    children = [child_config(c.cfg, seed) for c in cells for seed in (1, 2)]
    assert len(children) == 8
    assert [(ch.train.seed, ch.train.lr, ch.data.duration) for ch in children[4:6]] == [(1, 3e-4, 2.0), (2, 3e-4, 2.0)]
    assert children[5].tracking.run_name == "quickstart-train.lr=3e-4-data.duration=2-seed2"
    assert cells[0].cfg.train.seed == 1  # the cell keeps the file's seed; children get theirs


def test_plan_values_with_commas_and_augmentation_cells():
    cells = sweep.plan([QUICK], ["model.params={fstride: 16, tstride: 16},{fstride: 10, tstride: 10}"])
    assert [c.cfg.model.params for c in cells] == [{"fstride": 16, "tstride": 16}, {"fstride": 10, "tstride": 10}]
    assert cells[0].name == "quickstart-model.params=fstride_16_tstride_16"
    cells = sweep.plan([EXPERIMENTS / "icbhi_ast_repaugment.yaml"], ["train.lr=1e-4,5e-5"],
                       augmentations=["none", "rep_mask"])
    assert [c.name for c in cells] == ["icbhi_ast_repaugment-none-train.lr=1e-4",
                                       "icbhi_ast_repaugment-none-train.lr=5e-5",
                                       "icbhi_ast_repaugment-rep_mask-train.lr=1e-4",
                                       "icbhi_ast_repaugment-rep_mask-train.lr=5e-5"]
    assert [c.cfg.augment.representation for c in cells] == ["none", "none", "rep_mask", "rep_mask"]
    # A cell says how its config was made: the file and the overrides, its run name included.
    cells += sweep.plan([QUICK], ["model.params={fstride: 16, tstride: 16},{fstride: 10, tstride: 10}"])
    assert all(load_config(c.experiment, c.overrides).to_dict() == c.cfg.to_dict() for c in cells)


@pytest.mark.parametrize("args, message", [
    (["--grid", "train.lrr=1,2"], "unknown key(s) train.lrr"),
    (["--grid", "train.lr=1e-3,-1"], "grid cell train.lr=-1: train.lr must be > 0, got -1"),
    (["--grid", "augment.representation=none,mixup"], "augment.representation must be one of"),
    (["--grid", "train.lr"], "--grid 'train.lr' must look like section.key=value1,value2"),
    (["--grid", "train.lr=1e-3,,2e-3"], "has an empty value"),
    (["--grid", "train.seed=1,2"], "give seeds with --seeds"),
    (["--grid", "train.lr=1e-3", "--grid", "train.lr=2e-3"], "train.lr is given twice"),
    (["--gpus-per-run", "1"], "use them with --backend ray"),
    (["--backend", "ray", "--cpus-per-run", "0"], "--cpus-per-run must be > 0"),
])
def test_bad_sweeps_are_one_line_errors_before_any_run(args, message, mlflow_store, capsys):
    assert main(["sweep", "-c", str(QUICK), "tracking.experiment=sweep-bad", *args]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and err.startswith("lungsound: error:") and len(err.splitlines()) == 1
    assert mlflow.MlflowClient().get_experiment_by_name("sweep-bad") is None  # nothing started


def test_a_task_failing_once_is_retried_and_one_failing_twice_is_reported(capsys):
    calls = Counter()

    def flaky(item):
        calls[item] += 1
        if item == "always" or (item == "once" and calls[item] == 1):
            raise RuntimeError(f"{item}: try {calls[item]}")
        return item.upper()

    results, errors = sweep_backends.execute(flaky, ["ok", "once", "always"], sweep_backends.LocalBackend(), ["a", "b", "c"], False)
    assert results == {0: "OK", 1: "ONCE"} and errors == {2: "RuntimeError: always: try 2"}
    assert calls == {"ok": 1, "once": 2, "always": 2}
    err = capsys.readouterr().err
    assert "sweep: b failed (RuntimeError: once: try 1); retrying once" in err
    assert "sweep: c failed again (RuntimeError: always: try 2); reported" in err


def _fake_training(fail_seed: int | None, trained: list):
    """Stands in for `train_seed`: a finished child with made-up final metrics (50 + seed), or a failure."""
    def train(task: sweep.Task) -> dict:
        trained.append(task.seed)
        if task.seed == fail_seed:
            raise RuntimeError("CUDA out of memory")
        cfg = child_config(task.cfg, task.seed)
        child = RunLogger.start(cfg.tracking.experiment, cfg.tracking.run_name,
                                {"experiment_file": cfg.name, "protocol": cfg.train.protocol, "seed": task.seed,
                                 "data_fingerprint": "d"}, task.parent_run_id)
        metrics = {"final_test_score": 50.0 + task.seed, "final_test_sp": 60.0, "final_test_se": 40.0 + 2 * task.seed}
        child.log_metrics(metrics)
        child.end("FINISHED")
        return {"run_id": child.run_id, "metrics": metrics}
    return train


def test_a_failed_seed_fails_its_parent_and_a_rerun_trains_only_that_seed(mlflow_store, monkeypatch, capsys):
    args = ["sweep", "-c", str(QUICK), "tracking.experiment=sweep-fail", "--seeds", "1,2", "--quiet"]
    trained: list[int] = []
    monkeypatch.setattr(sweep, "train_seed", _fake_training(2, trained))
    assert main(args) == 1
    out, err = capsys.readouterr()
    assert trained == [1, 2, 2]  # seed 2 failed, was retried once, failed again
    assert "| quickstart | clean | 1 |" in out  # the table is printed all the same, from the finished seed
    assert "FAILED seed(s) 2" in out and "1 run(s) of the sweep failed twice" in err
    (parent,) = mlflow.search_runs(experiment_names=["sweep-fail"], filter_string="tags.role = 'parent'",
                                   output_format="list")
    assert parent.info.status == "FAILED" and parent.data.tags["failed_seeds"] == "2"
    assert parent.data.tags["failure"] == "seed 2: RuntimeError: CUDA out of memory"

    trained.clear()
    monkeypatch.setattr(sweep, "train_seed", _fake_training(None, trained))
    assert main(args) == 0
    assert trained == [2]  # seed 1 finished before: kept
    run = mlflow.get_run(parent.info.run_id)  # the same parent, now finished with both seeds
    assert run.info.status == "FINISHED" and "failed_seeds" not in run.data.tags
    assert run.data.metrics["final_test_score_mean"] == pytest.approx(51.5)
    assert run.data.metrics["final_test_score_std"] == pytest.approx(0.5)
    assert main(args) == 0 and trained == [2]  # finished: nothing trained again
    assert "finished before, kept" in capsys.readouterr().out


def test_grid_and_sweep_keep_each_others_finished_groups(mlflow_store, monkeypatch, capsys):
    """One finished-group rule (`lungsound.sweeps.groups`) for both commands: a cell finished by `lungsound grid` is
    kept by `lungsound sweep --cells`, one finished by the sweep is kept by the grid, and other settings make another
    group."""
    trained: list[int] = []
    monkeypatch.setattr(sweep, "train_seed", _fake_training(None, trained))

    def run(command, cells, *overrides):
        args = [command, "-c", str(EXPERIMENTS / "icbhi_ast_repaugment.yaml"), "tracking.experiment=shared-rule",
                *overrides, "--cells", cells, "--seeds", "1,2", "--quiet"]
        assert main(args) == 0
        return capsys.readouterr().out

    run("grid", "rep_mask")
    assert trained == [1, 2]
    out = run("sweep", "rep_mask,rep_gen")
    assert trained == [1, 2, 1, 2]  # only rep_gen's two seeds
    assert "icbhi_ast_repaugment-rep_mask: finished before, kept" in out
    assert "icbhi_ast_repaugment-rep_gen: trained" in out
    out = run("grid", "rep_gen,rep_mask")
    assert trained == [1, 2, 1, 2] and out.count("finished before, kept") == 2
    run("grid", "rep_mask", "train.lr=1e-5")  # another config: another group of the same name
    assert trained == [1, 2, 1, 2, 1, 2]
    parents = mlflow.search_runs(experiment_names=["shared-rule"], filter_string="tags.role = 'parent'",
                                 output_format="list")
    assert sorted(p.info.run_name for p in parents) == ["icbhi_ast_repaugment-rep_gen"] + \
        ["icbhi_ast_repaugment-rep_mask"] * 2
    assert all(p.info.status == "FINISHED" and p.data.tags["seeds"] == "1,2" for p in parents)


# --- the acceptance test: 2x2 grid x 2 seeds, local backend and Ray ---------------------------------------------------

@pytest.fixture(scope="module")
def ray_two_cpus():
    ray = pytest.importorskip("ray")
    ray.init(num_cpus=2, include_dashboard=False, logging_level="warning")
    yield ray
    ray.shutdown()


def _groups(experiment: str) -> tuple[list, list]:
    runs = mlflow.search_runs(experiment_names=[experiment], output_format="list")
    parents = [r for r in runs if r.data.tags.get("role") == "parent"]
    children = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
    return parents, children


def _check_groups(experiment: str) -> dict[tuple, dict]:
    """4 finished parents with mean/std over their 2 finished children, the children carrying the cell's params;
    returns each child's final metrics by (lr, duration, seed)."""
    parents, children = _groups(experiment)
    assert len(parents) == 4 and len(children) == 8
    by_parent = {p.info.run_id: [c for c in children if c.data.tags["mlflow.parentRunId"] == p.info.run_id]
                 for p in parents}
    finals = {}
    for p in parents:
        kids = by_parent[p.info.run_id]
        assert p.info.status == "FINISHED" and p.data.tags["seeds"] == "1,2"
        assert sorted(c.data.params["train.seed"] for c in kids) == ["1", "2"]
        for c in kids:
            assert c.info.status == "FINISHED"
            for key in ("train.lr", "data.duration", "train.epochs", "model.name"):
                assert c.data.params[key] == p.data.params[key]
            finals[(c.data.params["train.lr"], c.data.params["data.duration"], c.data.params["train.seed"])] = {
                k: "NaN" if v != v else v for k, v in c.data.metrics.items() if k.startswith("final_")}  # NaN == NaN
        scores = [c.data.metrics["final_test_score"] for c in kids]
        assert p.data.metrics["final_test_score_mean"] == pytest.approx(sum(scores) / 2)
        assert p.data.metrics["final_test_score_std"] == pytest.approx(abs(scores[0] - scores[1]) / 2)
    assert sorted({(p.data.params["train.lr"], p.data.params["data.duration"]) for p in parents}) == [
        ("0.0003", "2.0"), ("0.0003", "3.0"), ("0.001", "2.0"), ("0.001", "3.0")]
    return finals


def test_grid_on_ray_gives_the_groups_and_numbers_of_the_local_backend(small_icbhi, tmp_path, mlflow_store,
                                                                     ray_two_cpus, capsys):
    def args(experiment, *backend):
        return ["sweep", "-c", str(QUICK), f"data.root={small_icbhi}", "train.epochs=1", "train.threads=1",
                f"tracking.output_dir={tmp_path}/out", f"tracking.experiment={experiment}",
                "--grid", "train.lr=1e-3,3e-4", "data.duration=2.0,3.0", "--seeds", "1-2", "--quiet", *backend]

    t0 = time.time()
    assert main(args("sweep-local")) == 0
    t_local = time.time() - t0
    t0 = time.time()
    assert main(args("sweep-ray", "--backend", "ray")) == 0
    t_ray = time.time() - t0
    out = capsys.readouterr().out
    assert out.count("| clean | 2 |") == 8  # each backend's table: 4 rows of 2 seeds
    local, on_ray = _check_groups("sweep-local"), _check_groups("sweep-ray")
    # One torch thread per run and the same seeds: the same computation in another process, bit for bit.
    assert on_ray == local
    assert len({m["final_test_score"] for m in local.values()}) > 1  # the cells did train differently
    with capsys.disabled():
        print(f"\n2x2 grid x 2 seeds, 1 epoch: local {t_local:.1f} s, Ray (2 CPUs) {t_ray:.1f} s")

    assert main(args("sweep-ray", "--backend", "ray")) == 0  # re-run: every cell kept, nothing duplicated
    assert capsys.readouterr().out.count("finished before, kept") == 4
    assert [len(x) for x in _groups("sweep-ray")] == [4, 8]


def test_retry_path_on_ray(ray_two_cpus, tmp_path, mlflow_store):
    def flaky(item):  # state on disk: the retry may run in another worker process
        mark = tmp_path / f"{item}.tries"
        tries = int(mark.read_text()) + 1 if mark.exists() else 1
        mark.write_text(str(tries))
        if item == "always" or (item == "once" and tries == 1):
            raise ValueError(f"{item}: try {tries}")
        return tries

    results, errors = sweep_backends.execute(flaky, ["ok", "once", "always"], sweep_backends.RayBackend(1, 0), progress=False)
    assert results == {0: 1, 1: 2} and errors == {2: "ValueError: always: try 2"}


def test_an_unreachable_ray_address_is_a_prompt_one_line_error(monkeypatch):
    """ray.init retries a dead address for minutes; the sweep asks the port first (a closed port on 127.0.0.1)."""
    import socket

    from lungsound.sweeps.backends import RayBackend

    with socket.socket() as sock:  # a port nobody listens on once this socket is closed
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    import ray

    monkeypatch.setattr(ray, "is_initialized", lambda: False)  # an earlier test's local Ray may still be up
    monkeypatch.setenv("RAY_ADDRESS", f"127.0.0.1:{port}")
    with pytest.raises(LungsoundError, match=rf"RAY_ADDRESS=127.0.0.1:{port} does not answer"):
        RayBackend()
    monkeypatch.setenv("RAY_ADDRESS", "no-port-here")
    with pytest.raises(LungsoundError, match="is not host:port"):
        RayBackend()
