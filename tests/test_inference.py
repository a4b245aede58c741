"""Whole-recording inference: the Predictor contract, input checks, calibration, explanations and MLflow loading
(segmentation and the summary rule: tests/test_segmentation.py)."""

from __future__ import annotations

import json
import re
import warnings
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from lungsound.config import load_config
from lungsound.data.annotations import Cycle, read_annotation
from lungsound.data.cycles import CycleConfig, load_cycles
from lungsound.errors import LungsoundError
from lungsound.features.fbank import compute_features_batch
from lungsound.inference import Predictor
from lungsound.inference.explaining import fold_samples
from lungsound.models.build import build_model
from lungsound.models.folder import META_FILE, save_model
from tests.test_segmentation import breathing

SR = 16000
CLASSES = ("normal", "crackle", "wheeze", "both")


# ---------------------------------------------------------------------------------------------------------------------
# Fixtures and helpers
# ---------------------------------------------------------------------------------------------------------------------


def make_checkpoint(folder: Path, model: str = "ast_tiny", meta: dict | None = None, seed: int = 0) -> Path:
    torch.manual_seed(seed)
    speech = model.endswith("_tiny") and model != "ast_tiny"
    waveform = ["data.input=waveform", "augment.specaug=false"] if speech else []
    cfg = load_config(None, [f"model.name={model}", "data.duration=2.0", "data.root=/data/icbhi", *waveform])
    return save_model(folder, build_model(cfg), cfg, meta or {"selected_epoch": 3, "protocol": "clean",
                                                              "metrics": {"test_sp": 80.0, "test_se": 40.0,
                                                                          "test_score": 60.0}})


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    return make_checkpoint(tmp_path_factory.mktemp("ckpt") / "model")


@pytest.fixture(scope="module")
def predictor(checkpoint) -> Predictor:
    return Predictor.from_checkpoint(checkpoint, device="cpu")


@pytest.fixture(scope="module")
def speech_predictor(tmp_path_factory) -> Predictor:
    """A random tiny wav2vec 2.0 (2-s waveform input, repeat padding)."""
    return Predictor.from_checkpoint(make_checkpoint(tmp_path_factory.mktemp("speech") / "model", "wav2vec2_tiny"),
                                     device="cpu")


def probabilities(pred) -> np.ndarray:
    return np.array([[s.probabilities[c] for c in CLASSES] for s in pred.segments])


def assert_prediction(pred, duration: float | None = None):
    """Probabilities of every segment sum to 1, the summary and to_dict follow the contract exactly."""
    assert pred.segments, "no segments"
    for s in pred.segments:
        assert set(s.probabilities) == set(CLASSES)
        assert abs(sum(s.probabilities.values()) - 1.0) < 1e-5
        assert all(0.0 <= p <= 1.0 for p in s.probabilities.values())
        assert 0.0 <= s.start < s.end <= pred.duration + 1e-9
    d = pred.to_dict()
    assert set(d) == {"file", "duration", "summary", "warnings", "segments"}
    assert set(d["summary"]) == {"label", "probability", "probabilities", "text", "crackle_segments",
                                 "wheeze_segments"}
    assert d["summary"]["label"] in ("normal", "crackles", "wheezes", "both")
    assert abs(sum(d["summary"]["probabilities"].values()) - 1.0) < 1e-5
    assert all(set(s) == {"start", "end", "probabilities"} for s in d["segments"])
    assert json.loads(json.dumps(d)) == d
    assert pred.waveform.dtype == np.float32 and len(pred.waveform) == round(pred.duration * SR)
    if duration is not None:
        assert abs(pred.duration - duration) < 1e-3


def assert_covers(pred):
    """Auto segmentation without annotation: from 0 to the end, consecutive (breath) or overlapping (windows)."""
    segs = pred.segments
    assert segs[0].start == 0.0
    assert segs[-1].end == pytest.approx(pred.duration, abs=1e-9)
    for a, b in zip(segs[:-1], segs[1:]):
        if pred.segmentation == "breath":
            assert b.start == a.end
        else:
            assert a.start < b.start <= a.end


# ---------------------------------------------------------------------------------------------------------------------
# Predictor
# ---------------------------------------------------------------------------------------------------------------------


def test_predictor_properties_and_card(predictor):
    assert predictor.classes == CLASSES
    assert predictor.temperature == 1.0 and predictor.calibrated is False
    card = predictor.card
    assert card["trained_on"] == "/data/icbhi" and card["synthetic"] is False
    assert card["test_scores"] == {"sp": 80.0, "se": 40.0, "score": 60.0}
    assert card["selected_epoch"] == 3 and card["protocol"] == "clean" and card["calibration"] is None
    assert isinstance(card["intended_use"], str) and all(isinstance(x, str) for x in card["limitations"])


