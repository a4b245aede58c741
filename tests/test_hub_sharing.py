"""Sharing models through the Hugging Face hub without the network: the model card against meta.json, the papers cited
per method, seed-group scores from a real MLflow store, staging and pushing (the `HfApi` client replaced at its one
seam by an object that records the calls and keeps what was uploaded), and pulling back through the real
`huggingface_hub.snapshot_download`, offline, from a hub cache laid out as huggingface_hub lays out a snapshot:
`Predictor.from_pretrained`, `lungsound predict --model` and the app's picker give the same probabilities on a real
recording as the local folder.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from lungsound.cli import main
from lungsound.config import load_config
from lungsound.errors import LungsoundError
from lungsound.inference import Predictor
from lungsound.inference.card import INTENDED_USE
from lungsound.inference.sources import HubRef, parse_hub_id, resolve_model
from lungsound.sharing import Provenance, SeedGroup, model_card
from lungsound.sharing.card import NOTICE
from lungsound.sharing.push import hub_api, push, stage
from lungsound.sharing.references import references_for
from lungsound.models.build import build_model
from lungsound.models.folder import save_model

REPO_ID = "alice/lung-ast"
RECORDING = "104_1b1_Ll_sc_Litt3200"  # 18.5 s at 4 kHz, with its annotation
META = {"selected_epoch": 7, "protocol": "clean", "method": "patchmix_cl", "experiment": "icbhi_patchmix_cl_clean",
        "seed": 2, "metrics": {"test_sp": 81.25, "test_se": 43.75, "test_score": 62.5, "val_score": 60.0,
                               "test_score_2class": 70.125, "test_se_2class": 59.0},
        "calibration": {"temperature": 1.7, "ece_before": 0.12, "ece_after": 0.03, "n": 300},
        "evaluations": {"external:kauh": {  # as lungsound validate-external stores it (lungsound.external.record)
            "dataset": "kauh", "title": "KAUH lung sound dataset (King Abdullah University Hospital, Jordan)",
            "date": "2026-11-30T20:00:00+00:00", "recordings": 12, "scored": 10, "unmappable": 2,
            "crackle": {"sensitivity": 0.5, "specificity": 0.75, "ci": {"sensitivity": [0.1, 0.9],
                                                                      "specificity": [0.41, 0.93]}},
            "wheeze": {"sensitivity": None, "specificity": 1.0, "ci": {"sensitivity": None,
                                                                     "specificity": [0.72, 1.0]}}}}}


# ---------------------------------------------------------------------------------------------------------------------
# Fixtures and helpers
# ---------------------------------------------------------------------------------------------------------------------


def tiny_config(*overrides: str):
    return load_config(None, ["model.name=ast_tiny", "data.duration=2.0", "data.root=/data/ICBHI_final_database",
                              "method.name=patchmix_cl", "train.protocol=clean", *overrides])


@pytest.fixture(scope="module")
def model_folder(tmp_path_factory) -> Path:
    """A random tiny AST (2-s input) as `lungsound train` leaves it: `<run folder>/best`, with its evaluation arrays."""
    torch.manual_seed(0)
    cfg = tiny_config()
    return save_model(tmp_path_factory.mktemp("share") / "run-1" / "best", build_model(cfg), cfg, META,
                      extra={"evaluation.npz": b"per-cycle test logits"})


@pytest.fixture
def hub_cache(tmp_path, monkeypatch) -> Path:
    """An empty hub cache, offline, as huggingface_hub reads $HF_HUB_CACHE and HF_HUB_OFFLINE (at import time)."""
    from huggingface_hub import constants

    cache = tmp_path / "hf-cache"
    cache.mkdir()
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    return cache


class RecordingApi:
    """Stands in for `huggingface_hub.HfApi` at `push(api=...)`: records the calls and keeps each uploaded folder as
    the 'remote' repository (files of a previous upload matching `delete_patterns` are removed, as the hub does)."""

    def __init__(self, remote: Path):
        self.remote, self.calls = remote, []

    def create_repo(self, repo_id, **kwargs):
        self.calls.append(("create_repo", repo_id, kwargs))
        return f"https://huggingface.co/{repo_id}"

    def upload_folder(self, *, repo_id, folder_path, **kwargs):
        import fnmatch

        self.calls.append(("upload_folder", repo_id, kwargs))
        target = self.remote / repo_id
        uploaded = {p.name for p in Path(folder_path).iterdir()}
        for old in list(target.iterdir()) if target.is_dir() else []:
            if old.name not in uploaded and any(fnmatch.fnmatch(old.name, p) for p in kwargs["delete_patterns"]):
                old.unlink()
        shutil.copytree(folder_path, target, dirs_exist_ok=True)
        commit = hashlib.sha1(b"".join(p.read_bytes() for p in sorted(target.iterdir()))).hexdigest()
        return SimpleNamespace(oid=commit, commit_url=f"https://huggingface.co/{repo_id}/commit/{commit}")


def put_in_hub_cache(cache: Path, repo_id: str, remote: Path, commit: str) -> Path:
    """`remote`'s files laid out as huggingface_hub caches a downloaded snapshot: content-addressed blobs, the
    snapshot's files as relative symlinks to them, and refs/main naming the commit. Returns the snapshot folder."""
    repo = cache / ("models--" + repo_id.replace("/", "--"))
    snapshot = repo / "snapshots" / commit
    snapshot.mkdir(parents=True)
    (repo / "blobs").mkdir(exist_ok=True)
    for f in sorted(remote.iterdir()):
        blob = repo / "blobs" / hashlib.sha256(f.read_bytes()).hexdigest()
        shutil.copyfile(f, blob)
        (snapshot / f.name).symlink_to(os.path.relpath(blob, snapshot))
    (repo / "refs").mkdir(exist_ok=True)
    (repo / "refs" / "main").write_text(commit)
    return snapshot


