"""Issue 19, items 2, 8, 13 and 14: NaN is never a finding, predictions in bounded chunks, hub snapshots inside the
cache, and ONNX folders whose outputs and weight digests are checked."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from lungsound.cli import main
from lungsound.data.download import sha256_of
from lungsound.errors import LungsoundError
from lungsound.inference import Predictor, summarize
from lungsound.inference.batching import chunk_size
from lungsound.inference.result import Segment
from lungsound.models.folder import load_model, save_model
from tests.conftest import random_model

onnx = pytest.importorskip("onnx", reason="onnx is not installed")
pytest.importorskip("onnxruntime", reason="onnxruntime is not installed")


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> Path:
    return random_model(tmp_path_factory.mktemp("hard-inf") / "model")


def noise(seconds: float, sr: int, seed: int = 0) -> np.ndarray:
    return (0.1 * np.random.default_rng(seed).standard_normal(int(seconds * sr))).astype(np.float32)


def one_error(capsys, argv: list[str]) -> str:
    assert main(argv) == 2
    out, err = capsys.readouterr()
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("lungsound: error: "), err
    assert "nan%" not in out.lower() and "NORMAL" not in out
    return lines[0]


# --- 2. NaN is never a finding ---------------------------------------------------------------------------------------

def test_a_float_wav_with_one_absurd_sample_is_clipped_with_a_visible_warning(model, tmp_path, capsys):
    x = noise(3.0, 16000)
    x[1000] = 1e30
    wav = tmp_path / "glitch.wav"
    sf.write(wav, x, 16000, subtype="FLOAT")
    assert main(["predict", str(wav), "--checkpoint", str(model)]) == 0
    out = capsys.readouterr().out
    assert "nan" not in out.lower()
    assert ("warning: 1 corrupt sample value(s) beyond +-16 (up to 1e+30) were clipped to +-1; the rest of the "
            "recording is used as it is") in out
    pred = Predictor.from_checkpoint(model).predict(wav)
    clean = x.copy()
    clean[1000] = 1.0
    same = Predictor.from_checkpoint(model).predict(clean, 16000)
    assert [s.probabilities for s in pred.segments] == [s.probabilities for s in same.segments]
    assert pred.warnings[0].startswith("1 corrupt sample value(s)")


def test_float_data_that_is_mostly_beyond_full_scale_is_refused(model, tmp_path, capsys):
    wav = tmp_path / "int-scaled.wav"
    sf.write(wav, noise(3.0, 16000) * 32768, 16000, subtype="FLOAT")
    line = one_error(capsys, ["predict", str(wav), "--checkpoint", str(model)])
    assert line.startswith(f"lungsound: error: {wav}: ") and "not audio scaled to [-1, 1]" in line


def test_a_model_that_returns_nan_is_an_error_for_the_file(model, tmp_path, capsys):
    net, cfg, meta = load_model(model)
    with torch.no_grad():
        next(p for name, p in net.named_parameters() if name.endswith("bias")).fill_(float("nan"))
    broken = save_model(tmp_path / "nan-model", net, cfg, meta)
    wav = tmp_path / "ok.wav"
    sf.write(wav, noise(3.0, 16000), 16000)
    line = one_error(capsys, ["predict", str(wav), "--checkpoint", str(broken)])
    assert line.startswith(f"lungsound: error: {wav}: the model gives non-finite (NaN or infinite) probabilities for ")
    assert "no finding can be made from them" in line


def _wav_bytes(x: np.ndarray, sr: int) -> bytes:
    import io

    buf = io.BytesIO()
    sf.write(buf, x, sr, format="WAV", subtype="FLOAT")
    return buf.getvalue()


def _app_page(model_folder: Path, upload: bytes, monkeypatch, tmp_path):
    """The app on `model_folder` after uploading `upload` (a WAV file's bytes)."""
    from streamlit.testing.v1 import AppTest

    from tests.app_support import APP, TIMEOUT

    monkeypatch.setenv("LUNGSOUND_APP_MODEL", str(model_folder))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.chdir(tmp_path)
    at = AppTest.from_file(str(APP), default_timeout=TIMEOUT)
    at.run()
    at.file_uploader(key="upload").set_value(("upload.wav", upload, "audio/wav"))
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def test_the_app_shows_the_clipping_warning_and_no_finding_from_nan(model, tmp_path, monkeypatch):
    x = noise(3.0, 16000)
    x[1000] = 1e30
    at = _app_page(model, _wav_bytes(x, 16000), monkeypatch, tmp_path)
    assert any(w.value.startswith("1 corrupt sample value(s) beyond +-16") for w in at.warning)
    assert not any("nan" in str(m.value).lower() for m in list(at.markdown) + list(at.metric))
    net, cfg, meta = load_model(model)
    with torch.no_grad():
        next(p for name, p in net.named_parameters() if name.endswith("bias")).fill_(float("nan"))
    at = _app_page(save_model(tmp_path / "nan-model", net, cfg, meta), _wav_bytes(noise(3.0, 16000), 16000),
                   monkeypatch, tmp_path)
    assert any("cannot be analysed" in e.value and "non-finite (NaN or infinite) probabilities" in e.value
               for e in at.error), [e.value for e in at.error]
    assert not any(m.value.startswith("### ") for m in at.markdown)  # no result, no "No crackles or wheezes"


def test_a_calibration_temperature_of_1e_300_is_refused_when_the_folder_is_read(model, tmp_path, capsys):
    folder = Path(shutil.copytree(model, tmp_path / "hot"))
    meta = json.loads((folder / "meta.json").read_text())
    (folder / "meta.json").write_text(json.dumps({**meta, "calibration": {"temperature": 1e-300}}))
    wav = tmp_path / "ok.wav"
    sf.write(wav, noise(3.0, 16000), 16000)
    line = one_error(capsys, ["predict", str(wav), "--checkpoint", str(folder)])
    assert line == (f"lungsound: error: {folder}: meta.json: the calibration temperature must be a positive number "
                    "from 0.01 to 100, got 1e-300")


def test_summarize_never_turns_nan_into_normal():
    nan = {"normal": float("nan"), "crackle": float("nan"), "wheeze": float("nan"), "both": float("nan")}
    with pytest.raises(LungsoundError, match="NaN or infinite"):
        summarize([Segment(0.0, 2.0, nan)], "windows")


# --- 8. bounded chunks -----------------------------------------------------------------------------------------------

def test_a_long_recording_is_featurised_in_bounded_chunks_with_unchanged_probabilities(model, monkeypatch):
    import lungsound.inference.predictor as predictor_module

    x = noise(30 * 60, 4000)  # 30 minutes at 4 kHz
    predictor = Predictor.from_checkpoint(model, batch_size=16, threads=1)
    sizes = []
    real = predictor_module.compute_features_batch
    monkeypatch.setattr(predictor_module, "compute_features_batch",
                        lambda waves, cfg: sizes.append(len(waves)) or real(waves, cfg))
    pred = predictor.predict(x, 4000, segmentation="windows", max_seconds=None)
    n = len(pred.segments)
    assert n == 1799 and chunk_size(16) == 64  # 2-s windows every second
    assert sizes == [64] * (n // 64) + [n % 64]
    monkeypatch.setattr(predictor_module, "compute_features_batch", real)
    picked = list(range(0, n, 97)) + [n - 1]  # each segment alone, as one pass over all of them computed it
    spans = [(pred.segments[i].start, pred.segments[i].end) for i in picked]
    with torch.inference_mode():
        logits = predictor.model(torch.cat([predictor.model_inputs(pred.waveform, [s]) for s in spans]))
    expected = torch.softmax(logits, dim=1).numpy()
    got = np.array([list(pred.segments[i].probabilities.values()) for i in picked])
    assert np.abs(got - expected).max() < 1e-5


def test_resampling_runs_in_bounded_blocks_and_equals_torchaudio(monkeypatch):
    import torchaudio

    import lungsound.audio as audio

    x = noise(5 * 60, 4000)
    reference = torchaudio.transforms.Resample(4000, 16000)(torch.from_numpy(x)).numpy()
    monkeypatch.setattr(audio, "_BLOCK_VALUES", 1 << 16)
    lengths, real = [], torch.nn.functional.conv1d
    monkeypatch.setattr(torch.nn.functional, "conv1d",
                        lambda x, *a, **k: lengths.append(x.shape[-1]) or real(x, *a, **k))
    y = audio.resample(x, 4000, 16000)
    assert np.array_equal(y, reference)  # bit for bit
    steps = (1 << 16) // 15  # output steps per block: the kernel has 15 taps (4 kHz -> 16 kHz), one step per sample
    assert len(lengths) == -(-(len(x) + 1) // steps) and max(lengths) == steps + 14  # N + 1 steps in all


def test_the_breath_band_is_filtered_in_bounded_blocks_with_the_same_cycles(monkeypatch):
    from scipy import signal

    import lungsound.inference.segmentation as segmentation

    t = np.arange(90 * 16000) / 16000
    x = noise(90, 16000) * (0.2 + np.maximum(0, np.sin(2 * np.pi * t / 3.7))).astype(np.float32)  # 3.7-s breaths
    monkeypatch.setattr(segmentation, "BLOCK_SECONDS", 1000.0)  # one pass over the whole recording, as before
    one_pass = segmentation.detect_breath_cycles(x, 16000)
    energy = segmentation._band_energy(x, 16000, segmentation.BreathConfig())
    monkeypatch.setattr(segmentation, "BLOCK_SECONDS", 10.0)
    lengths, real = [], signal.sosfiltfilt
    monkeypatch.setattr(segmentation.signal, "sosfiltfilt", lambda sos, y: lengths.append(len(y)) or real(sos, y))
    assert segmentation.detect_breath_cycles(x, 16000) == one_pass and len(one_pass) > 15
    blocked = segmentation._band_energy(x, 16000, segmentation.BreathConfig())
    assert np.abs(blocked - energy).max() <= 1e-12 * energy.max()
    assert len(lengths) == 18 and max(lengths) == 14 * 16000  # 9 blocks of 10 s with 2-s margins, per call


# --- 13. hub snapshots lie inside the cache --------------------------------------------------------------------------

@pytest.fixture
def hub_cache(tmp_path, monkeypatch) -> Path:
    from huggingface_hub import constants

    cache = tmp_path / "hf-cache"
    (cache / "models--alice--m" / "snapshots").mkdir(parents=True)
    (cache / "models--alice--m" / "refs").mkdir()
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    return cache


def test_a_ref_walking_out_of_the_hub_cache_is_refused(model, hub_cache, tmp_path, capsys):
    shutil.copytree(model, tmp_path / "outside")
    (hub_cache / "models--alice--m" / "refs" / "main").write_text("../../../outside")
    with pytest.raises(LungsoundError, match="not a snapshot folder of .*refused"):
        Predictor.from_pretrained("alice/m")
    wav = tmp_path / "ok.wav"
    sf.write(wav, noise(3.0, 16000), 16000)
    line = one_error(capsys, ["predict", str(wav), "--model", "alice/m"])
    assert f"hub model alice/m: the hub cache names {tmp_path / 'outside'} as its snapshot" in line


def test_a_snapshot_file_linking_out_of_the_cache_is_refused(model, hub_cache):
    snapshot = hub_cache / "models--alice--m" / "snapshots" / ("a" * 40)
    snapshot.mkdir()
    (hub_cache / "models--alice--m" / "refs" / "main").write_text("a" * 40)
    for f in model.iterdir():
        (snapshot / f.name).symlink_to(f)  # the files are outside the cache
    with pytest.raises(LungsoundError, match=r"config.yaml in its cached snapshot leads to .*, outside the cache"):
        Predictor.from_pretrained("alice/m")


# --- 14. ONNX outputs and weight digests -----------------------------------------------------------------------------

@pytest.fixture(scope="module")
def exported(model, icbhi_dir, tmp_path_factory) -> Path:
    from lungsound.inference.onnx_export import export_checkpoint

    out = tmp_path_factory.mktemp("hard-onnx") / "export"
    return Path(export_checkpoint(model, out, data=icbhi_dir, n_check=4, log=lambda line: None)["folder"])


def graph(path: Path, classes: int = 4, outputs: int = 1, nan: bool = False) -> None:
    """A small graph shaped like an export (input (batch, frames, 128)): the mean frame times a (128, K) matrix, K =
    `classes`, times NaN when `nan`; `outputs` copies of it."""
    from onnx import TensorProto, helper, numpy_helper

    weight = numpy_helper.from_array(np.linspace(-1, 1, 128 * classes, dtype=np.float32).reshape(128, classes), "w")
    scale = numpy_helper.from_array(np.array(np.nan if nan else 1.0, dtype=np.float32), "s")
    nodes = [helper.make_node("ReduceMean", ["input"], ["m"], axes=[1], keepdims=0),
             helper.make_node("MatMul", ["m", "w"], ["z"]), helper.make_node("Mul", ["z", "s"], ["logits"])]
    names = ["logits"] + [f"copy{i}" for i in range(1, outputs)]
    nodes += [helper.make_node("Identity", ["logits"], [name]) for name in names[1:]]
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", "t", 128])],
                          [helper.make_tensor_value_info(n, TensorProto.FLOAT, ["batch", classes]) for n in names],
                          [weight, scale])
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]), str(path))


