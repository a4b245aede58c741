"""Model references (`lungsound.inference.sources`): each kind resolves to the right folder and metadata - a folder
(or a file in it), an MLflow run id, `runs:/`, `models:/NAME/latest|N|@alias` on a fresh sqlite store made here, a
Hugging Face hub id served offline from a hub cache laid out as huggingface_hub lays it out - and every bad reference
is a one-line error naming the problem. The CLI and `Predictor.from_pretrained` read references the same way.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from lungsound.cli import main
from lungsound.errors import LungsoundError
from lungsound.inference import Predictor
from lungsound.inference.sources import (FOLDER, HUB, MLFLOW, HubRef, meta_entry, open_source, parse_reference,
                                         reference_kind)
from tests.conftest import random_model
from tests.test_hub_sharing import hub_cache, put_in_hub_cache  # noqa: F401  (hub_cache: a fixture used below)

COMMIT = "c0ffee" * 6 + "c0ff"  # 40 hex digits: a snapshot's commit


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> Path:
    return random_model(tmp_path_factory.mktemp("sources") / "run" / "best")


@pytest.fixture(scope="module")
def store(mlflow_store, model, tmp_path_factory) -> dict:
    """Two runs, each with the model folder as its `model` artifact, registered as versions 1 and 2 of "lung" (alias
    "champion" on version 1); the second run holds a logged external validation."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=mlflow_store)
    exp = client.create_experiment("sources", artifact_location=(tmp_path_factory.mktemp("art")).as_uri())
    runs = []
    for _ in range(2):
        run_id = client.create_run(exp).info.run_id
        client.log_artifacts(run_id, str(model), "model")
        client.set_terminated(run_id)
        runs.append(run_id)
    client.create_registered_model("lung")
    for run_id in runs:
        client.create_model_version("lung", source=f"runs:/{run_id}/model", run_id=run_id)
    client.set_registered_model_alias("lung", "champion", "1")
    result = {"dataset": "kauh", "title": "KAUH", "date": "2026-01-02T03:04:05+00:00", "recordings": 3, "scored": 2,
              "unmappable": [{"file": "x.wav", "reason": "not audio"}], "segmentation": "auto", "interval": "Wilson",
              "confusion": {"labels": ["normal"], "matrix": [[2]]},
              **{f: {"sensitivity": None, "specificity": 1.0, "ci": {"sensitivity": None, "specificity": [0.3, 1.0]},
                     "positives": 0, "negatives": 2, "tp": 0, "fn": 0, "tn": 2, "fp": 0} for f in ("crackle", "wheeze")}}
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "kauh.json").write_text(json.dumps(result))
        client.log_artifact(runs[1], str(Path(tmp) / "kauh.json"), "external_validation")
    return {"runs": runs, "result": result}


@pytest.mark.parametrize("text, kind", [
    ("runs:/abc/model", MLFLOW), ("models:/lung/latest", MLFLOW), ("models:/lung@champion", MLFLOW),
    ("hf://alice/lung-ast", HUB), ("alice/lung-ast", HUB), ("alice/lung-ast@v1", HUB),
    ("0123456789abcdef0123456789abcdef", MLFLOW), ("no/such/folder", None), ("best", None), ("", None),
])
def test_reference_kinds(text, kind):
    assert reference_kind(text) == kind


def test_a_folder_is_itself_and_wins_over_a_hub_id(model, tmp_path, monkeypatch):
    with open_source(model) as source:
        assert (source.kind, source.folder, source.label, source.temporary) == (FOLDER, model, str(model), False)
        assert source.run_id is None and source.hub is None and source.evaluations() == {}
    with open_source(model / "model.safetensors") as source:  # a file inside: its folder
        assert source.folder == model
    monkeypatch.chdir(tmp_path)
    (tmp_path / "alice").mkdir()
    (tmp_path / "alice" / "lung-ast").symlink_to(model, target_is_directory=True)
    assert reference_kind("alice/lung-ast") == FOLDER
    with open_source("alice/lung-ast") as source:
        assert source.kind == FOLDER and source.folder == Path("alice/lung-ast")