def pushed_to_cache(folder: Path, cache: Path, tmp_path: Path, repo_id: str = REPO_ID) -> tuple[Path, RecordingApi]:
    api = RecordingApi(tmp_path / "remote")
    result = push(folder, repo_id, api=api)
    return put_in_hub_cache(cache, repo_id, tmp_path / "remote" / repo_id, result.commit), api


def probabilities(pred) -> np.ndarray:
    return np.array([list(s.probabilities.values()) for s in pred.segments])


@pytest.fixture(scope="module")
def recording(icbhi_dir) -> tuple[Path, Path]:
    wav = icbhi_dir / "audio_and_txt_files" / f"{RECORDING}.wav"
    if not wav.is_file():
        pytest.skip(f"real recording not available: {wav}")
    return wav, wav.with_suffix(".txt")


# ---------------------------------------------------------------------------------------------------------------------
# The model card
# ---------------------------------------------------------------------------------------------------------------------


def test_card_states_what_meta_and_config_hold(model_folder):
    from huggingface_hub import ModelCard

    text = model_card(model_folder, REPO_ID)
    card = ModelCard(text)  # the hub's own parser reads the front matter
    assert card.data.library_name == "lungsound" and card.data.license == "apache-2.0"
    assert card.data.pipeline_tag == "audio-classification"
    assert {"lungsound", "ast_tiny", "patchmix_cl", "protocol-clean", "icbhi-2017"} <= set(card.data.tags)
    assert {(r.metric_type, r.metric_value, r.dataset_split) for r in card.data.eval_results} == {
        ("specificity", 81.25, "test"), ("sensitivity", 43.75, "test"), ("icbhi_score", 62.5, "test")}
    body = card.text
    assert "| this model (seed 2) | 81.25 | 43.75 | 62.50 |" in body
    assert "two-class (normal vs abnormal) Score 70.12, Se 59.00" in body  # 70.125 rounds half to even
    assert "T = 1.700" in body and "300 validation cycles" in body and "12.00% before, 3.00% after" in body
    assert ("| KAUH lung sound dataset | 10 of 12 | 50.0% [10.0-90.0%] | 75.0% [41.0-93.0%] | n/a "
            "| 100.0% [72.0-100.0%] | 2026-11-30 |") in body  # the same table as the app's card
    assert "| selected epoch | 7 of 50 |" in body and "clean: the epoch was selected on a validation split" in body
    assert "ICBHI-format folder `ICBHI_final_database`" in body and "/data/" not in body  # no local paths
    assert "Patch-Mix contrastive learning (`patchmix_cl`), after [PMCL]" in body
    assert "arXiv 2305.14032" in body and "Physiological Measurement 40 (2019) 035001" in body
    assert NOTICE == "**Research use only. Nothing here is a medical device.**" and body.count(NOTICE) == 2
    assert INTENDED_USE in body and "Not a medical device; not for diagnosis or treatment decisions." in body
    assert f'Predictor.from_pretrained("{REPO_ID}")' in body and f"lungsound predict --model {REPO_ID}" in body
    assert "data fingerprint | not recorded" in body and "mean ± std over n" not in body
    assert "one training run's (one seed)" in body


