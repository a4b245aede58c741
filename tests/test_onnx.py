"""`lungsound export` and the onnx runtime: round trips on an AST, a CNN and a speech model, the exported folder on its
own, `predict --runtime onnx` against the torch runtime on real recordings, batching, threads, and bad inputs.

The AST is a tiny one trained here for a few seconds on real cycles to tell four loudness quartiles apart, so that its
classes vary from cycle to cycle with real margins (a random model gives every cycle the same class, which would make
an argmax agreement meaningless).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from lungsound.cli import main
from lungsound.config import load_config
from lungsound.data.download import sha256_of
from lungsound.errors import LungsoundError
from lungsound.inference import Predictor
from lungsound.inference.batching import available_cores, batch_size_for, working_bytes
from lungsound.inference.onnx_export import FP32_TOLERANCE, MIN_AGREEMENT, check_inputs, export_checkpoint
from lungsound.inference.onnx_folder import OnnxModel
from lungsound.models.build import build_model
from lungsound.models.folder import save_model
from tests.conftest import one_error

pytest.importorskip("onnxruntime", reason="onnxruntime is not installed")
RECORDINGS = ("104_1b1_Ll_sc_Litt3200", "107_2b3_Al_mc_AKGC417L")


def quiet(line: str) -> None:
    pass


@pytest.fixture(scope="module")
def ast_checkpoint(icbhi_dir, tmp_path_factory) -> Path:
    """A tiny AST (2-s input) trained for 40 full-batch steps on 64 real cycles to predict their loudness quartile."""
    cfg = load_config(None, ["model.name=ast_tiny", "data.duration=2.0"])
    torch.manual_seed(0)
    model = build_model(cfg)
    x, _ = check_inputs(cfg, icbhi_dir, 64)
    energy = x.mean(dim=(1, 2))
    y = torch.bucketize(energy, energy.quantile(torch.tensor([0.25, 0.5, 0.75])))
    opt = torch.optim.Adam(model.parameters(), lr=2e-3)
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        for _ in range(40):
            opt.zero_grad()
            torch.nn.functional.cross_entropy(model(x), y).backward()
            opt.step()
    finally:
        torch.set_num_threads(before)
    meta = {"selected_epoch": 1, "calibration": {"temperature": 1.7}}
    return save_model(tmp_path_factory.mktemp("onnx") / "ast" / "best", model.eval(), cfg, meta)


@pytest.fixture(scope="module")
def exports(ast_checkpoint, icbhi_dir) -> dict[str, Path]:
    fp32 = export_checkpoint(ast_checkpoint, int8=False, data=icbhi_dir, log=quiet)
    int8 = export_checkpoint(ast_checkpoint, int8=True, data=icbhi_dir, log=quiet)
    return {"fp32": Path(fp32["folder"]), "int8": Path(int8["folder"])}


def torch_logits(checkpoint: Path, x: torch.Tensor) -> np.ndarray:
    from lungsound.models.folder import load_model

    model, _, _ = load_model(checkpoint)
    with torch.inference_mode():
        return model(x).numpy()


def test_ast_export_fp32_equals_pytorch_and_int8_keeps_the_class(ast_checkpoint, exports, icbhi_dir):
    cfg = load_config(None, ["model.name=ast_tiny", "data.duration=2.0"])
    x, _ = check_inputs(cfg, icbhi_dir, 64)
    expected = torch_logits(ast_checkpoint, x)
    assert len(set(expected.argmax(axis=1))) >= 3  # the classes really vary over the real cycles
    fp32 = OnnxModel(exports["fp32"] / "model.onnx").logits(x)  # one batch of 64: the batch axis is dynamic
    assert fp32.shape == (64, 4)
    assert np.abs(fp32 - expected).max() <= FP32_TOLERANCE
    session = OnnxModel(exports["int8"] / "model.onnx", precision="int8")
    int8 = np.concatenate([session.logits(x[i:i + 1]) for i in range(len(x))])
    agreement = float((int8.argmax(axis=1) == fp32.argmax(axis=1)).mean())
    assert agreement >= MIN_AGREEMENT
    info = json.loads((exports["int8"] / "export.json").read_text())
    assert info["precision"] == "int8" and info["check"]["inputs"] == 64
    assert info["check"]["argmax_agreement"] == pytest.approx(agreement)
    assert info["check"]["fp32_max_abs_logit_diff"] <= FP32_TOLERANCE
    assert 0 < info["check"]["max_probability_diff"] < 0.2 and info["calibration_temperature"] == 1.7
    assert info["sizes_bytes"]["model.onnx"] < 0.8 * json.loads(
        (exports["fp32"] / "export.json").read_text())["sizes_bytes"]["model.onnx"]
    for name in ("config.yaml", "meta.json", "model.safetensors"):
        assert (exports["int8"] / name).read_bytes() == (ast_checkpoint / name).read_bytes()


def test_cnn_export_round_trip_and_gradcam_through_the_exported_folder(icbhi_dir, tmp_path):
    cfg = load_config(None, ["model.name=cnn", "model.params={arch: resnet10t}", "data.duration=2.0"])
    torch.manual_seed(0)
    checkpoint = save_model(tmp_path / "cnn", build_model(cfg), cfg, {"selected_epoch": 1})
    info = export_checkpoint(checkpoint, data=icbhi_dir, n_check=8, log=quiet)
    assert info["check"]["fp32_max_abs_logit_diff"] <= FP32_TOLERANCE and info["check"]["argmax_agreement"] == 1.0
    x, _ = check_inputs(cfg, icbhi_dir, 8)
    assert np.abs(OnnxModel(Path(info["folder"]) / "model.onnx").logits(x)
                  - torch_logits(checkpoint, x)).max() <= FP32_TOLERANCE
    predictor = Predictor.from_checkpoint(info["folder"], runtime="onnx")
    pred = predictor.predict(icbhi_dir / "audio_and_txt_files" / f"{RECORDINGS[0]}.wav")
    explanation = predictor.explain(pred, 0)
    assert explanation.method == "grad-cam" and explanation.heatmap.shape[1] == 128
    assert predictor.card["runtime"] == "ONNX Runtime fp32"


def test_speech_model_exports(icbhi_dir, tmp_path):
    cfg = load_config(None, ["model.name=wav2vec2_tiny", "data.input=waveform", "augment.specaug=false",
                             "data.duration=2.0"])
    torch.manual_seed(0)
    checkpoint = save_model(tmp_path / "speech", build_model(cfg), cfg, {"selected_epoch": 1})
    info = export_checkpoint(checkpoint, data=icbhi_dir, n_check=8, log=quiet)
    assert info["input"]["shape"] == ["batch", 32000] and info["input"]["kind"] == "waveform"
    assert info["check"]["fp32_max_abs_logit_diff"] <= FP32_TOLERANCE


def test_exported_folder_works_without_the_original_checkpoint(ast_checkpoint, icbhi_dir, tmp_path):
    source = shutil.copytree(ast_checkpoint, tmp_path / "run" / "best")
    folder = Path(export_checkpoint(source, int8=True, data=icbhi_dir, n_check=8, log=quiet)["folder"])
    assert folder == tmp_path / "run" / "best-onnx-int8"
    shutil.rmtree(source)
    predictor = Predictor.from_checkpoint(folder, runtime="onnx")
    assert predictor.runtime == "onnx" and predictor.batch_size == 1 and predictor.temperature == 1.7
    audio = icbhi_dir / "audio_and_txt_files" / f"{RECORDINGS[0]}.wav"
    pred = predictor.predict(audio, annotation=audio.with_suffix(".txt"))
    assert len(pred.segments) == 7  # the annotated cycles
    assert predictor.explain(pred, 2).method == "attention-rollout"  # with the folder's own PyTorch weights


def _predict_json(capsys, checkpoint: Path, runtime: str, files: list[Path]) -> list[dict]:
    code = main(["predict", *map(str, files), "--checkpoint", str(checkpoint), "--runtime", runtime,
                 "--segmentation", "windows", "--json"])
    out, err = capsys.readouterr()
    assert code == 0, err
    return json.loads(out)


@pytest.fixture(scope="module")
def torch_predictions(ast_checkpoint, icbhi_dir) -> list[dict]:
    """`lungsound predict --runtime torch --segmentation windows --json` on the real recordings."""
    import contextlib
    import io

    out = io.StringIO()
    files = [str(icbhi_dir / "audio_and_txt_files" / f"{stem}.wav") for stem in RECORDINGS]
    with contextlib.redirect_stdout(out):
        assert main(["predict", *files, "--checkpoint", str(ast_checkpoint), "--segmentation", "windows",
                     "--json"]) == 0
    return json.loads(out.getvalue())


@pytest.mark.parametrize("precision", ["fp32", "int8"])
def test_predict_runtime_onnx_covers_the_recording_and_matches_torch(exports, torch_predictions, icbhi_dir, capsys,
                                                                     precision):
    files = [icbhi_dir / "audio_and_txt_files" / f"{stem}.wav" for stem in RECORDINGS]
    fast = _predict_json(capsys, exports[precision], "onnx", files)
    slow = torch_predictions
    assert [a["file"] for a in fast] == [b["file"] for b in slow] == list(map(str, files))
    segments = 0
    for a, b in zip(fast, slow):
        starts = [s["start"] for s in a["segments"]]
        ends = [s["end"] for s in a["segments"]]
        assert starts[0] == 0.0 and ends[-1] == pytest.approx(a["duration"], abs=1e-3)
        assert all(s <= e for s, e in zip(starts[1:], ends[:-1]))  # no gaps
        p = np.array([list(s["probabilities"].values()) for s in a["segments"]])
        q = np.array([list(s["probabilities"].values()) for s in b["segments"]])
        assert np.allclose(p.sum(axis=1), 1.0, atol=1e-6) and p.shape == q.shape
        if precision == "fp32":
            assert np.abs(p - q).max() <= 1e-4
        else:
            assert (p.argmax(axis=1) == q.argmax(axis=1)).mean() >= MIN_AGREEMENT
            assert np.abs(p - q).max() < 0.1
        segments += len(p)
    assert segments >= 20


def test_batches_follow_the_memory_budget(monkeypatch):
    base = load_config(None, ["model.name=ast"])  # AST-base on 8 s: 950 tokens, 12 heads, 768 dims
    assert working_bytes(base) == 4 * (2 * 12 * 950 ** 2 + 12 * 950 * 768)
    assert batch_size_for(base, budget=2**30) == 8
    assert batch_size_for(base, budget=10**6) == 1
    tiny = load_config(None, ["model.name=ast_tiny", "data.duration=2.0"])
    assert batch_size_for(tiny, budget=2**30) == 64
    speech = load_config(None, ["model.name=wav2vec2_base", "data.input=waveform", "augment.specaug=false"])
    assert working_bytes(speech) > 2 * 4 * 512 * 128000 // 5  # the first conv's output alone
    monkeypatch.setenv("LUNGSOUND_BATCH_MB", "200")
    assert batch_size_for(base) == 1  # 200 MiB over 122 MB per segment


def test_a_recording_is_featurised_once_and_classified_in_batches(ast_checkpoint, icbhi_dir, monkeypatch):
    import lungsound.inference.predictor as predictor_module

    audio = icbhi_dir / "audio_and_txt_files" / f"{RECORDINGS[1]}.wav"
    whole = Predictor.from_checkpoint(ast_checkpoint).predict(audio, segmentation="windows")
    featurised, calls = [], []
    real_features = predictor_module.compute_features_batch
    monkeypatch.setattr(predictor_module, "compute_features_batch",
                        lambda waves, cfg: featurised.append(len(waves)) or real_features(waves, cfg))
    predictor = Predictor.from_checkpoint(ast_checkpoint, batch_size=3, threads=1)
    predictor.model.register_forward_pre_hook(lambda m, args: calls.append((len(args[0]), torch.get_num_threads())))
    threads = torch.get_num_threads()
    pred = predictor.predict(audio, segmentation="windows")
    n = len(pred.segments)
    assert featurised == [n]
    assert [size for size, _ in calls] == [3] * (n // 3) + ([n % 3] if n % 3 else [])
    assert {t for _, t in calls} == {1} and torch.get_num_threads() == threads  # set for the call, then restored
    p = np.array([list(s.probabilities.values()) for s in pred.segments])
    q = np.array([list(s.probabilities.values()) for s in whole.segments])
    assert np.abs(p - q).max() < 1e-5


def test_onnx_session_uses_the_cores(exports, monkeypatch):
    monkeypatch.delenv("LUNGSOUND_THREADS", raising=False)
    session = OnnxModel(exports["fp32"] / "model.onnx")
    assert session.session.get_session_options().intra_op_num_threads == available_cores() == session.threads
    assert OnnxModel(exports["fp32"] / "model.onnx", threads=1).session.get_session_options().intra_op_num_threads == 1
    monkeypatch.setenv("LUNGSOUND_THREADS", "3")
    assert Predictor.from_checkpoint(exports["fp32"], runtime="onnx").model.session.get_session_options() \
        .intra_op_num_threads == 3


def test_export_without_torch_weights_has_no_explanation(ast_checkpoint, icbhi_dir, tmp_path):
    folder = Path(export_checkpoint(ast_checkpoint, tmp_path / "lean", data=icbhi_dir, n_check=4, torch_weights=False,
                                    log=quiet)["folder"])
    assert not (folder / "model.safetensors").exists()
    predictor = Predictor.from_checkpoint(folder, runtime="onnx")
    assert not predictor.can_explain and "exported without its PyTorch weights" in predictor.card["explanation"]
    pred = predictor.predict(icbhi_dir / "audio_and_txt_files" / f"{RECORDINGS[0]}.wav")
    with pytest.raises(LungsoundError, match="this fast ONNX model has no explanation"):
        predictor.explain(pred, 0)
    with pytest.raises(LungsoundError, match="holds only the ONNX model"):
        Predictor.from_checkpoint(folder, runtime="torch")


def test_bad_inputs_give_one_line_errors(ast_checkpoint, exports, tmp_path, capsys):
    not_a_checkpoint = tmp_path / "notes"
    not_a_checkpoint.mkdir()
    (not_a_checkpoint / "readme.txt").write_text("not a model")
    line = one_error(capsys, ["export", "--checkpoint", str(not_a_checkpoint)])
    assert "not a lungsound checkpoint: model.safetensors is missing" in line
    assert not (tmp_path / "notes-onnx").exists()
    line = one_error(capsys, ["export", "--checkpoint", str(ast_checkpoint), "--out", str(ast_checkpoint)])
    assert "would overwrite or sit inside what it is made from" in line
    audio = tmp_path / "a.wav"
    import soundfile as sf

    sf.write(audio, 0.1 * np.random.default_rng(0).standard_normal(16000 * 3).astype(np.float32), 16000)
    line = one_error(capsys, ["predict", str(audio), "--checkpoint", str(ast_checkpoint), "--runtime", "onnx"])
    assert f"{ast_checkpoint}: no model.onnx here" in line
    broken = shutil.copytree(exports["fp32"], tmp_path / "broken")
    (broken / "model.onnx").write_bytes(b"not an onnx model")
    line = one_error(capsys, ["predict", str(audio), "--checkpoint", str(broken), "--runtime", "onnx"])
    assert "model.onnx is not the file this folder was exported with" in line  # its digest is checked first
    info = json.loads((broken / "export.json").read_text())
    info["weights_sha256"]["model.onnx"] = sha256_of(broken / "model.onnx")
    (broken / "export.json").write_text(json.dumps(info))
    line = one_error(capsys, ["predict", str(audio), "--checkpoint", str(broken), "--runtime", "onnx"])
    assert "cannot load model.onnx with ONNX Runtime" in line
    (broken / "export.json").write_text("{}")
    line = one_error(capsys, ["predict", str(audio), "--checkpoint", str(broken), "--runtime", "onnx"])
    assert "export.json must be an object with precision" in line
    with pytest.raises(LungsoundError, match="runtime must be one of torch, onnx"):
        Predictor.from_checkpoint(exports["fp32"], runtime="tensorrt")
