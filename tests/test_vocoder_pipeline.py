"""The [AFT] vocoder pipeline end to end on a small database: train, stop, resume exactly, synthesise a set (and resume
an interrupted one to the same bytes), evaluate it, and the one-line errors of the generate commands."""

from __future__ import annotations

import csv

import mlflow
import numpy as np
import pytest
import soundfile as sf
import torch
from safetensors.torch import load_file

from lungsound.cli import main
from lungsound.errors import LungsoundError
from lungsound.generation import synth as synth_module
from lungsound.generation.quality import evaluate_set, frechet_distance
from lungsound.generation.synth import synthesize
from lungsound.generation.loop import train_vocoder
from lungsound.generation.train import load_vocoder_config

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


def small_cfg(root, tmp_path, *extra):
    return load_vocoder_config(None, [f"data.root={root}", "model.residual_layers=3", "model.residual_channels=8",
                                      "train.steps=4", "train.batch_size=2", "train.log_every=2",
                                      "train.sample_every=4", "train.checkpoint_every=2", "data.crop_frames=8",
                                      f"tracking.output_dir={tmp_path}/out", "tracking.experiment=voc", *extra])


@pytest.fixture(scope="module")
def vocoder(small_icbhi, tmp_path_factory, mlflow_store):
    tmp = tmp_path_factory.mktemp("voc")
    return train_vocoder(small_cfg(small_icbhi, tmp), progress=False)


def test_training_logs_loss_examples_and_a_usable_vocoder(vocoder):
    assert vocoder["finished"] and vocoder["step"] == 4 and np.isfinite(vocoder["loss"])
    client = mlflow.MlflowClient()
    assert [m.step for m in client.get_metric_history(vocoder["run_id"], "loss")] == [2, 4]
    examples = {a.path for a in client.list_artifacts(vocoder["run_id"], "examples")}
    assert any(p.endswith("_generated.wav") for p in examples) and any(p.endswith(".png") for p in examples)
    assert (vocoder["vocoder"] / "model.safetensors").is_file()
    assert mlflow.get_run(vocoder["run_id"]).info.status == "FINISHED"


def test_stop_and_resume_gives_the_uninterrupted_weights(small_icbhi, tmp_path, vocoder, mlflow_store):
    part = train_vocoder(small_cfg(small_icbhi, tmp_path), stop_after=2, progress=False)
    assert not part["finished"] and part["step"] == 2
    # Where the epoch batcher stands is saved: 48 training cycles (8 patients x 6), batch 2, 2 batches drawn.
    saved = torch.load(part["folder"] / "last.pt", weights_only=True)["batcher"]
    assert saved == {"epoch": 0, "position": 2, "clips": 48, "batch_size": 2, "world": 1, "seed": 1}
    assert mlflow.get_run(part["run_id"]).info.status == "KILLED"
    done = train_vocoder(None, resume=part["folder"], progress=False)
    assert done["finished"] and done["run_id"] == part["run_id"]
    a, b = load_file(str(done["vocoder"] / "model.safetensors")), load_file(str(vocoder["vocoder"] / "model.safetensors"))
    assert all(np.array_equal(a[k].numpy(), b[k].numpy()) for k in a)


def test_synth_writes_the_set_and_resumes_to_the_same_bytes(small_icbhi, tmp_path, vocoder, monkeypatch):
    full = synthesize(vocoder["vocoder"], 3, tmp_path / "full", seed=5, batch_size=4, progress=False,
                      classes=["crackle", "wheeze"])
    assert full["counts"] == {"normal": 0, "crackle": 3, "wheeze": 3, "both": 0}
    rows = list(csv.DictReader(open(tmp_path / "full" / "manifest.csv")))
    assert [r["file"] for r in rows] == [f"{c}_{i:05d}.wav" for c in ("crackle", "wheeze") for i in range(3)]
    for r in rows:
        audio, rate = sf.read(tmp_path / "full" / r["file"])
        assert rate == 16000 and len(audio) == 251 * 256 and np.abs(audio).max() <= 1.0
        assert sf.info(tmp_path / "full" / r["file"]).subtype == "FLOAT"  # 32-bit float, as the reference writes
        assert r["source_recording"].startswith(r["patient"]) and r["seed"] == "5"
    real = synth_module._write_wav
    calls = []

    def dying(path, audio):
        if len(calls) == 4:
            raise KeyboardInterrupt
        calls.append(path)
        real(path, audio)

    monkeypatch.setattr(synth_module, "_write_wav", dying)
    with pytest.raises(KeyboardInterrupt):
        synthesize(vocoder["vocoder"], 3, tmp_path / "cut", seed=5, batch_size=4, progress=False,
                   classes=["crackle", "wheeze"])
    monkeypatch.setattr(synth_module, "_write_wav", real)
    again = synthesize(vocoder["vocoder"], 3, tmp_path / "cut", seed=5, batch_size=4, progress=False,
                       classes=["crackle", "wheeze"])
    assert again["kept"] == 4 and again["made"] == 2
    for r in rows:
        assert (tmp_path / "cut" / r["file"]).read_bytes() == (tmp_path / "full" / r["file"]).read_bytes()
    with pytest.raises(LungsoundError, match="another seed or vocoder"):
        synthesize(vocoder["vocoder"], 3, tmp_path / "full", seed=6, progress=False)


def test_evaluate_reports_per_class_distances(small_icbhi, tmp_path, vocoder, mlflow_store):
    synthesize(vocoder["vocoder"], 2, tmp_path / "set", seed=1, progress=False)
    out = evaluate_set(tmp_path / "set", progress=False)
    assert [r["class"] for r in out["rows"]] == ["normal", "crackle", "wheeze", "both"]
    assert all(np.isfinite(r["fd_logmel"]) and r["fd_logmel"] >= 0 for r in out["rows"])
    assert mlflow.get_run(out["run_id"]).data.metrics["fd_logmel_normal"] == pytest.approx(out["rows"][0]["fd_logmel"])


def test_frechet_distance_by_hand():
    a = np.array([[0.0, 0.0], [2.0, 0.0], [0.0, 2.0], [2.0, 2.0]])  # mean (1, 1), covariance (4/3) I
    assert frechet_distance(a, a) == pytest.approx(0.0, abs=1e-9)
    assert frechet_distance(a, a + 3.0) == pytest.approx(18.0)  # |(3, 3)|^2, same covariance
    # 2a: mean (2, 2), covariance (16/3) I; |(1, 1)|^2 = 2, trace 2 dims x (4/3 + 16/3 - 2 sqrt(64/9)) = 8/3
    assert frechet_distance(a, 2 * a) == pytest.approx(2.0 + 8.0 / 3.0)


def test_generate_commands_fail_in_one_line(tmp_path, capsys):
    assert main(["generate", "train", "train.steps=0"]) == 2
    assert "train.steps is out of range" in capsys.readouterr().err
    assert main(["generate", "synth", "--vocoder", str(tmp_path), "--per-class", "2", "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and str(tmp_path) in err
    assert main(["generate", "train", "--resume", str(tmp_path / "nothing.pt")]) == 2
    assert "no such file" in capsys.readouterr().err