def test_card_of_a_synthetic_uncalibrated_model_says_so(tmp_path):
    cfg = load_config(None, ["model.name=ast_tiny", "data.duration=2.0"])  # data.root null: the built-in set
    folder = save_model(tmp_path / "best", build_model(cfg), cfg, {"selected_epoch": 1, "protocol": "paper"})
    text = model_card(folder, "bob/demo")
    assert "built-in synthetic ICBHI-format set" in text and "Trained on synthetic sounds" in text
    assert "model-index" not in text and "synthetic-data" in text  # no scores advertised for synthetic data
    assert "Not calibrated (temperature T = 1)" in text and "No test scores are recorded" in text
    assert "paper: no validation split" in text and "[ICBHI]" not in text
    assert "[PMCL]" in text  # plain CE on an AST: the AST fine-tuning recipe of [PMCL]


@pytest.mark.parametrize("overrides, expected", [
    (["method.name=ce"], ["PMCL", "ICBHI"]),
    (["method.name=sgscl"], ["SGSCL", "ICBHI"]),
    (["method.name=dat"], ["SGSCL", "ICBHI"]),
    (["method.name=dat", "method.params.domain=generated", "data.generated=gen/mixed500"], ["AFT", "ICBHI"]),
    (["method.name=ce", "augment.specaug=false", "augment.representation=repaugment"], ["PMCL", "REPAUG", "ICBHI"]),
    (["method.name=ce", "model.name=hubert_tiny", "data.input=waveform", "augment.specaug=false"], ["REPAUG", "ICBHI"]),
    (["method.name=ce", "model.name=resnet18"], ["ICBHI"]),
    (["method.name=ce", "data.root=null"], ["PMCL"]),
])
def test_each_method_cites_its_paper(overrides, expected):
    from lungsound.inference.card import trained_on_synthetic

    cfg = tiny_config(*overrides)
    assert [ref.key for ref, _ in references_for(cfg, trained_on_synthetic(cfg))] == expected


def test_a_composed_method_cites_every_part():
    cfg = tiny_config("method.name=compose")
    cfg.method.params = {"parts": ["patchmix_cl", {"name": "dat", "domain": "generated"}]}
    assert [(ref.key, why) for ref, why in references_for(cfg, False)] == [
        ("PMCL", "Patch-Mix contrastive learning"), ("AFT", "adversarial fine-tuning with generated sounds"),
        ("ICBHI", "the training and test data")]


def test_card_gives_the_seed_group_as_mean_std_with_n(model_folder):
    group = SeedGroup("parent1", {1: {"sp": 80.0, "se": 40.0, "score": 60.0}, 2: {"sp": 81.25, "se": 43.75,
                                                                                  "score": 62.5},
                                  3: {"sp": 82.0, "se": 46.0, "score": 64.0}}, [1, 2, 3, 4, 5])
    text = model_card(model_folder, REPO_ID, provenance=Provenance("run2", "icbhi", "f00dfeed", group))
    # hand-computed: mean and population std of (80, 81.25, 82), (40, 43.75, 46), (60, 62.5, 64)
    assert "| mean ± std over n = 3 seeds of 5 planned | 81.08 ± 0.82 | 43.25 ± 2.47 | 62.17 ± 1.65 |" in text
    assert "| seed 3 | 82.00 | 46.00 | 64.00 |" in text
    assert "`f00dfeed`" in text and "| MLflow run | `run2` (experiment `icbhi`) |" in text


