"""Issue 13, items 1-4, 7 and 15: run folders, races, atomic writes, ended runs, safe resume, one evaluation per epoch."""

from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import mlflow
import numpy as np
import pytest
from safetensors.torch import load_file

from lungsound.config import load_config
from lungsound.errors import LungsoundError
from lungsound.storage import atomic_write_text, exclusive_dir
from lungsound.training import run as run_mod
from lungsound.models.folder import load_model, read_meta
from lungsound.training.checkpoint import load_state
from lungsound.training.run import fit
from lungsound.training.seeds import fit_seeds, resume_group
from lungsound.training.trainer import Trainer

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")
REPO = Path(__file__).resolve().parents[1]


def tiny_cfg(root, tmp_path, *extra):
    return load_config(None, [f"data.root={root}", "data.duration=2.0", "model.name=ast_tiny", "train.epochs=2",
                              "train.batch_size=4", "tracking.experiment=hard", f"tracking.output_dir={tmp_path}/out",
                              "train.max_steps_per_epoch=2", *extra])


# --- 1. run folders ---------------------------------------------------------------------------------------------------

def test_exclusive_dir_gives_each_concurrent_caller_its_own_folder(tmp_path):
    got, barrier = [], threading.Barrier(8)

    def make():
        barrier.wait()
        got.append(exclusive_dir(tmp_path, "run"))

    threads = [threading.Thread(target=make) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(set(got)) == 8 and all(p.is_dir() for p in got)


def test_same_name_runs_get_their_own_folder_and_model(small_icbhi, tmp_path, mlflow_store):
    a = fit(tiny_cfg(small_icbhi, tmp_path, "tracking.run_name=same", "train.lr=1e-3"), progress=False)
    b = fit(tiny_cfg(small_icbhi, tmp_path, "tracking.run_name=same", "train.lr=1e-5"), progress=False)
    assert a.checkpoint != b.checkpoint
    assert a.checkpoint.parent.name == f"same-{a.run_id[:12]}" and b.checkpoint.parent.name == f"same-{b.run_id[:12]}"
    for result in (a, b):  # each MLflow run holds the weights of its own folder
        logged = mlflow.artifacts.download_artifacts(f"runs:/{result.run_id}/model/model.safetensors",
                                                     dst_path=str(tmp_path / result.run_id))
        mine, theirs = load_file(logged), load_file(str(result.checkpoint / "model.safetensors"))
        assert all((mine[k] == theirs[k]).all() for k in mine)
        assert mlflow.get_run(result.run_id).data.tags["run_folder"] == str(result.checkpoint.parent.resolve())
    w_a = load_file(str(a.checkpoint / "model.safetensors"))
    w_b = load_file(str(b.checkpoint / "model.safetensors"))
    assert any(not (w_a[k] == w_b[k]).all() for k in w_a)  # the two runs really trained different weights


# --- 2. cold-start races ----------------------------------------------------------------------------------------------

RACE_DATA = textwrap.dedent("""
    import json, sys, time
    from pathlib import Path
    import lungsound.data.synthetic as synth
    from lungsound.data import default

    def slow_generate(out, seed=0, progress=True):
        with open(sys.argv[1], "a") as fh:
            fh.write("generated\\n")
        time.sleep(1.5)
        Path(out, "SYNTHETIC.json").write_text("{}")

    synth.generate = slow_generate
    while time.time() < float(sys.argv[2]):
        time.sleep(0.01)
    print(default.ensure_default_data(progress=False))
""")


def test_two_processes_creating_the_builtin_data_share_one_set(tmp_path):
    import time

    env = {**os.environ, "LUNGSOUND_CACHE": str(tmp_path / "cache")}
    log = tmp_path / "calls.log"
    start = time.time() + 4
    procs = [subprocess.Popen([sys.executable, "-c", RACE_DATA, str(log), str(start)], env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    outs = [p.communicate(timeout=120) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [o[1] for o in outs]
    target = tmp_path / "cache" / "data" / "synthetic-default"
    assert {o[0].strip() for o in outs} == {str(target)}
    assert log.read_text().count("generated") == 1 and (target / "SYNTHETIC.json").is_file()


RACE_MLFLOW = textwrap.dedent("""
    import sys, time
    from lungsound import tracking
    while time.time() < float(sys.argv[1]):
        time.sleep(0.005)
    print(tracking.experiment_id(tracking.client(), "raced"))
""")


def test_processes_creating_the_same_experiment_on_a_fresh_store(tmp_path):
    import time

    env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'fresh' / 'mlflow.db'}"}
    (tmp_path / "fresh").mkdir()
    start = time.time() + 12  # after every process has imported mlflow
    procs = [subprocess.Popen([sys.executable, "-c", RACE_MLFLOW, str(start)], env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for _ in range(3)]
    outs = [p.communicate(timeout=240) for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0], [o[1][-800:] for o in outs]
    assert len({o[0].strip() for o in outs}) == 1


# --- 3. atomic writes and a damaged best/ -----------------------------------------------------------------------------

def test_atomic_write_keeps_the_old_file_when_writing_fails(tmp_path, monkeypatch):
    target = tmp_path / "meta.json"
    target.write_text('{"ok": 1}')

    def crash(*args):
        raise OSError("disk full")

    monkeypatch.setattr("lungsound.storage.os.replace", crash)
    with pytest.raises(OSError):
        atomic_write_text(target, '{"ok": 2, "half": ')
    assert json.loads(target.read_text()) == {"ok": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["meta.json"]  # no temporary left behind


def test_resume_rebuilds_a_damaged_best_folder(small_icbhi, tmp_path, mlflow_store):
    cfg = tiny_cfg(small_icbhi, tmp_path, "train.epochs=3", "tracking.run_name=damaged")
    part = fit(cfg, stop_after=1, progress=False)
    meta = part.checkpoint / "meta.json"
    meta.write_text(meta.read_text()[:25])  # what a crash mid-write used to leave
    with pytest.raises(LungsoundError, match="corrupt meta.json"):
        load_model(part.checkpoint)
    with pytest.warns(UserWarning, match="damaged selected-model folder"):
        resumed = fit(None, resume=part.checkpoint.parent, progress=False)
    assert resumed.finished and load_model(resumed.checkpoint)[2]["selected_epoch"] == resumed.selected_epoch


# --- 4. runs that die end their MLflow runs ---------------------------------------------------------------------------

def _fail_on_epoch(monkeypatch, epoch_to_fail: int, exc: BaseException, seed: int | None = None):
    real = Trainer.train_epoch

    def train_epoch(self, epoch):
        if epoch == epoch_to_fail and (seed is None or self.cfg.train.seed == seed):
            raise exc
        return real(self, epoch)

    monkeypatch.setattr(Trainer, "train_epoch", train_epoch)


@pytest.mark.parametrize("exc, status", [(RuntimeError("boom"), "FAILED"), (KeyboardInterrupt(), "KILLED")])
def test_an_exception_inside_fit_ends_the_run(small_icbhi, tmp_path, mlflow_store, monkeypatch, exc, status):
    _fail_on_epoch(monkeypatch, 2, exc)
    with pytest.raises(type(exc)):
        fit(tiny_cfg(small_icbhi, tmp_path, f"tracking.experiment=dies-{status}"), progress=False)
    runs = mlflow.search_runs(experiment_names=[f"dies-{status}"])
    assert list(runs["status"]) == [status]


def test_a_killed_seed_group_is_finished_by_resuming_it(small_icbhi, tmp_path, mlflow_store, monkeypatch):
    cfg = tiny_cfg(small_icbhi, tmp_path, "train.epochs=2", "tracking.experiment=group")
    with monkeypatch.context() as m:
        _fail_on_epoch(m, 2, KeyboardInterrupt(), seed=2)
        with pytest.raises(KeyboardInterrupt):
            fit_seeds(cfg, [1, 2, 3], progress=False)
    runs = mlflow.search_runs(experiment_names=["group"])
    parent_id = runs.loc[runs["tags.role"] == "parent", "run_id"].iloc[0]
    mlflow.MlflowClient().update_run(parent_id, status="RUNNING")  # what a SIGKILL leaves behind
    out = resume_group(parent_id, progress=False)
    runs = mlflow.search_runs(experiment_names=["group"])
    children = runs[runs["tags.mlflow.parentRunId"] == parent_id]
    assert sorted(children["tags.seed"]) == ["1", "2", "3"]  # seed 2 resumed in place, seed 3 trained, 1 kept
    assert set(children["status"]) == {"FINISHED"}
    parent = mlflow.get_run(parent_id)
    assert parent.info.status == "FINISHED" and out["seeds"] == [1, 2, 3]
    scores = children.sort_values("tags.seed")["metrics.final_test_score"].to_numpy()
    assert parent.data.metrics["final_test_score_mean"] == pytest.approx(scores.mean())
    assert parent.data.metrics["final_test_score_std"] == pytest.approx(scores.std())


# --- 7. a crafted last.pt is refused ----------------------------------------------------------------------------------

class _Payload:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_resume_refuses_a_last_pt_that_would_run_code(tmp_path):
    import torch

    marker = tmp_path / "pwned"
    torch.save({"config": {}, "epoch": 1, "evil": _Payload(marker)}, tmp_path / "last.pt", pickle_protocol=2)
    with pytest.raises(LungsoundError, match="refused"):
        load_state(tmp_path / "last.pt")
    assert not marker.exists()
    (tmp_path / "junk.pt").write_bytes(pickle.dumps([1, 2]))
    with pytest.raises(LungsoundError):
        load_state(tmp_path / "junk.pt")


def test_a_real_state_loads_weights_only(small_icbhi, tmp_path, mlflow_store):
    part = fit(tiny_cfg(small_icbhi, tmp_path, "tracking.run_name=plain"), stop_after=1, progress=False)
    state = load_state(part.checkpoint.parent / "last.pt")
    assert state["epoch"] == 1 and state["config"].model.name == "ast_tiny"


# --- 15. one evaluation per epoch -------------------------------------------------------------------------------------

def test_each_epoch_is_evaluated_once_and_the_report_is_that_evaluation(small_icbhi, tmp_path, mlflow_store,
                                                                         monkeypatch):
    import lungsound.evaluation.evaluate as evaluation

    calls = []
    real = evaluation.predict

    def counting(*args, **kwargs):
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(evaluation, "predict", counting)
    result = fit(tiny_cfg(small_icbhi, tmp_path, "train.epochs=3", "tracking.experiment=once"), progress=False)
    assert len(calls) == 3  # one forward pass over the test split per epoch, none afterwards
    with np.load(result.checkpoint / run_mod.EVAL_FILE) as npz:
        ev = evaluation.Evaluation.from_arrays(npz["test_logits"], npz["test_labels"], npz["test_devices"],
                                               read_meta(result.checkpoint)["devices"])  # the vocabulary saved with it
    assert ev.scores["score"] == pytest.approx(result.metrics["final_test_score"])
    csv_path = mlflow.artifacts.download_artifacts(f"runs:/{result.run_id}/report/per_class.csv",
                                                   dst_path=str(tmp_path / "rep"))
    rows = Path(csv_path).read_text().splitlines()[1:]
    accs = {r.split(",")[0]: float(r.split(",")[2]) for r in rows}
    assert accs == pytest.approx(ev.scores["per_class_acc"])
