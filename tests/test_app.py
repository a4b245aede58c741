"""The Streamlit app (app/streamlit_app.py) driven by `streamlit.testing.v1.AppTest`, and its model discovery.

A tiny random AST checkpoint stands in for a trained model (a tiny random wav2vec 2.0 for the waveform-model page).
A real ICBHI recording must give the summary of an independent `Predictor` run on the same bytes, the probability
metrics, the plots and the segment table. Every kind of bad input must end in a message on the page without an
exception, and the next good upload must still work.
"""

from __future__ import annotations

import io
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

pytest.importorskip("streamlit.testing.v1", reason="streamlit is not installed")
from streamlit.testing.v1 import AppTest  # noqa: E402

from tests.app_support import (  # noqa: E402
    APP, AUDIO_DIR, GOOD, TIMEOUT, load_app_module, open_app, predict_upload, to_wav,
)


@pytest.fixture(scope="module")
def speech_model(tmp_path_factory) -> Path:
    """A random tiny wav2vec 2.0 checkpoint (2-s waveform input), trained on the synthetic set as its config says."""
    import torch

    from lungsound.config import load_config
    from lungsound.models.build import build_model
    from lungsound.models.folder import save_model

    cfg = load_config(None, ["model.name=wav2vec2_tiny", "data.input=waveform", "augment.specaug=false",
                             "data.duration=2.0"])
    torch.manual_seed(0)
    return save_model(tmp_path_factory.mktemp("app-speech") / "speech", build_model(cfg), cfg,
                      {"selected_epoch": 1, "protocol": "clean", "method": "ce"})


@pytest.fixture(scope="module")
def expected_excerpt(tiny_model, good_excerpt):
    return predict_upload(tiny_model, good_excerpt)


@pytest.fixture
def app(tiny_model, monkeypatch, tmp_path) -> AppTest:
    monkeypatch.setenv("LUNGSOUND_APP_MODEL", str(tiny_model))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.chdir(tmp_path)  # no ./outputs or ./mlruns: the environment's model is the only one
    at = AppTest.from_file(str(APP), default_timeout=TIMEOUT)
    at.run()
    assert not at.exception, at.exception
    return at


def upload(at: AppTest, name: str, data: bytes, mime: str = "audio/wav") -> AppTest:
    at.file_uploader(key="upload").set_value((name, data, mime))
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def assert_analysed(at: AppTest, expected) -> None:
    """The page shows the expected summary, four probability metrics, three plots and the segment table."""
    assert not at.error, [e.value for e in at.error]
    warnings = [w.value for w in at.warning]  # the notice, the synthetic-model banner, then the recording's own
    assert warnings[0].startswith("**Research use only") and warnings[1].startswith("**This model was trained on")
    assert warnings[2:] == expected.warnings
    assert f"### {expected.summary['text']}" in [m.value for m in at.markdown]
    metrics = {m.label: m.value for m in at.metric}
    assert metrics == {"Normal": f"{100 * expected.summary['probabilities']['normal']:.0f}%",
                       "Crackles": f"{100 * expected.summary['probabilities']['crackle']:.0f}%",
                       "Wheezes": f"{100 * expected.summary['probabilities']['wheeze']:.0f}%",
                       "Crackles and wheezes": f"{100 * expected.summary['probabilities']['both']:.0f}%"}
    assert len(at.image) == 3  # timeline, waveform, spectrogram with the explanation
    table = at.dataframe[0].value
    assert len(table) == len(expected.segments)
    assert np.allclose(table["start (s)"], [round(s.start, 2) for s in expected.segments])


def test_page_before_upload_shows_notice_and_model_card(app):
    assert any("Research use only - not a medical device" in w.value for w in app.warning)
    assert any("trained on synthetic data" in w.value for w in app.warning)  # the tiny model's meta says synthetic
    assert any("Upload a recording" in i.value for i in app.info)
    assert not app.error
    assert app.sidebar.selectbox(key="model").value.endswith("(from $LUNGSOUND_APP_MODEL)")