def test_provenance_finds_the_run_and_its_seed_group_in_mlflow(model_folder, mlflow_store):
    from lungsound.sharing import provenance_for_folder, provenance_for_run
    from lungsound.tracking import RunLogger

    parent = RunLogger.start("share-test", "group", {"role": "parent", "seeds": "1,2,3"})
    ids = {}
    for seed, score, status in [(1, 60.0, "FINISHED"), (2, 62.0, "FINISHED"), (3, 99.0, "FAILED"),
                                (3, 64.0, "FINISHED")]:
        tags = {"seed": seed, "data_fingerprint": "f00dfeed"}
        if seed == 2:
            tags["run_folder"] = str(model_folder.parent.resolve())
        child = RunLogger.start("share-test", f"s{seed}", tags, parent.run_id)
        child.log_metrics({"final_test_sp": score + 20, "final_test_se": score - 20, "final_test_score": score})
        child.end(status)
        ids[seed] = child.run_id
    parent.end("FINISHED")
    found = provenance_for_folder(model_folder)
    assert (found.run_id, found.experiment, found.data_fingerprint) == (ids[2], "share-test", "f00dfeed")
    assert found.group.parent_run_id == parent.run_id and found.group.seeds_planned == [1, 2, 3]
    assert found.group.scores == {1: {"sp": 80.0, "se": 40.0, "score": 60.0},
                                  2: {"sp": 82.0, "se": 42.0, "score": 62.0},
                                  3: {"sp": 84.0, "se": 44.0, "score": 64.0}}  # the FAILED seed-3 run left out
    assert found.group.summary()["score"] == pytest.approx((62.0, np.std([60.0, 62.0, 64.0])))
    assert provenance_for_run(ids[2]).group.scores == found.group.scores
    with pytest.raises(LungsoundError, match="multi-seed parent and holds no model"):
        provenance_for_run(parent.run_id)


# ---------------------------------------------------------------------------------------------------------------------
# Staging and pushing
# ---------------------------------------------------------------------------------------------------------------------


def test_stage_writes_the_model_files_and_the_card_only(model_folder, tmp_path):
    out = stage(model_folder, tmp_path / "staged", REPO_ID).folder
    assert sorted(p.name for p in out.iterdir()) == ["README.md", "config.yaml", "meta.json", "model.safetensors"]
    for name in ("config.yaml", "meta.json", "model.safetensors"):
        assert (out / name).read_bytes() == (model_folder / name).read_bytes()
    assert (out / "README.md").read_text() == model_card(model_folder, REPO_ID, files=[
        "model.safetensors", "config.yaml", "meta.json", "README.md"])
    stage(model_folder, out, REPO_ID)  # a folder staged before may be staged again
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "notes.txt").write_text("mine")
    with pytest.raises(LungsoundError, match="holds other files"):
        stage(model_folder, tmp_path / "busy", REPO_ID)
    assert (tmp_path / "busy" / "notes.txt").read_text() == "mine"
    with pytest.raises(LungsoundError, match="would overwrite or sit inside what it is made from"):
        stage(model_folder, model_folder.parent, REPO_ID)
    with pytest.raises(LungsoundError, match="not a Hugging Face repository id"):
        stage(model_folder, tmp_path / "x", "no-namespace")


def test_push_creates_the_repo_and_uploads_the_staged_folder_once(model_folder, tmp_path):
    api = RecordingApi(tmp_path / "remote")
    result = push(model_folder, REPO_ID, api=api, private=True)
    assert [c[:2] for c in api.calls] == [("create_repo", REPO_ID), ("upload_folder", REPO_ID)]
    assert api.calls[0][2] == {"private": True, "exist_ok": True, "repo_type": "model"}
    remote = tmp_path / "remote" / REPO_ID
    assert sorted(p.name for p in remote.iterdir()) == result.files == ["README.md", "config.yaml", "meta.json",
                                                                        "model.safetensors"]
    assert result.url == f"https://huggingface.co/{REPO_ID}/commit/{result.commit}"


def test_push_failures_are_one_line_errors(model_folder, monkeypatch, tmp_path):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(LungsoundError, match="HF_HUB_OFFLINE is set: pushing to the Hugging Face hub needs the"):
        hub_api()
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    for name in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "HF_OIDC_RESOURCE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(constants, "HF_TOKEN_PATH", str(tmp_path / "no-token"))
    with pytest.raises(LungsoundError, match="no Hugging Face token: run `hf auth login` or set"):
        hub_api()

    class Unreachable(RecordingApi):
        def create_repo(self, repo_id, **kwargs):
            raise ConnectionError("[Errno -3] Temporary failure in name resolution\nmore detail")

    with pytest.raises(LungsoundError) as err:
        push(model_folder, REPO_ID, api=Unreachable(tmp_path / "remote"))
    assert str(err.value) == (f"could not push to the Hugging Face hub repository {REPO_ID}: ConnectionError: "
                              "[Errno -3] Temporary failure in name resolution")