def test_segments_are_cut_exactly_like_training_cycles(predictor, tmp_path):
    """The model input of a span equals the training pipeline's (load_cycles + fbank) for the same cycle."""
    x, _ = breathing(duration=6.0)
    wav = tmp_path / "rec.wav"
    sf.write(wav, x, 8000, subtype="FLOAT")  # a different rate: the predictor resamples like training
    cycles = [Cycle(0.3, 1.1, 0, 0), Cycle(1.1, 5.9, 0, 0)]
    expected = compute_features_batch(load_cycles(wav, cycles, CycleConfig(duration=2.0)))
    pred = predictor.predict(wav, annotation=[(c.start, c.end) for c in cycles])
    got = predictor.model_inputs(pred.waveform, [(c.start, c.end) for c in cycles])
    torch.testing.assert_close(got, expected)
    assert pred.segmentation == "cycles" and [(s.start, s.end) for s in pred.segments] == [(0.3, 1.1), (1.1, 5.9)]


def test_calibrated_probabilities_are_softmax_of_logits_over_t(checkpoint, tmp_path):
    folder = tmp_path / "cal"
    make_checkpoint(folder)
    meta = json.loads((folder / META_FILE).read_text())
    meta["calibration"] = {"temperature": 2.5, "ece_before": 0.2, "ece_after": 0.05, "n": 100}
    (folder / META_FILE).write_text(json.dumps(meta))
    p = Predictor.from_checkpoint(folder, device="cpu")
    assert p.calibrated and p.temperature == 2.5 and p.card["calibration"]["ece_after"] == 0.05
    x, _ = breathing(duration=8.0)
    pred = p.predict(x, SR, segmentation="windows")
    with torch.no_grad():
        logits = p.model(p.model_inputs(pred.waveform, [(s.start, s.end) for s in pred.segments])).double()
    expected = torch.softmax(logits / 2.5, dim=1).numpy()
    np.testing.assert_allclose(probabilities(pred), expected, atol=1e-5)


def test_inputs_path_bytes_and_array_agree(predictor, tmp_path):
    x, _ = breathing(duration=9.0)
    wav = tmp_path / "a.wav"
    sf.write(wav, x, SR, subtype="FLOAT")
    a = predictor.predict(wav, segmentation="windows")
    b = predictor.predict(wav.read_bytes(), name="upload.wav", segmentation="windows")
    c = predictor.predict(x, SR, segmentation="windows")
    assert a.file == str(wav) and b.file == "upload.wav" and c.file == "array"
    for other in (b, c):
        np.testing.assert_allclose(probabilities(other), probabilities(a), atol=1e-6)
    assert_prediction(a, 9.0)
    assert_covers(a)


def test_auto_segmentation_uses_breath_then_windows(predictor):
    x, _ = breathing(period=3.0, duration=15.0)
    pred = predictor.predict(x, SR)
    assert pred.segmentation == "breath" and len(pred.segments) == 5 and pred.warnings == []
    assert_covers(pred)
    steady = 0.1 * np.random.default_rng(0).standard_normal(10 * SR).astype(np.float32)
    pred = predictor.predict(steady, SR)
    assert pred.segmentation == "windows" and "sliding windows" in pred.warnings[0]
    assert_covers(pred)


