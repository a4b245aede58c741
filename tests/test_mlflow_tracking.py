"""Issue 14, item 3: MLflow as its users expect. The experiment kind tag (so `mlflow ui` opens on the runs table), the
data as a dataset input (digest = the data fingerprint, split and counts), MLflow's git commit tag, `--register` with
`models:/NAME/latest` wherever a run id is accepted, and one progress line per epoch under --quiet."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import mlflow
import pytest

from lungsound import tracking
from lungsound.cli import main
from lungsound.config import load_config
from lungsound.errors import LungsoundError
from lungsound.inference import Predictor
from lungsound.inference.sources import resolve_model_uri
from lungsound.training.run import fit

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")
REPO = Path(__file__).resolve().parents[1]
# small_icbhi: 12 recordings of 6 cycles each; patients 101-108 train (48 cycles), 109-112 test (24 cycles).
TRAIN_CYCLES, TEST_CYCLES = 48, 24
TINY = ["data.duration=2.0", "model.name=ast_tiny", "train.epochs=1", "train.batch_size=4",
        "train.max_steps_per_epoch=2"]


def tiny_cfg(root, tmp_path, *extra):
    return load_config(None, [f"data.root={root}", *TINY, f"tracking.output_dir={tmp_path}/out", *extra])


def experiment_file(tmp_path: Path, name: str) -> Path:
    path = tmp_path / f"{name}.yaml"
    path.write_text("description: a tiny model for the registry tests\n")
    return path


def train_cli(config: Path, root: Path, tmp_path: Path, *overrides: str, flags: tuple[str, ...] = ()) -> None:
    assert main(["train", "-c", str(config), "--quiet", *flags, f"data.root={root}", *TINY,
                 f"tracking.output_dir={tmp_path}/out", *overrides]) == 0


def test_experiments_are_tagged_as_custom_model_development(small_icbhi, tmp_path, mlflow_store):
    result = fit(tiny_cfg(small_icbhi, tmp_path, "tracking.experiment=kind-new"), progress=False)
    mlf = mlflow.MlflowClient()
    exp = mlf.get_experiment(mlf.get_run(result.run_id).info.experiment_id)
    assert exp.name == "kind-new" and exp.tags[tracking.EXPERIMENT_KIND_TAG] == "custom_model_development"
    # An experiment made elsewhere without a kind gets it when lungsound first uses it; a kind already set is kept.
    untagged = mlf.create_experiment("kind-old")
    genai = mlf.create_experiment("kind-genai", tags={tracking.EXPERIMENT_KIND_TAG: "genai_development"})
    assert tracking.EXPERIMENT_KIND_TAG not in mlf.get_experiment(untagged).tags
    assert tracking.experiment_id(tracking.client(), "kind-old") == untagged
    tracking.experiment_id(tracking.client(), "kind-genai")
    assert mlf.get_experiment(untagged).tags[tracking.EXPERIMENT_KIND_TAG] == "custom_model_development"
    assert mlf.get_experiment(genai).tags[tracking.EXPERIMENT_KIND_TAG] == "genai_development"


def test_run_records_its_data_as_a_dataset_input(small_icbhi, tmp_path, mlflow_store):
    paper = fit(tiny_cfg(small_icbhi, tmp_path, "tracking.experiment=inputs"), progress=False)
    clean = fit(tiny_cfg(small_icbhi, tmp_path, "tracking.experiment=inputs", "train.protocol=clean",
                         "data.val_fraction=0.25"), progress=False)
    for result, protocol in ((paper, "paper"), (clean, "clean")):
        run = mlflow.MlflowClient().get_run(result.run_id)
        (inp,) = run.inputs.dataset_inputs
        ds = inp.dataset
        assert ds.name == small_icbhi.name and ds.source_type == "local"
        assert json.loads(ds.source) == {"uri": str(small_icbhi.resolve())}
        assert ds.digest == run.data.tags["data_fingerprint"] and len(ds.digest) == 16
        assert {t.key: t.value for t in inp.tags} == {"mlflow.data.context": "training"}
        profile = json.loads(ds.profile)
        assert profile["split"] == "official" and profile["protocol"] == protocol and profile["recordings"] == 12
        assert profile["test_cycles"] == TEST_CYCLES
        assert profile["train_cycles"] + profile["val_cycles"] == TRAIN_CYCLES
        assert (profile["val_cycles"] == 0) == (protocol == "paper")
    # The clean protocol holds out training patients: other cycles, so another fingerprint.
    digests = [mlflow.MlflowClient().get_run(r.run_id).inputs.dataset_inputs[0].dataset.digest for r in (paper, clean)]
    assert digests[0] != digests[1]


def test_git_commit_tag_is_the_checkout_head(small_icbhi, tmp_path, mlflow_store):
    if shutil.which("git") is None:
        pytest.skip("git is not installed")
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True)
    top = subprocess.run(["git", "rev-parse", "--show-toplevel"], cwd=REPO, capture_output=True, text=True)
    if head.returncode or Path(top.stdout.strip()).resolve() != REPO:
        pytest.skip(f"{REPO} is not a git checkout")
    result = fit(tiny_cfg(small_icbhi, tmp_path, "tracking.experiment=git"), progress=False)
    tags = mlflow.MlflowClient().get_run(result.run_id).data.tags
    assert tags["mlflow.source.git.commit"] == head.stdout.strip() == tags["git_commit"]
    assert tags["git_dirty"] in ("true", "false")


def test_source_tags_name_the_command(monkeypatch):
    monkeypatch.setattr("sys.argv", ["/opt/venv/bin/lungsound", "train", "-c", "experiments/quickstart.yaml"])
    tags = tracking.environment_tags()
    assert tags["mlflow.source.name"] == "lungsound train" and tags["mlflow.source.type"] == "LOCAL"
    monkeypatch.setattr("sys.argv", ["/opt/venv/lib/site-packages/pytest/__main__.py", "-q"])
    assert tracking.environment_tags()["mlflow.source.name"] == "pytest"


def test_no_git_means_no_commit_tag_and_no_error(monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path))  # no git executable to be found
    tags = tracking.environment_tags()
    assert "mlflow.source.git.commit" not in tags
    assert tags["git_commit"] == "unknown" and tags["git_dirty"] == "unknown"


def test_register_versions_and_latest_everywhere(small_icbhi, tmp_path, mlflow_store, capsys):
    config = experiment_file(tmp_path, "tiny_registry")
    mlf = mlflow.MlflowClient()
    run_ids = []
    for lr in ("1e-3", "1e-4"):
        train_cli(config, small_icbhi, tmp_path, "tracking.experiment=registry", f"train.lr={lr}",
                  flags=("--register",))
        out = capsys.readouterr().out
        run_ids.append(out.split("run ", 1)[1].split()[0])
        assert f"registered models:/tiny_registry/{len(run_ids)} (run {run_ids[-1]})" in out
    versions = {str(v.version): v.run_id for v in mlf.search_model_versions("name = 'tiny_registry'")}
    assert versions == {"1": run_ids[0], "2": run_ids[1]}
    assert mlf.get_model_version("tiny_registry", "2").source == f"runs:/{run_ids[1]}/model"
    # models:/NAME/latest is the newest version, models:/NAME/1 the first: in the resolver, Predictor and the CLI.
    assert resolve_model_uri("models:/tiny_registry/latest") == (run_ids[1], "model")
    assert resolve_model_uri("models:/tiny_registry/1") == (run_ids[0], "model")
    predictor = Predictor.from_mlflow("models:/tiny_registry/latest")
    wav = sorted(small_icbhi.glob("*.wav"))[0]
    assert len(predictor.predict(wav, annotation=wav.with_suffix(".txt")).segments) == 6  # its six annotated cycles
    assert main(["evaluate", "--run-id", "models:/tiny_registry/latest", "--json"]) == 0
    evaluated = json.loads(capsys.readouterr().out)
    final = mlf.get_run(run_ids[1]).data.metrics["final_test_score"]
    assert evaluated["metrics"]["test_score"] == pytest.approx(final) and evaluated["n"] == TEST_CYCLES


def test_register_a_seed_group_registers_its_best_child(small_icbhi, tmp_path, mlflow_store, capsys):
    config = experiment_file(tmp_path, "tiny_group")
    train_cli(config, small_icbhi, tmp_path, "tracking.experiment=group", flags=("--register", "--seeds", "1-2"))
    mlf = mlflow.MlflowClient()
    runs = mlflow.search_runs(experiment_names=["group"])
    parent = runs[runs["tags.role"] == "parent"].iloc[0]
    children = runs[runs["tags.mlflow.parentRunId"] == parent["run_id"]]
    best = children.sort_values("start_time").loc[children["metrics.final_test_score"].idxmax()]
    (version,) = mlf.search_model_versions("name = 'tiny_group'")
    assert version.run_id == best["run_id"] and version.tags["parent_run_id"] == parent["run_id"]
    assert version.tags["seed"] == best["tags.seed"]
    # The parent carries its children's (shared) dataset input once.
    (inp,) = mlf.get_run(parent["run_id"]).inputs.dataset_inputs
    assert inp.dataset.digest == children["tags.data_fingerprint"].iloc[0] == children["tags.data_fingerprint"].iloc[1]


def test_a_seed_group_of_train_is_found_by_the_group_queries_and_kept_by_a_sweep(small_icbhi, tmp_path, mlflow_store,
                                                                                  capsys):
    """The tag names are defined once (`lungsound.tracking.tags`): the parent and children `train --seeds` writes are
    what the group queries find, and a sweep of the same file and settings keeps that group instead of training it."""
    config = experiment_file(tmp_path, "tiny_found")
    train_cli(config, small_icbhi, tmp_path, "tracking.experiment=found", flags=("--seeds", "1-2"))
    mlf = tracking.client()
    (parent,) = tracking.group_parents(mlf, "found", "tiny_found")
    assert tracking.is_parent(parent.data.tags) and tracking.seeds_of(parent.data.tags) == [1, 2]
    assert parent.data.tags[tracking.EXPERIMENT_FILE_TAG] == "tiny_found" and parent.info.status == "FINISHED"
    children = tracking.children_of(mlf, parent.info.run_id)
    assert sorted(c.data.tags[tracking.SEED_TAG] for c in children) == ["1", "2"]
    assert all((Path(c.data.tags[tracking.RUN_FOLDER_TAG]) / "last.pt").is_file() for c in children)
    capsys.readouterr()
    assert main(["sweep", "-c", str(config), f"data.root={small_icbhi}", *TINY, f"tracking.output_dir={tmp_path}/out",
                 "tracking.experiment=found", "--seeds", "1-2", "--quiet"]) == 0
    assert f"tiny_found: finished before, kept (parent run {parent.info.run_id})" in capsys.readouterr().out
    assert len(tracking.group_parents(mlf, "found", "tiny_found")) == 1  # nothing new


def test_unknown_registered_model_is_a_one_line_error(small_icbhi, mlflow_store, capsys):
    with pytest.raises(LungsoundError, match="'models:/no_such_model/latest' not found") as err:
        resolve_model_uri("models:/no_such_model/latest")
    assert "\n" not in str(err.value)
    wav = sorted(small_icbhi.glob("*.wav"))[0]
    assert main(["predict", str(wav), "--run-id", "models:/no_such_model/latest"]) == 2
    stderr = capsys.readouterr().err.strip()
    assert stderr.startswith("lungsound: error: registered model 'models:/no_such_model/latest' not found")
    assert len(stderr.splitlines()) == 1


def test_quiet_training_prints_one_line_per_epoch(small_icbhi, tmp_path, mlflow_store, capsys):
    train_cli(experiment_file(tmp_path, "tiny_lines"), small_icbhi, tmp_path, "train.epochs=2",
              "tracking.experiment=lines")
    captured = capsys.readouterr()
    lines = [line for line in captured.out.splitlines() if "] epoch " in line]
    assert [line.split("] epoch ")[1].split()[0] for line in lines] == ["1/2", "2/2"]
    assert all(line.startswith("[tiny_lines seed 1] ") and " loss " in line and " Score " in line
               and " s/epoch" in line for line in lines)
    assert "it/s" not in captured.err and "it/s" not in captured.out  # no per-batch progress bars