def test_cli_push_out_stages_and_uploads_nothing(model_folder, tmp_path, monkeypatch, capsys):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.chdir(tmp_path)  # no MLflow store here: the card has the folder's own facts
    assert main(["push", "--checkpoint", str(model_folder), "--repo-id", REPO_ID, "--out", "staged"]) == 0
    out = capsys.readouterr().out
    assert "note: no MLflow store here" in out and "nothing was uploaded" in out
    assert (tmp_path / "staged" / "README.md").read_text().startswith("---\n")
    assert main(["push", "--checkpoint", str(model_folder), "--repo-id", "bad id", "--out", "x"]) == 2
    assert capsys.readouterr().err.strip() == ("lungsound: error: not a Hugging Face repository id: 'bad id' (expected "
                                               "USER/NAME: letters, digits, '-', '_' and '.', at most 96 characters)")


# ---------------------------------------------------------------------------------------------------------------------
# Pulling from the hub cache
# ---------------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("text, expected", [
    ("alice/lung-ast", HubRef("alice/lung-ast")), ("hf://alice/lung-ast", HubRef("alice/lung-ast")),
    ("alice/lung.ast_v2@v1.0", HubRef("alice/lung.ast_v2", "v1.0")),
    ("alice/m@refs/pr/3", HubRef("alice/m", "refs/pr/3")),
    ("alice", None), ("a/b/c", None), ("alice/-x", None), ("alice/x--y", None), ("./alice/x", None), ("", None),
])
def test_parse_hub_id(text, expected):
    assert parse_hub_id(text) == expected


def test_round_trip_through_the_hub_cache_predicts_like_the_folder(model_folder, hub_cache, tmp_path, recording,
                                                                   capsys):
    from huggingface_hub import scan_cache_dir, snapshot_download

    snapshot, _ = pushed_to_cache(model_folder, hub_cache, tmp_path)
    cached = scan_cache_dir(hub_cache)  # huggingface_hub recognises the layout as one of its cached repositories
    assert [(r.repo_id, [(v.commit_hash, set(v.refs)) for v in r.revisions]) for r in cached.repos] == [
        (REPO_ID, [(snapshot.name, {"main"})])]
    assert Path(snapshot_download(REPO_ID)) == snapshot  # offline: the real resolver finds the cached snapshot
    assert resolve_model(REPO_ID) == (snapshot, f"hf://{REPO_ID}")
    assert resolve_model(f"hf://{REPO_ID}@{snapshot.name}") == (snapshot, f"hf://{REPO_ID}@{snapshot.name}")

    wav, txt = recording
    local = Predictor.from_checkpoint(model_folder, device="cpu").predict(wav, annotation=txt)
    hub = Predictor.from_pretrained(REPO_ID, device="cpu")
    assert hub.runtime == "torch" and hub.source == f"hf://{REPO_ID}" and hub.meta == json.loads(
        (model_folder / "meta.json").read_text())
    pred = hub.predict(wav, annotation=txt)
    assert len(pred.segments) == len(local.segments) > 1
    np.testing.assert_allclose(probabilities(pred), probabilities(local), rtol=0, atol=1e-7)

    assert main(["predict", "--model", REPO_ID, str(wav), "--json"]) == 0
    printed = json.loads(capsys.readouterr().out)[0]
    np.testing.assert_allclose([list(s["probabilities"].values()) for s in printed["segments"]],
                               probabilities(local), rtol=0, atol=1e-6)