@pytest.mark.parametrize("make, message", [
    (lambda p: p.predict(b"hello, this is not a sound file", name="notes.wav"), "notes.wav: not audio"),
    (lambda p: p.predict(b"", name="empty.wav"), "empty.wav: empty"),
    (lambda p: p.predict(np.zeros(4 * SR, np.float32), SR, name="quiet"), "quiet: silent"),
    (lambda p: p.predict(np.full(SR // 2, 0.1, np.float32), SR, name="blip"), "blip: too short: 0.50 s"),
    (lambda p: p.predict(np.ones(130 * 4000, np.float32), 4000, name="long"), "long: too long"),
    (lambda p: p.predict(np.ones(SR, np.float32)), "needs its sample_rate"),
    (lambda p: p.predict(np.ones((2, SR), np.float32), SR), "1-D float array"),
    (lambda p: p.predict(breathing(duration=3.0)[0], SR, segmentation="cycles"), "needs an annotation"),
    (lambda p: p.predict(np.ones(3 * SR, np.float32), SR, segmentation="magic"), "segmentation must be one of"),
    (lambda p: p.predict(breathing(duration=3.0)[0], SR, annotation=[(5.0, 6.0)]), "no annotated cycle"),
    (lambda p: p.predict(np.full(3 * SR, 0.25, np.float32), SR, name="dc"),
     "dc: constant: the recording is a flat level of 0.25 (a DC offset) with no sound"),
    (lambda p: p.predict(3.5), "cannot analyse a float"),
])
def test_bad_inputs_give_clear_errors(predictor, make, message):
    with pytest.raises(LungsoundError, match=re.escape(message)):
        make(predictor)


def test_too_long_file_and_clipping_warning(predictor, tmp_path):
    wav = tmp_path / "long.wav"
    sf.write(wav, np.zeros(130 * 4000, np.float32) + 0.01, 4000)
    with pytest.raises(LungsoundError, match="long.wav: too long: 130.00 s"):
        predictor.predict(wav)
    x, _ = breathing(duration=6.0)
    clipped = np.clip(x * 40, -1, 1)
    pred = predictor.predict(clipped, SR)
    assert any(w.startswith("heavily clipped") for w in pred.warnings)
    assert not any("clipped" in w for w in predictor.predict(x, SR).warnings)


def test_annotation_past_the_end_is_cut_with_a_warning(predictor):
    x, _ = breathing(duration=5.0)
    pred = predictor.predict(x, SR, annotation=[(0.5, 2.0), (2.0, 6.0), (7.0, 8.0)])
    assert [(s.start, s.end) for s in pred.segments] == [(0.5, 2.0), (2.0, 5.0)]
    assert len(pred.warnings) == 2 and "skipped" in pred.warnings[0] and "cut" in pred.warnings[1]


def _recordings(folder: Path, pattern: str, limit: int | None = None) -> list[Path]:
    files = sorted(folder.glob(pattern))
    if not files:
        pytest.skip(f"no recordings in {folder}")
    return files[:limit] if limit else files


def check_icbhi_recordings(predictor, wavs: list[Path]):
    for wav in wavs:
        info = sf.info(wav)
        auto = predictor.predict(wav)
        assert_prediction(auto, info.duration)
        assert auto.segmentation in ("breath", "windows")
        assert_covers(auto)
        annotated = predictor.predict(wav, annotation=wav.with_suffix(".txt"))
        assert_prediction(annotated, info.duration)
        cycles = read_annotation(wav.with_suffix(".txt"))
        assert annotated.segmentation == "cycles"
        assert [(s.start, s.end) for s in annotated.segments] == [(c.start, min(c.end, annotated.duration))
                                                                   for c in cycles if c.start < annotated.duration]


def check_kauh_recordings(predictor, wavs: list[Path]):
    for wav in wavs:
        pred = predictor.predict(wav)
        assert_prediction(pred, sf.info(wav).duration)
        assert_covers(pred)
        assert pred.sample_rate == 4000


def test_predict_three_icbhi_recordings_with_and_without_annotation(predictor, icbhi_dir):
    # 44.1 kHz 24-bit, 44.1 kHz 16-bit and 4 kHz (Litt3200) recordings
    wavs = _recordings(icbhi_dir / "audio_and_txt_files", "*.wav")
    picked = [w for w in wavs if w.stem in ("102_1b1_Ar_sc_Meditron", "103_2b2_Ar_mc_LittC2SE",
                                            "104_1b1_Ar_sc_Litt3200")]
    check_icbhi_recordings(predictor, picked or wavs[:3])


def test_predict_three_kauh_recordings(predictor, kauh_dir):
    check_kauh_recordings(predictor, _recordings(kauh_dir / "AudioFiles", "*.wav", limit=3))


@pytest.mark.slow
def test_predict_every_icbhi_recording_with_and_without_annotation(predictor, icbhi_dir):
    check_icbhi_recordings(predictor, _recordings(icbhi_dir / "audio_and_txt_files", "*.wav"))


@pytest.mark.slow
def test_predict_every_kauh_recording(predictor, kauh_dir):
    check_kauh_recordings(predictor, _recordings(kauh_dir / "AudioFiles", "*.wav"))


def test_explain_a_segment_ast_and_cnn(predictor, tmp_path):
    x, _ = breathing(duration=10.0)
    pred = predictor.predict(x, SR)
    seg = pred.segments[1]
    ex = predictor.explain(pred, 1)
    frames = 1 + (min(int(round((seg.end - seg.start) * SR)), 2 * SR) - 400) // 160  # the model sees 2 s at most
    assert ex.method == "attention-rollout" and ex.fbank.shape == ex.heatmap.shape
    assert abs(ex.fbank.shape[0] - frames) <= 1 and ex.fbank.shape[1] == 128
    assert ex.heatmap.min() == 0.0 and ex.heatmap.max() == 1.0
    assert (ex.start, ex.end) == (seg.start, pytest.approx(min(seg.end, seg.start + 2.0), abs=1e-4))
    with pytest.raises(LungsoundError, match="out of range"):
        predictor.explain(pred, len(pred.segments))

    cnn = Predictor.from_checkpoint(make_checkpoint(tmp_path / "cnn", model="resnet18"), device="cpu")
    pred = cnn.predict(x, SR)
    ex = cnn.explain(pred, 0)
    assert ex.method == "grad-cam" and ex.heatmap.shape == ex.fbank.shape
    assert 0.0 <= ex.heatmap.min() and ex.heatmap.max() <= 1.0
    assert ex.target in CLASSES


def test_from_mlflow_run_id_runs_uri_and_registered_model(checkpoint, mlflow_store, tmp_path):
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=mlflow_store)
    exp = client.create_experiment("predict-test", artifact_location=(tmp_path / "artifacts").as_uri())
    run = client.create_run(exp)
    client.log_artifacts(run.info.run_id, str(checkpoint), "model")
    client.set_terminated(run.info.run_id)
    client.create_registered_model("lung")
    client.create_model_version("lung", source=f"runs:/{run.info.run_id}/model", run_id=run.info.run_id)

    x, _ = breathing(duration=6.0)
    reference = Predictor.from_checkpoint(checkpoint, device="cpu").predict(x, SR, segmentation="windows")
    for uri in (run.info.run_id, f"runs:/{run.info.run_id}/model", "models:/lung/1"):
        p = Predictor.from_mlflow(uri, device="cpu")
        assert p.card["source"] == uri
        pred = p.predict(x, SR, segmentation="windows")
        np.testing.assert_allclose(probabilities(pred), probabilities(reference), atol=1e-6)
    with pytest.raises(LungsoundError, match="not found"):
        Predictor.from_mlflow("models:/lung/7")
    with pytest.raises(LungsoundError, match="no artifact"):
        Predictor.from_mlflow("0123456789abcdef0123456789abcdef")


# ---------------------------------------------------------------------------------------------------------------------
# Waveform (speech) models, decoder warnings, constant signals
# ---------------------------------------------------------------------------------------------------------------------


def test_speech_model_predicts_three_icbhi_recordings(speech_predictor, icbhi_dir):
    assert speech_predictor.fbank_cfg is None
    card = speech_predictor.card
    assert card["input"].startswith("raw waveform") and card["explanation_method"] == "gradient-x-input"
    assert "gradient x input time saliency" in card["explanation"]
    wavs = _recordings(icbhi_dir / "audio_and_txt_files", "*.wav")
    picked = [w for w in wavs if w.stem in ("102_1b1_Ar_sc_Meditron", "103_2b2_Ar_mc_LittC2SE",
                                            "104_1b1_Ar_sc_Litt3200")]
    check_icbhi_recordings(speech_predictor, picked or wavs[:3])


def test_spectrogram_models_card_names_their_input_and_explanation(predictor, tmp_path):
    card = predictor.card
    assert card["input"].startswith("spectrogram") and card["explanation_method"] == "attention-rollout"
    assert card["explanation"].startswith("attention rollout")
    cnn = Predictor.from_checkpoint(make_checkpoint(tmp_path / "cnn", model="resnet18"), device="cpu")
    assert cnn.card["explanation"].startswith("Grad-CAM") and cnn.card["input"].startswith("spectrogram")


def test_fold_samples_by_hand():
    r = np.arange(10.0)  # relevance over a padded input of L = 10 samples, segment of n = 4
    # repeat: input sample i shows segment sample i % 4; means (0+4+8)/3, (1+5+9)/3, (2+6)/2, (3+7)/2
    np.testing.assert_allclose(fold_samples(r, 4, CycleConfig(sample_rate=5, duration=2.0, pad="repeat")), [4, 5, 4, 5])
    # zero: the segment sits at offset (10 - 4) // 2 = 3
    np.testing.assert_allclose(fold_samples(r, 4, CycleConfig(sample_rate=5, duration=2.0, pad="zero")), [3, 4, 5, 6])
    # a longer segment: the model saw its first L samples
    np.testing.assert_allclose(fold_samples(r, 25, CycleConfig(sample_rate=5, duration=2.0)), r)


@pytest.mark.parametrize("span, zero_from", [((2.0, 4.0), 100), ((2.5, 4.0), 50)])
def test_speech_explanation_is_a_time_saliency_on_the_segments_frames(speech_predictor, span, zero_from):
    """Noise from 0 to 3 s, exact zeros from 3 to 5 s. A segment ending at 4 s has zeros from 3 s on; gradient x input
    is 0 wherever the input is 0, so its time saliency must be 0 exactly from frame (3 - start) / 10 ms on and not
    before. The 2-s segment fills the model's input; the 1.5-s one is repeat-padded (its zeros are zeros in every
    copy)."""
    x, _ = breathing(duration=5.0)
    x[3 * SR:] = 0.0
    pred = speech_predictor.predict(x, SR, annotation=[span])
    ex = speech_predictor.explain(pred, 0)
    n = int(span[1] * SR) - int(span[0] * SR)
    frames = 1 + (n - 400) // 160
    assert ex.kind == "time" and ex.method == "gradient-x-input"
    assert ex.fbank.shape == (frames, 128) and ex.heatmap.shape == (frames,)
    assert ex.heatmap.min() == 0.0 and ex.heatmap.max() == 1.0
    assert not ex.heatmap[zero_from:].any()
    assert (ex.heatmap[:zero_from] > 0).mean() > 0.9 and ex.heatmap[zero_from - 1] > 0
    assert (ex.start, ex.end) == (span[0], pytest.approx(span[1], abs=1e-4))
    assert ex.target == max(pred.segments[0].probabilities, key=pred.segments[0].probabilities.get)
    np.testing.assert_allclose(ex.fbank, compute_fbank_of(pred.waveform, span), atol=1e-5)


def compute_fbank_of(waveform: np.ndarray, span: tuple[float, float]) -> np.ndarray:
    """The display fbank of a segment computed independently: Kaldi fbank of the faded recording's samples."""
    from lungsound.data.cycles import fade_recording
    from lungsound.features.fbank import kaldi_fbank

    faded = fade_recording(waveform, CycleConfig(duration=2.0))
    return kaldi_fbank(faded[int(span[0] * SR):int(span[1] * SR)]).numpy()


def test_speech_explanation_of_windows_lines_up_with_ast_frames(speech_predictor, predictor):
    """Same recording and segment: the time heatmap has one value per frame of the fbank an AST explanation shows."""
    x, _ = breathing(duration=10.0)
    pred = speech_predictor.predict(x, SR, segmentation="windows")
    ex = speech_predictor.explain(pred, 1)
    ast = predictor.explain(predictor.predict(x, SR, segmentation="windows"), 1)
    assert ast.kind == "time-frequency" and ast.heatmap.shape == ast.fbank.shape
    assert ex.kind == "time" and ex.heatmap.shape == (len(ast.fbank),)
    np.testing.assert_allclose(ex.fbank, ast.fbank, atol=1e-5)
    assert (ex.start, ex.end) == (ast.start, ast.end)


def test_truncated_wav_warning_reaches_the_prediction(predictor, tmp_path):
    x, _ = breathing(duration=6.0)
    full = tmp_path / "full.wav"
    sf.write(full, x, SR, subtype="PCM_16")
    data = full.read_bytes()
    cut = tmp_path / "cut.wav"
    cut.write_bytes(data[:44 + 2 * 4 * SR])  # the header still declares 6 s; 4 s of samples are left
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        from_file = predictor.predict(cut)
        from_bytes = predictor.predict(cut.read_bytes(), name="upload.wav")
    assert not [w for w in caught if "truncated" in str(w.message)]  # in the prediction, not re-emitted
    for pred in (from_file, from_bytes):
        assert pred.duration == pytest.approx(4.0)
        assert pred.warnings[0] == ("truncated WAV: the header declares 96000 frames (6.00 s) but the file holds "
                                    "64000 (4.00 s); only those are analysed")
    assert not any("truncated" in w for w in predictor.predict(full).warnings)


def test_constant_recording_is_refused_like_silence(predictor, tmp_path):
    wav = tmp_path / "dc.wav"
    sf.write(wav, np.full(3 * 8000, -0.5, np.float32), 8000, subtype="PCM_16")
    with pytest.raises(LungsoundError, match=r"dc.wav: constant: the recording is a flat level of -0.5 \(a DC "):
        predictor.predict(wav)
    tiny_swing = np.full(3 * SR, 0.3, np.float32)
    tiny_swing[::2] += 1e-5  # 10 microvolts of signal on the offset: analysed, not refused
    assert predictor.predict(tiny_swing, SR).segments