def test_run_ids_and_runs_uris_download_the_runs_model(store, model):
    first, second = store["runs"]
    for text in (first, f"runs:/{first}/model", f"runs:/{first}"):
        with open_source(text) as source:
            assert (source.kind, source.run_id, source.label, source.uri) == (MLFLOW, first, text, f"runs:/{first}/model")
            assert source.temporary and source.folder.name == "model"
            assert (source.folder / "model.safetensors").read_bytes() == (model / "model.safetensors").read_bytes()
            assert source.evaluations() == {}  # the first run has no external validation
            folder = source.folder
        assert not folder.exists()  # the download is gone after the block
    with open_source(second, kind=MLFLOW) as source:
        assert source.evaluations() == {"external:kauh": meta_entry(store["result"], date=store["result"]["date"])}


@pytest.mark.parametrize("text, run", [("models:/lung/latest", 1), ("models:/lung/1", 0), ("models:/lung/2", 1),
                                       ("models:/lung@champion", 0)])
def test_registered_models_resolve_to_their_run(store, text, run):
    reference = parse_reference(text)
    assert (reference.kind, reference.run_id, reference.artifact) == (MLFLOW, store["runs"][run], "model")
    with open_source(reference) as source:
        assert source.label == text and (source.folder / "config.yaml").is_file()


def test_a_hub_id_resolves_to_its_cached_snapshot_offline(model, hub_cache, tmp_path):  # noqa: F811
    snapshot = put_in_hub_cache(hub_cache, "alice/lung-ast", model, COMMIT)
    for text, label in (("alice/lung-ast", "hf://alice/lung-ast"), ("hf://alice/lung-ast", "hf://alice/lung-ast"),
                        (f"alice/lung-ast@{COMMIT}", f"hf://alice/lung-ast@{COMMIT}")):
        with open_source(text) as source:
            assert (source.kind, source.folder, source.label, source.commit) == (HUB, snapshot.resolve(), label, COMMIT)
            assert source.hub == HubRef("alice/lung-ast", text.partition("@")[2] or None) and not source.temporary
    assert Predictor.from_pretrained("alice/lung-ast").source == "hf://alice/lung-ast"


def test_predict_model_takes_an_mlflow_uri_too(store, tmp_path, capsys):
    wav = tmp_path / "noise.wav"
    sf.write(wav, (0.1 * np.random.default_rng(0).standard_normal(3 * 16000)).astype(np.float32), 16000)
    assert main(["predict", str(wav), "--model", "models:/lung/latest", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)[0]["segments"]


@pytest.mark.parametrize("text, kind, message", [
    ("no/such/folder", None, "no/such/folder: no such model folder (and not a Hugging Face hub id USER/NAME, nor an "
                             "MLflow run id, runs:/<id>/model or models:/<name>/<version>)"),
    ("missing", FOLDER, "missing: no such model folder"),
    ("runs:/", None, "no run id in 'runs:/'; expected runs:/<run id>/model"),
    ("a b", MLFLOW, "not an MLflow run id or model URI: 'a b' (expected a run id, runs:/<id>/model or "
                    "models:/<name>/<version>)"),
    ("models:/lung", None, "expected models:/<name>/<version>, models:/<name>/latest or models:/<name>@<alias>, got "
                           "'models:/lung'"),
    ("hf://not an id", None, "not a Hugging Face hub id: 'hf://not an id' (expected hf://USER/NAME[@revision])"),
    ("just-a-name", HUB, "not a Hugging Face hub id: 'just-a-name' (expected USER/NAME, USER/NAME@revision or "
                         "hf://USER/NAME)"),
])
def test_a_bad_reference_is_one_line(text, kind, message, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(LungsoundError) as err:
        parse_reference(text, kind)
    assert str(err.value) == message


def test_references_that_name_nothing_there_are_one_line(store, hub_cache, tmp_path):  # noqa: F811
    for text, start in (("models:/lung/7", "registered model 'models:/lung/7' not found in "),
                        ("models:/absent/latest", "registered model 'models:/absent/latest' not found in "),
                        ("0123456789abcdef0123456789abcdef", "run 0123456789abcdef0123456789abcdef has no artifact "
                                                             "'model' in "),
                        ("alice/absent", f"hub model alice/absent: not in the hub cache ({hub_cache}) and "
                                         "HF_HUB_OFFLINE is set")):
        with pytest.raises(LungsoundError) as err:
            with open_source(text):
                pass
        assert str(err.value).startswith(start) and "\n" not in str(err.value), str(err.value)