def test_a_hub_id_missing_from_the_cache_offline_is_one_line(hub_cache, tmp_path, capsys):
    with pytest.raises(LungsoundError) as err:
        Predictor.from_pretrained("alice/not-pushed")
    message = str(err.value)
    assert message == (f"hub model alice/not-pushed: not in the hub cache ({hub_cache}) and HF_HUB_OFFLINE is set: "
                       "download it once with network access (unset HF_HUB_OFFLINE), or pass a local model folder")
    wav = tmp_path / "x.wav"
    wav.write_bytes(b"")
    assert main(["predict", "--model", "alice/not-pushed", str(wav)]) == 2
    assert capsys.readouterr().err.strip() == f"lungsound: error: {message}"
    with pytest.raises(LungsoundError, match=r"^no/such/folder: no such model folder \(and not a Hugging Face hub"):
        resolve_model("no/such/folder")


def test_an_existing_local_folder_wins_over_a_hub_id(model_folder, hub_cache, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    shutil.copytree(model_folder, tmp_path / "alice" / "lung-ast")
    assert resolve_model(REPO_ID) == (Path(REPO_ID), REPO_ID)  # the cache is empty: no hub look-up happened
    assert Predictor.from_pretrained(REPO_ID).source == REPO_ID


def test_the_app_takes_a_hub_id(model_folder, hub_cache, tmp_path):
    from tests.app_support import load_app_module

    models = load_app_module("models")
    snapshot, _ = pushed_to_cache(model_folder, hub_cache, tmp_path)
    choice = models.hub_choice(f" {REPO_ID} ")
    assert (choice.label, choice.source, choice.origin, choice.runtime, choice.is_hub) == (
        f"hub: {REPO_ID}", f"hf://{REPO_ID}", "hub", "auto", True)
    predictor = models.load_predictor(choice.source, choice.runtime)
    assert predictor.source == f"hf://{REPO_ID}" and predictor.runtime == "torch"
    with pytest.raises(LungsoundError, match="not a Hugging Face hub id: 'just-a-name'"):
        models.hub_choice("just-a-name")


def test_the_app_page_uses_a_hub_id_typed_into_its_box(model_folder, hub_cache, tmp_path, monkeypatch):
    from streamlit.testing.v1 import AppTest

    from tests.app_support import APP, TIMEOUT

    pushed_to_cache(model_folder, hub_cache, tmp_path)
    monkeypatch.setenv("LUNGSOUND_APP_MODEL", str(model_folder))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.chdir(tmp_path)
    at = AppTest.from_file(str(APP), default_timeout=TIMEOUT)
    at.run()
    assert f"Source: `{model_folder}`" in [c.value for c in at.sidebar.caption]
    at.sidebar.text_input(key="hub_model").set_value(REPO_ID).run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    assert f"Source: `hf://{REPO_ID}`" in [c.value for c in at.sidebar.caption]
    assert at.sidebar.selectbox(key="model").disabled
    at.sidebar.text_input(key="hub_model").set_value("alice/not-pushed").run()
    assert any("could not be loaded" in e.value and "not in the hub cache" in e.value for e in at.error)
    at.sidebar.text_input(key="hub_model").set_value("not an id").run()
    assert [e.value for e in at.sidebar.error] == ["not a Hugging Face hub id: 'not an id' (expected USER/NAME, "
                                                   "USER/NAME@revision or hf://USER/NAME)"]
    assert f"Source: `{model_folder}`" in [c.value for c in at.sidebar.caption]  # the picked model again


def test_an_onnx_export_is_pushed_and_pulled_as_onnx(model_folder, hub_cache, tmp_path, recording, icbhi_dir):
    from lungsound.inference.onnx_export import export_checkpoint

    info = export_checkpoint(model_folder, tmp_path / "onnx", data=icbhi_dir, n_check=4, log=lambda line: None)
    exported = Path(info["folder"])
    snapshot, api = pushed_to_cache(exported, hub_cache, tmp_path)
    assert sorted(p.name for p in snapshot.iterdir()) == ["README.md", "config.yaml", "export.json", "meta.json",
                                                          "model.onnx", "model.safetensors"]
    card = (snapshot / "README.md").read_text()
    assert "ONNX fp32 (`model.onnx`), run with ONNX Runtime" in card and "- onnx" in card
    wav, txt = recording
    hub = Predictor.from_pretrained(REPO_ID)
    assert hub.runtime == "onnx"
    local = Predictor.from_checkpoint(exported, runtime="onnx")
    np.testing.assert_allclose(probabilities(hub.predict(wav, annotation=txt)),
                               probabilities(local.predict(wav, annotation=txt)), rtol=0, atol=1e-7)