def swapped(exported: Path, dest: Path, record: bool, **shape) -> Path:
    """A copy of the export whose model.onnx is `graph(**shape)`; `record`: export.json names its digest too."""
    folder = Path(shutil.copytree(exported, dest))
    graph(folder / "model.onnx", **shape)
    if record:
        info = json.loads((folder / "export.json").read_text())
        info.setdefault("weights_sha256", {})["model.onnx"] = sha256_of(folder / "model.onnx")
        (folder / "export.json").write_text(json.dumps(info))
    return folder


def test_export_records_the_digest_of_every_weight_file(exported):
    info = json.loads((exported / "export.json").read_text())
    assert info["weights_sha256"] == {"model.onnx": sha256_of(exported / "model.onnx"),
                                      "model.safetensors": sha256_of(exported / "model.safetensors")}
    assert Predictor.from_checkpoint(exported, runtime="onnx").predict(noise(3.0, 16000), 16000).segments


def test_a_swapped_model_onnx_is_named_in_one_line(exported, tmp_path, capsys):
    folder = swapped(exported, tmp_path / "swapped", record=False)
    wav = tmp_path / "ok.wav"
    sf.write(wav, noise(3.0, 16000), 16000)
    line = one_error(capsys, ["predict", str(wav), "--checkpoint", str(folder), "--runtime", "onnx"])
    assert line == (f"lungsound: error: {folder}: model.onnx is not the file this folder was exported with: its "
                    "SHA-256 differs from the one export.json records (swapped or damaged; export the checkpoint "
                    "again)")