def test_real_recording_is_analysed(app, good_recording, expected):
    t0 = time.time()
    upload(app, *good_recording)
    assert_analysed(app, expected)
    # Picking another segment redraws the plots and its explanation without recomputing the prediction.
    selectbox = next(s for s in app.selectbox if s.label == "Segment")
    other = (selectbox.value + 1) % len(expected.segments)
    selectbox.set_value(other).run()
    assert not app.exception and not app.error
    assert selectbox.format_func(other).startswith(f"Segment {other + 1}:")
    assert len(app.image) == 3
    assert time.time() - t0 < TIMEOUT


def test_microphone_recording_is_analysed(app, good_excerpt, expected_excerpt):
    app.audio_input(key="microphone").set_value(("recording.wav", good_excerpt[1], "audio/wav"))
    app.run()
    assert not app.exception
    assert_analysed(app, expected_excerpt)


@pytest.mark.parametrize("fmt, subtype, mime", [("flac", "PCM_16", "audio/flac"), ("ogg", "VORBIS", "audio/ogg"),
                                                ("mp3", "MPEG_LAYER_III", "audio/mpeg")])
def test_other_audio_formats_are_analysed(app, good_excerpt, expected_excerpt, fmt, subtype, mime):
    x, sr = sf.read(io.BytesIO(good_excerpt[1]), dtype="int16")
    if fmt == "mp3" and sr < 8000:  # MPEG audio has no 4 kHz rate
        x, sr = np.repeat(x, 8000 // sr), 8000
    buf = io.BytesIO()
    sf.write(buf, x, sr, format=fmt.upper() if fmt != "mp3" else "MP3", subtype=subtype)
    upload(app, f"excerpt.{fmt}", buf.getvalue(), mime)
    if fmt == "flac":  # lossless: the very same samples, so the very same result
        assert_analysed(app, expected_excerpt)
    else:
        assert not app.error, [e.value for e in app.error]
        assert any(m.value.startswith("### ") for m in app.markdown) and len(app.image) == 3


def test_annotation_file_gives_its_cycles_as_segments(app, good_recording):
    annotation = (AUDIO_DIR / f"{GOOD}.txt").read_bytes()
    app.sidebar.file_uploader(key="annotation").set_value((f"{GOOD}.txt", annotation, "text/plain"))
    app.run()
    assert app.sidebar.radio(key="segmentation").value == "cycles"  # chosen by default once an annotation is given
    upload(app, *good_recording)
    assert not app.error, [e.value for e in app.error]
    cycles = [line.split()[:2] for line in annotation.decode().splitlines() if line.strip()]
    table = app.dataframe[0].value
    assert len(cycles) == 7 and len(table) == 7
    assert np.allclose(table["start (s)"], [round(float(a), 2) for a, _ in cycles])
    assert np.allclose(table["end (s)"], [round(float(b), 2) for _, b in cycles])
    assert any("annotated breathing cycles" in m.value for m in app.markdown)


def _bad_inputs(good: bytes) -> dict[str, tuple[str, bytes, str, str]]:
    """name -> (file name, bytes, element the message appears in, words the message contains)."""
    rng = np.random.default_rng(0)
    x, sr = sf.read(io.BytesIO(good), dtype="float32")
    x = x[: 6 * sr]
    clipped = np.clip(x * 40.0 / max(np.abs(x).max(), 1e-6), -1.0, 1.0)
    return {
        "not_audio": ("notes.wav", b"Patient notes, not a sound file.\n" * 50, "error", "notes.wav: not audio"),
        "empty": ("empty.wav", b"", "error", "empty.wav: empty"),
        "corrupt": ("broken.wav", good[:20] + b"\xff" * 16 + good[36:], "error", "broken.wav: unreadable"),  # bad fmt
        "too_large": ("huge.wav", b"\0" * (51 * 1024 * 1024), "error", "huge.wav is too large"),
        "too_long": ("long.wav", to_wav(0.1 * rng.standard_normal(4000 * 130), 4000), "error", "long.wav: too long"),
        "silence": ("silence.wav", to_wav(np.zeros(4000 * 5), 4000), "error", "silence.wav: silent"),
        "very_short": ("short.wav", to_wav(0.1 * rng.standard_normal(2000), 4000), "error", "short.wav: too short"),
        "clipped": ("clipped.wav", to_wav(clipped, sr), "warning", "heavily clipped"),
    }


@pytest.mark.parametrize("kind", ["not_audio", "empty", "corrupt", "too_large", "too_long", "silence", "very_short",
                                  "clipped"])
def test_bad_input_gives_a_message_and_the_app_keeps_working(app, good_recording, good_excerpt, expected_excerpt,
                                                              kind):
    name, data, element, words = _bad_inputs(good_recording[1])[kind]
    upload(app, name, data)
    messages = [m.value for m in getattr(app, element)]
    assert any(words.lower() in m.lower() for m in messages), messages
    if element == "error":
        assert not any(m.value.startswith("### ") for m in app.markdown)  # no result is shown for a failed upload
    upload(app, *good_excerpt)
    assert_analysed(app, expected_excerpt)


def test_waveform_model_page_shows_a_time_saliency(speech_model, good_recording, monkeypatch, tmp_path):
    """With a speech model from $LUNGSOUND_APP_MODEL the page analyses a real recording like any model, shows the time
    saliency under the spectrogram with its caption, and the model card names the input and the explanation."""
    at = open_app(speech_model, monkeypatch, tmp_path)
    card = next(m.value for m in at.markdown if m.value.startswith("| About this model"))
    assert "| Model input | raw waveform (16 kHz samples) |" in card
    assert "| Explanation shown | gradient x input time saliency over the waveform" in card
    upload(at, *good_recording)
    assert_analysed(at, predict_upload(speech_model, good_recording))
    assert not any(w.value.startswith("No explanation") for w in at.warning)
    captions = [c.value for c in at.caption if c.value.startswith("Time saliency of a waveform model")]
    assert len(captions) == 1 and "raw waveform, not the spectrogram" in captions[0]


def test_spectrogram_model_card_names_its_explanation(app):
    card = next(m.value for m in app.markdown if m.value.startswith("| About this model"))
    assert "| Model input | spectrogram" in card and "| Explanation shown | attention rollout" in card
    assert not any(c.value.startswith("Time saliency") for c in app.caption)


def test_no_model_tells_the_user_to_run_the_quickstart(monkeypatch, tmp_path):
    monkeypatch.delenv("LUNGSOUND_APP_MODEL", raising=False)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.chdir(tmp_path)
    at = AppTest.from_file(str(APP), default_timeout=TIMEOUT)
    at.run()
    assert not at.exception
    assert any("make quickstart" in e.value for e in at.error), [e.value for e in at.error]
    assert not at.file_uploader  # nothing to analyse with


@pytest.mark.parametrize("broken", ["weights", "meta", "temperature", "config"])
def test_broken_model_folder_is_reported(tiny_model, monkeypatch, tmp_path, broken):
    import shutil

    folder = Path(shutil.copytree(tiny_model, tmp_path / "broken"))
    if broken == "weights":
        (folder / "model.safetensors").write_bytes(b"not weights")
    elif broken == "meta":
        (folder / "meta.json").write_text('{"selected_epoch": 1, "calib')  # a crash mid-write, before atomic writes
    elif broken == "temperature":
        (folder / "meta.json").write_text('{"calibration": {"temperature": "warm"}}')
    else:
        (folder / "config.yaml").write_text("")
    monkeypatch.setenv("LUNGSOUND_APP_MODEL", str(folder))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.chdir(tmp_path)
    at = AppTest.from_file(str(APP), default_timeout=TIMEOUT)
    at.run()
    assert not at.exception
    assert any("could not be loaded" in e.value and "broken" in e.value for e in at.error), [e.value for e in at.error]


# ---------------------------------------------------------------------------------------------- model discovery
def test_discovery_lists_env_model_then_checkpoints_newest_first(tiny_model, monkeypatch, tmp_path):
    import os
    import shutil

    models = load_app_module("models")
    outputs = tmp_path / "outputs"
    for i, run in enumerate(["old-run", "new-run"]):
        shutil.copytree(tiny_model, outputs / "icbhi" / run / "best")
        os.utime(outputs / "icbhi" / run / "best" / "model.safetensors", (1e9 + i, 1e9 + i))
    (outputs / "icbhi" / "no-model" / "best").mkdir(parents=True)  # not a checkpoint: skipped
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.chdir(tmp_path)

    monkeypatch.setenv("LUNGSOUND_APP_MODEL", str(tiny_model))
    found = models.discover_models(outputs)
    assert [c.origin for c in found.choices] == ["environment", "checkpoint", "checkpoint"]
    assert found.default.source == str(tiny_model)
    assert [c.label for c in found.choices[1:]] == ["checkpoint: icbhi/new-run", "checkpoint: icbhi/old-run"]

    monkeypatch.setenv("LUNGSOUND_APP_MODEL", str(tmp_path / "nowhere"))
    found = models.discover_models(outputs)
    assert found.default.label == "checkpoint: icbhi/new-run"
    assert len(found.notes) == 1 and "nowhere" in found.notes[0]
    assert not (tmp_path / "mlruns").exists()  # discovery never creates an MLflow store


def test_discovery_defaults_to_newest_finished_quickstart_run(tiny_model, monkeypatch, tmp_path):
    from lungsound.tracking import RunLogger

    models = load_app_module("models")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    monkeypatch.delenv("LUNGSOUND_APP_MODEL", raising=False)
    monkeypatch.chdir(tmp_path)
    runs = {}
    for name, status in [("older", "FINISHED"), ("newer", "FINISHED"), ("newest-killed", "KILLED")]:
        run = RunLogger.start("quickstart", name, {})
        run.log_artifact(tiny_model, "model")
        run.end(status)
        runs[name] = run.run_id
        time.sleep(0.01)  # distinct start times
    no_model = RunLogger.start("quickstart", "no-artifact", {})
    no_model.end("FINISHED")
    registered = RunLogger.start("icbhi", "for-registry", {})
    registered.log_artifact(tiny_model, "model")
    registered.end()
    registered.mlf.create_registered_model("lung-ast")
    for _ in range(2):
        registered.mlf.create_model_version("lung-ast", f"runs:/{registered.run_id}/model", registered.run_id)

    found = models.discover_models(tmp_path / "outputs")
    assert found.notes == []
    assert [c.source for c in found.choices] == [f"runs:/{runs['newer']}/model", "models:/lung-ast/2"]
    assert found.default.origin == "quickstart" and "newer" in found.default.label
    predictor = models.load_predictor(found.default.source)
    assert predictor.classes == ("normal", "crackle", "wheeze", "both")



# ------------------------------------------------------------------------------------- exported (ONNX) models
def _exported_app(tiny_model, tmp_path, monkeypatch, torch_weights: bool) -> tuple[AppTest, Path]:
    """A checkpoint under ./outputs and its int8 export beside it; the app started in that folder."""
    import shutil

    pytest.importorskip("onnxruntime", reason="onnxruntime is not installed")
    from lungsound.inference.onnx_export import export_checkpoint

    best = shutil.copytree(tiny_model, tmp_path / "outputs" / "app" / "run-1" / "best")
    exported = Path(export_checkpoint(best, int8=True, data=AUDIO_DIR.parent, n_check=8, torch_weights=torch_weights,
                                      log=lambda line: None)["folder"])
    monkeypatch.delenv("LUNGSOUND_APP_MODEL", raising=False)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.chdir(tmp_path)
    at = AppTest.from_file(str(APP), default_timeout=TIMEOUT)
    at.run()
    assert not at.exception, at.exception
    picker = at.sidebar.selectbox(key="model")
    assert list(picker.options) == ["checkpoint: app/run-1", "ONNX int8: app/run-1/best-onnx-int8"]
    picker.set_value("ONNX int8: app/run-1/best-onnx-int8").run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    return at, exported


def test_app_lists_an_exported_model_and_analyses_an_upload_with_it(tiny_model, good_recording, monkeypatch,
                                                                     tmp_path):
    from lungsound.inference import Predictor

    at, exported = _exported_app(tiny_model, tmp_path, monkeypatch, torch_weights=True)
    card = next(m.value for m in at.markdown if m.value.startswith("| About this model"))
    assert "| Runs on | ONNX Runtime, exported model with 8-bit weights" in card
    assert "computed with the folder's PyTorch weights for the segment shown" in card
    upload(at, *good_recording)
    fast = Predictor.from_checkpoint(exported, runtime="onnx")
    assert_analysed(at, fast.predict(good_recording[1], name=good_recording[0], max_seconds=120.0))
    assert any(c.value.startswith("The probabilities come from the fast exported model (ONNX Runtime int8)")
               for c in at.caption)
    assert not any(w.value.startswith("No explanation") for w in at.warning)


def test_exported_model_without_weights_says_it_has_no_explanation(tiny_model, good_excerpt, monkeypatch, tmp_path):
    at, _ = _exported_app(tiny_model, tmp_path, monkeypatch, torch_weights=False)
    upload(at, *good_excerpt)
    assert not at.error, [e.value for e in at.error]
    assert any(i.value.startswith("**This fast model has no explanation.**") for i in at.info)
    assert any(m.value.startswith("### ") for m in at.markdown) and len(at.image) == 3  # the plots, no overlay


def test_model_card_shows_external_validation_and_a_non_official_split(monkeypatch, tmp_path):
    """A model folder trained on a patient fold whose meta.json holds a KAUH validation as `lungsound
    validate-external` writes it: the card names the split and shows the recording-level figures with intervals."""
    import torch

    from lungsound.config import load_config
    from lungsound.models.build import build_model
    from lungsound.models.folder import save_model

    cfg = load_config(None, ["model.name=ast_tiny", "data.duration=2.0", "data.split=fold1"])
    torch.manual_seed(0)
    kauh = {"dataset": "kauh", "title": "KAUH lung sound dataset (King Abdullah University Hospital, Jordan)",
            "date": "2026-11-30T19:50:19+00:00", "n": 12, "recordings": 12, "scored": 12, "unmappable": 0,
            "crackle": {"sensitivity": 0.0, "specificity": 1.0,
                        "ci": {"sensitivity": [0.0, 0.390334], "specificity": [0.609666, 1.0]}},
            "wheeze": {"sensitivity": 0.5, "specificity": 0.625,
                       "ci": {"sensitivity": [0.150039, 0.849961], "specificity": [0.305742, 0.863156]}}}
    folder = save_model(tmp_path / "validated", build_model(cfg), cfg,
                        {"selected_epoch": 1, "evaluations": {"external:kauh": kauh}})
    monkeypatch.setenv("LUNGSOUND_APP_MODEL", str(folder))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.chdir(tmp_path)
    at = AppTest.from_file(str(APP), default_timeout=TIMEOUT)
    at.run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    card = next(m.value for m in at.markdown if m.value.startswith("| About this model"))
    assert "**Data split**: patient fold 1 of 5 held out for testing (`fold1`)" in card
    assert "**External validation**" in card
    assert ("| KAUH lung sound dataset | 12 of 12 | 0.0% [0.0-39.0%] | 100.0% [61.0-100.0%] | 50.0% [15.0-85.0%] "
            "| 62.5% [30.6-86.3%] | 2026-11-30 |") in card
