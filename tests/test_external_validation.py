"""External validation (`lungsound validate-external`, `lungsound.external`): the KAUH file-name labels, the Wilson
intervals, the aggregation, and the command on the real KAUH recordings with a tiny model (meta.json and MLflow)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from lungsound.cli import main
from lungsound.errors import LungsoundError
from lungsound.external import FINDINGS, LabelledRecording, get_adapter
from lungsound.external.kauh import map_sound_types, parse_location, parse_recording
from lungsound.external.stats import binary_scores, finding_confusion, wilson_interval
from lungsound.external.validate import summarise
from lungsound.models.folder import read_meta
from tests.conftest import random_model

REPO = Path(__file__).resolve().parents[1]

# The 12 KAUH recordings in ../shared/data/kauh, checked by hand against their names: finding, position group, position.
KAUH_EXPECTED = {
    "BP100_N,N,P R M,70,F.wav": ("normal", "posterior middle", "posterior right middle"),
    "BP101_Asthma,E W,P L M,12,F.wav": ("wheezes", "posterior middle", "posterior left middle"),
    "BP102_N,N,P L L,41,M.wav": ("normal", "posterior lower", "posterior left lower"),
    "BP104_Asthma,E W,P L U,45,F.wav": ("wheezes", "posterior upper", "posterior left upper"),
    "BP105_Lung Fibrosis,Crep,A U R,44,M.wav": ("crackles", "anterior upper", "anterior right upper"),
    "BP108_COPD,E W,P R L ,63,M.wav": ("wheezes", "posterior lower", "posterior right lower"),
    "BP110_COPD,E W,P L L,62,M.wav": ("wheezes", "posterior lower", "posterior left lower"),
    "BP11_Heart Failure,C,P L L,53,M.wav": ("crackles", "posterior lower", "posterior left lower"),
    "BP13_Heart Failure,C,P L L,55,M.wav": ("crackles", "posterior lower", "posterior left lower"),
    "BP18_pneumonia,C,P R U,57,M.wav": ("crackles", "posterior upper", "posterior right upper"),
    "BP23_Lung Fibrosis,Crep,P R L ,50,M.wav": ("crackles", "posterior lower", "posterior right lower"),
    "BP36_pneumonia,Crep,P R M,36,F.wav": ("crackles", "posterior middle", "posterior right middle"),
}


# ------------------------------------------------------------------------------------------------- file-name labels
def test_the_real_kauh_names_are_labelled_as_checked_by_hand(kauh_dir):
    found = get_adapter("kauh").load(kauh_dir)
    assert found.unmappable == [] and found.found == 12
    got = {r.file.name: (r.finding, r.groups["position"], r.details["position"]) for r in found.labelled}
    assert got == KAUH_EXPECTED
    rec = next(r for r in found.labelled if r.file.name.startswith("BP108_"))
    assert rec.details == {"subject": 108, "filter_mode": "BP", "diagnosis": "COPD", "sound_types": "E W",
                           "location": "P R L", "position": "posterior right lower", "bronchial": False,
                           "age": 63, "sex": "M"}
    assert {r.groups["filter_mode"] for r in found.labelled} == {"bell"}


@pytest.mark.parametrize("sounds, expected", [
    ("N", (False, False, False)), ("E W", (False, True, False)), ("I C", (True, False, False)),
    ("Crep", (True, False, False)), ("crep", (True, False, False)), ("I C E W", (True, True, False)),
    ("C B", (True, False, True)), ("Crep+W", (True, True, False)), (" E  W ", (False, True, False)),
])
def test_sound_type_codes_map_to_findings(sounds, expected):
    assert map_sound_types(sounds) == expected


@pytest.mark.parametrize("name, reason", [
    ("BP200_Bronchiectasis,B,P L L,60,M.wav", "bronchial breath sounds (B) only"),
    ("BP201_COPD,X W,P L L,60,M.wav", "unknown sound-type code 'X' in 'X W'"),
    ("BP202_Asthma,N W,P L L,30,F.wav", "contradictory sound types 'N W'"),
    ("BP203_Asthma,I E,P L L,30,F.wav", "give only the timing (E/I) and no sound"),
    ("BP204_Asthma, ,P L L,30,F.wav", "no sound type in the file name"),
    ("ZP1_N,N,P L L,30,F.wav", "unknown filter mode 'ZP'"),
    ("BP2_N,N,P L L,30.wav", "has 4 comma-separated fields after the subject, expected 5"),
    ("recording.wav", "file name does not follow"),
    ("BPx_N,N,P L L,30,F.wav", "file name does not follow"),
])
def test_unmappable_names_say_why(name, reason):
    item = parse_recording(Path("/data") / name)
    assert not isinstance(item, LabelledRecording)
    assert reason in item.reason and item.file == Path("/data") / name


@pytest.mark.parametrize("field, expected", [
    ("P L M", ("posterior middle", "posterior left middle")), ("A U R", ("anterior upper", "anterior right upper")),
    ("P R L", ("posterior lower", "posterior right lower")), ("P L L", ("posterior lower", "posterior left lower")),
    ("a l u", ("anterior upper", "anterior left upper")), ("P L R", ("posterior lower", "posterior right lower")),
    ("X L M", ("unrecognised location",) * 2), ("P L", ("unrecognised location",) * 2),
    ("P M M", ("unrecognised location",) * 2), ("P R R", ("unrecognised location",) * 2),
])
def test_chest_location_in_either_order(field, expected):
    assert parse_location(field) == expected


def test_adapter_refuses_a_missing_or_empty_root(tmp_path):
    with pytest.raises(LungsoundError, match="no such folder"):
        get_adapter("kauh").load(tmp_path / "nowhere")
    (tmp_path / "notes.txt").write_text("no audio here")
    with pytest.raises(LungsoundError, match=r"no \.wav recordings under this folder"):
        get_adapter("kauh").load(tmp_path)
    with pytest.raises(LungsoundError, match="unknown external dataset 'icbhi'; known: kauh"):
        get_adapter("icbhi")


# ------------------------------------------------------------------------------------------------------- statistics
def test_wilson_interval_against_hand_computed_values():
    # 8/10: p = 0.8, z^2/n = 0.384146; centre = (0.8 + 0.192073) / 1.384146 = 0.716740,
    # half = 1.959964 / 1.384146 * sqrt(0.016 + 0.009604) = 0.226578 -> [0.490162, 0.943318] (the textbook 0.490-0.943).
    assert wilson_interval(8, 10) == pytest.approx((0.490162, 0.943318), abs=1e-6)
    # 0/10: [0, z^2/n / (1 + z^2/n)] = [0, 0.384146 / 1.384146] = [0, 0.277533]; 10/10 mirrors it.
    assert wilson_interval(0, 10) == pytest.approx((0.0, 0.277533), abs=1e-6)
    assert wilson_interval(10, 10) == pytest.approx((0.722467, 1.0), abs=1e-6)
    # 2/4: centre 0.5 by symmetry, half = 1.959964 / 1.960365 * sqrt(0.0625 + 0.060025) = 0.349961.
    assert wilson_interval(2, 4) == pytest.approx((0.150039, 0.849961), abs=1e-6)
    assert wilson_interval(0, 0) is None
    with pytest.raises(ValueError):
        wilson_interval(3, 2)


def test_binary_scores_and_confusion_by_hand():
    s = binary_scores([True, True, True, False, False], [True, False, True, False, True])
    assert (s["tp"], s["fn"], s["tn"], s["fp"]) == (2, 1, 1, 1)
    assert s["sensitivity"] == pytest.approx(2 / 3) and s["specificity"] == pytest.approx(0.5)
    assert s["ci"]["sensitivity"] == pytest.approx(list(wilson_interval(2, 3)))
    empty = binary_scores([True, True], [False, True])
    assert empty["specificity"] is None and empty["ci"]["specificity"] is None and empty["negatives"] == 0
    matrix = finding_confusion(["normal", "crackles", "both", "both"], ["normal", "wheezes", "both", "normal"])
    assert matrix == [[1, 0, 0, 0], [0, 0, 1, 0], [0, 0, 0, 0], [1, 0, 0, 1]]
    assert finding_confusion([], []) == [[0] * 4 for _ in range(4)]


def test_summary_counts_and_groups_by_hand(tmp_path):
    """Six hand-made scored records: the figures overall and per position are what counting by hand gives."""
    from lungsound.external.base import ExternalSet, Unmappable

    rows = [("normal", "normal", "posterior lower"), ("crackles", "crackles", "posterior lower"),
            ("crackles", "normal", "posterior lower"), ("wheezes", "both", "anterior upper"),
            ("both", "crackles", "anterior upper"), ("normal", "wheezes", "anterior upper")]
    records = [{"file": f"r{i}.wav", "label": a, "predicted": b, "groups": {"position": g, "filter_mode": "bell"}}
               for i, (a, b, g) in enumerate(rows)]
    labelled = [LabelledRecording(tmp_path / f"r{i}.wav", False, False) for i in range(7)]  # r6 turns out silent
    external = ExternalSet("kauh", tmp_path, labelled, [Unmappable(tmp_path / "x.wav", "bad name")])
    out = summarise(external, get_adapter("kauh"), records, [Unmappable(tmp_path / "r6.wav", "silent")])
    # crackles labelled in r1, r2, r4 (found in r1, r4); absent in r0, r3, r5 (r3 predicted both: a false positive).
    assert (out["crackle"]["tp"], out["crackle"]["fn"], out["crackle"]["tn"], out["crackle"]["fp"]) == (2, 1, 2, 1)
    # wheezes labelled in r3, r4 (found in r3 only); absent in r0, r1, r2, r5 (r5 predicted wheezes).
    assert (out["wheeze"]["tp"], out["wheeze"]["fn"], out["wheeze"]["tn"], out["wheeze"]["fp"]) == (1, 1, 3, 1)
    assert out["recordings"] == 8 and out["scored"] == 6  # 6 scored + a bad name + a silent recording
    assert [u["reason"] for u in out["unmappable"]] == ["bad name", "silent"]
    lower = out["groups"]["position"]["posterior lower"]
    assert lower["scored"] == 3 and lower["crackle"]["sensitivity"] == 0.5 and lower["wheeze"]["sensitivity"] is None
    upper = out["groups"]["position"]["anterior upper"]
    assert upper["crackle"]["specificity"] == 0.5 and upper["wheeze"]["specificity"] == 0.0
    assert sum(map(sum, out["confusion"]["matrix"])) == 6 and out["confusion"]["labels"] == list(FINDINGS)


# ------------------------------------------------------------------------------------------------------ the command
@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory) -> Path:
    """A random 2-block AST (2-s segments): quick, and its findings come from the real summary rule."""
    return random_model(tmp_path_factory.mktemp("ext") / "model")


@pytest.fixture
def model_copy(tiny_model, tmp_path) -> Path:
    return Path(shutil.copytree(tiny_model, tmp_path / "run" / "best"))


@pytest.fixture
def small_set(tmp_path) -> Path:
    """Two noise recordings with good KAUH names, one with a bad name, one unreadable file with a good name."""
    folder = tmp_path / "kauh-small" / "AudioFiles"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for name in ("DP1_Asthma,I E W,P L L,31,M.wav", "EP2_N,N,A R U,40,F.wav", "notes.wav"):
        sf.write(folder / name, (0.1 * rng.standard_normal(4000 * 4)).astype(np.float32), 4000, subtype="PCM_16")
    (folder / "BP3_COPD,C,P R L,60,M.wav").write_text("not audio")
    return folder.parent


def run_cli(argv: list[str], capsys) -> tuple[int, str, str]:
    code = main(["validate-external", "--quiet", *argv])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.needs_shared
def test_command_on_the_real_kauh_recordings(kauh_dir, model_copy, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)  # no MLflow store here: nothing is logged, and none is created
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    code, out, err = run_cli(["--dataset", "kauh", "--root", str(kauh_dir), "--checkpoint", str(model_copy),
                              "--json"], capsys)
    assert code == 0, err
    result = json.loads(out)
    # Every recording is scored or reported unmappable with its reason, and the counts add up.
    files = sorted(str(p) for p in kauh_dir.rglob("*.wav"))
    reported = sorted([r["file"] for r in result["records"]] + [u["file"] for u in result["unmappable"]])
    assert reported == files and result["recordings"] == len(files) == 12
    assert result["recordings"] == result["scored"] + len(result["unmappable"])
    assert all(u["reason"] for u in result["unmappable"])
    for r in result["records"]:
        assert r["label"] == KAUH_EXPECTED[Path(r["file"]).name][0]
        assert r["groups"] == {"position": KAUH_EXPECTED[Path(r["file"]).name][1], "filter_mode": "bell"}
    for finding in ("crackle", "wheeze"):
        s = result[finding]
        assert s["positives"] + s["negatives"] == result["scored"]
        for measure in ("sensitivity", "specificity"):
            if s[measure] is not None:
                low, high = s["ci"][measure]
                assert 0.0 <= low <= s[measure] <= high <= 1.0  # the interval contains the point estimate
    assert sum(map(sum, result["confusion"]["matrix"])) == result["scored"]
    positions = result["groups"]["position"]
    assert {k: v["scored"] for k, v in positions.items()} == {"anterior upper": 1, "posterior lower": 6,
                                                              "posterior middle": 3, "posterior upper": 2}
    # The finding is the summary label of the ordinary whole-recording inference (the same rule, not a second one).
    from lungsound.inference import Predictor

    first = result["records"][0]
    assert Predictor.from_checkpoint(model_copy).predict(Path(first["file"])).summary["label"] == first["predicted"]
    # Stored in the folder's meta.json, as meta.json records it; where it went is said on stderr.
    entry = read_meta(model_copy)["evaluations"]["external:kauh"]
    assert entry["n"] == entry["scored"] == result["scored"] and entry["recordings"] == 12
    assert entry["crackle"]["sensitivity"] == result["crackle"]["sensitivity"]
    assert entry["wheeze"]["ci"] == result["wheeze"]["ci"] and entry["date"][:2] == "20"
    assert result["stored"]["meta_json"] == str(model_copy / "meta.json") and result["stored"]["mlflow_run"] is None
    assert "saved to" in err and "not logged to MLflow: no MLflow store here" in err
    assert not (tmp_path / "mlruns").exists()


def test_text_report_lists_unmappable_recordings_with_reasons(small_set, model_copy, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    code, out, err = run_cli(["--dataset", "kauh", "--root", str(small_set), "--checkpoint", str(model_copy)], capsys)
    assert code == 0, err
    assert "recordings found 4: scored 2, unmappable 2" in out
    assert "  notes.wav: file name does not follow" in out
    assert "  BP3_COPD,C,P R L,60,M.wav: could not be analysed: not audio" in out
    assert "By position:" in out and "By filter mode:" in out and "crackles" in out
    assert f"saved to {model_copy / 'meta.json'}" in out
    meta = read_meta(model_copy)
    assert meta["selected_epoch"] == 1 and meta["evaluations"]["external:kauh"]["unmappable"] == 2


def test_a_failed_save_still_prints_the_results_then_one_error_line(small_set, model_copy, tmp_path, monkeypatch,
                                                                    capsys):
    import errno

    import lungsound.storage

    def read_only(path, obj, **kwargs):
        raise OSError(errno.EROFS, "Read-only file system", str(path))

    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.setattr(lungsound.storage, "atomic_write_json", read_only)
    before = (model_copy / "meta.json").read_bytes()
    code, out, err = run_cli(["--dataset", "kauh", "--root", str(small_set), "--checkpoint", str(model_copy),
                              "--json"], capsys)
    assert code == 2
    assert json.loads(out)["scored"] == 2  # the measured figures are printed all the same
    last = err.strip().splitlines()[-1]
    assert last == f"lungsound: error: {model_copy}: cannot update meta.json: Read-only file system"
    assert (model_copy / "meta.json").read_bytes() == before


def test_bad_root_is_a_one_line_error(model_copy, tmp_path, capsys):
    code, out, err = run_cli(["--dataset", "kauh", "--root", str(tmp_path / "nowhere"), "--checkpoint",
                              str(model_copy)], capsys)
    assert code == 2 and out == ""
    assert err.strip() == f"lungsound: error: {tmp_path / 'nowhere'}: no such folder (expected the KAUH recordings, " \
                          "e.g. its AudioFiles folder)"
    assert "evaluations" not in read_meta(model_copy)


def test_run_id_logs_metrics_and_artifact_on_the_run(small_set, tiny_model, mlflow_store, tmp_path, capsys):
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=mlflow_store)
    exp = client.create_experiment("external-run-id", artifact_location=(tmp_path / "artifacts").as_uri())
    run_id = client.create_run(exp).info.run_id
    client.log_artifacts(run_id, str(tiny_model), "model")
    client.set_terminated(run_id)
    code, out, err = run_cli(["--dataset", "kauh", "--root", str(small_set), "--run-id", run_id, "--json"], capsys)
    assert code == 0, err
    result = json.loads(out)
    run = client.get_run(run_id)
    metrics = run.data.metrics
    assert metrics["external_kauh_recordings"] == 4 and metrics["external_kauh_scored"] == 2
    assert metrics["external_kauh_unmappable"] == 2
    # DP1 is labelled wheezes and EP2 normal: wheeze Se and Sp and crackle Sp are defined, crackle Se (0/0) is not.
    assert metrics["external_kauh_wheeze_sensitivity"] == result["wheeze"]["sensitivity"]
    assert metrics["external_kauh_crackle_specificity_ci_high"] == result["crackle"]["ci"]["specificity"][1]
    assert "external_kauh_crackle_sensitivity" not in metrics and result["crackle"]["sensitivity"] is None
    assert run.info.status == "FINISHED"  # logging afterwards does not reopen the run
    logged = client.download_artifacts(run_id, "external_validation/kauh.json", str(tmp_path / "dl"))
    assert json.loads(Path(logged).read_text())["scored"] == 2
    assert result["stored"] == {"meta_json": None, "mlflow_run": run_id, "artifact": "external_validation/kauh.json",
                                "note": result["stored"]["note"]}
    assert "meta.json not updated" in err and f"logged to MLflow run {run_id}" in err
    assert "evaluations" not in read_meta(tiny_model)  # the original folder is untouched
    # A model loaded from the run shows the figures on its card although its meta.json copy never had them.
    from lungsound.inference import Predictor

    card = Predictor.from_mlflow(run_id).card
    entry = card["evaluations"]["external:kauh"]
    assert entry["scored"] == 2 and entry["wheeze"]["sensitivity"] == result["wheeze"]["sensitivity"]
    assert entry["date"] == json.loads(Path(logged).read_text())["date"]


def test_checkpoint_of_a_tracked_run_logs_to_that_run(small_set, model_copy, mlflow_store, tmp_path, capsys):
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=mlflow_store)
    exp = client.create_experiment("external-folder", artifact_location=(tmp_path / "artifacts").as_uri())
    run_id = client.create_run(exp, tags={"run_folder": str(model_copy.parent.resolve())}).info.run_id
    code, out, err = run_cli(["--dataset", "kauh", "--root", str(small_set), "--checkpoint", str(model_copy)], capsys)
    assert code == 0, err
    assert client.get_run(run_id).data.metrics["external_kauh_scored"] == 2
    assert f"logged to MLflow run {run_id}" in out
    assert read_meta(model_copy)["evaluations"]["external:kauh"]["scored"] == 2


def test_read_meta_refuses_evaluations_that_are_not_an_object(model_copy):
    meta = read_meta(model_copy)
    (model_copy / "meta.json").write_text(json.dumps({**meta, "evaluations": [1, 2]}))
    with pytest.raises(LungsoundError, match="'evaluations' must be an object, got list"):
        read_meta(model_copy)


# ---------------------------------------------------------------------------------------------------- the model card
def test_card_sections_describe_split_and_external_figures():
    from lungsound.external import card as ev
    assert ev.card_sections({"split": "official"}) == [] and ev.card_sections({}) == []
    assert "tested on a held-out stethoscope" in ev.split_text("device_out=Meditron")
    assert "without any Meditron recording" in ev.split_text("device_out=Meditron")
    assert "leak-free" in ev.split_text("official_noleak") and "patient fold 3" in ev.split_text("fold3")
    entry = {"dataset": "kauh", "title": "KAUH lung sound dataset (King Abdullah University Hospital, Jordan)",
             "date": "2026-01-02T03:04:05+00:00", "scored": 10, "recordings": 12,
             "crackle": {"sensitivity": 0.8, "specificity": None, "ci": {"sensitivity": [0.490162, 0.943314],
                                                                         "specificity": None}},
             "wheeze": "broken"}
    (table,) = ev.card_sections({"split": "official", "evaluations": {"external:kauh": entry}})
    row = next(line for line in table.splitlines() if line.startswith("| KAUH"))
    assert row == "| KAUH lung sound dataset | 10 of 12 | 80.0% [49.0-94.3%] | n/a | n/a | n/a | 2026-01-02 |"