@pytest.mark.parametrize("shape, words", [
    ({"classes": 5}, "model.onnx gives outputs of shape ['batch', 5]; a lungsound classifier gives (batch, 4)"),
    ({"classes": 3}, "model.onnx gives outputs of shape ['batch', 3]; a lungsound classifier gives (batch, 4)"),
    ({"outputs": 2}, "model.onnx gives 2 outputs; a lungsound export gives one, 'logits' (batch, 4)"),
])
def test_graphs_with_other_outputs_than_the_classes_are_refused(exported, tmp_path, shape, words):
    folder = swapped(exported, tmp_path / "other", record=True, **shape)
    with pytest.raises(LungsoundError, match=r"^" + re.escape(f"{folder}: {words}")):
        Predictor.from_checkpoint(folder, runtime="onnx")


def test_a_model_giving_another_number_of_scores_is_refused_before_a_finding(model):
    _, cfg, meta = load_model(model)
    three = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.LazyLinear(3))  # its width shows only when it runs
    predictor = Predictor(three, cfg, meta, "cpu", source="three-class model")
    with pytest.raises(LungsoundError, match=r"^three-class model: the model gives outputs of shape \[\d+, 3\] for "
                                             r"\d+ segments; a lungsound classifier gives 4 per segment"):
        predictor.predict(noise(3.0, 16000), 16000)


def test_an_onnx_graph_returning_nan_is_an_error_never_normal(exported, tmp_path, capsys):
    folder = swapped(exported, tmp_path / "nan", record=True, nan=True)
    wav = tmp_path / "ok.wav"
    sf.write(wav, noise(3.0, 16000), 16000)
    line = one_error(capsys, ["predict", str(wav), "--checkpoint", str(folder), "--runtime", "onnx"])
    assert "the model gives non-finite (NaN or infinite) probabilities" in line


def test_an_export_without_digests_loads_with_a_warning(exported, tmp_path):
    folder = Path(shutil.copytree(exported, tmp_path / "old"))
    info = json.loads((folder / "export.json").read_text())
    del info["weights_sha256"]
    (folder / "export.json").write_text(json.dumps(info))
    with pytest.warns(UserWarning, match="export.json records no digest of model.onnx"):
        predictor = Predictor.from_checkpoint(folder, runtime="onnx")
    assert predictor.predict(noise(3.0, 16000), 16000).segments
