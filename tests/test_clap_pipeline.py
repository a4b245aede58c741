"""BTS through the toolkit's seams on a tiny CLAP written by `save_pretrained`: each sample's metadata reaches the model
in training and evaluation, two training steps, save, offline reload, the ONNX refusal, and `predict` (API and CLI)
with and without metadata on real recordings."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
import transformers

from lungsound.cli import main
from lungsound.config import load_config
from lungsound.errors import LungsoundError
from lungsound.inference import Predictor
from lungsound.inference.onnx_export import export_checkpoint
from lungsound.models.clap import FEATURE_EXTRACTOR, TINY, ClapClassifier
from lungsound.models.folder import load_model
from lungsound.training.run import fit
from tests.test_clap import tiny_tokenizer

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")
META = {"age": 70, "sex": "F", "location": "Pl", "device": "Meditron"}


@pytest.fixture(scope="module")
def clap_folder(tmp_path_factory) -> Path:
    """A tiny CLAP with its tokenizer and preprocessor config, as a user's local copy of the checkpoint would be."""
    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("hf") / "tiny-clap"
    text = {**TINY["text_config"], "vocab_size": 300}
    config = transformers.ClapConfig(text_config=text, audio_config=TINY["audio_config"], projection_dim=16)
    transformers.ClapModel(config).save_pretrained(folder)
    tiny_tokenizer().save_pretrained(folder)
    transformers.ClapFeatureExtractor(**FEATURE_EXTRACTOR).save_pretrained(folder)
    return folder


def bts_cfg(root, out, folder, *extra):
    return load_config(None, [f"data.root={root}", "data.duration=2.0", "data.input=waveform", "augment.specaug=false",
                              "model.name=clap_bts", f"model.pretrained={folder}", "train.epochs=1",
                              "train.max_steps_per_epoch=2", "train.batch_size=4", "train.eval_batch_size=8",
                              f"tracking.output_dir={out}", "train.lr=1e-3", *extra])


class MetaSpy:
    """Records the metadata rows every ClapClassifier.forward_features call receives."""

    def __init__(self, monkeypatch):
        self.calls: list[tuple[bool, list | None]] = []
        real = ClapClassifier.forward_features

        def forward_features(model, x, patch_hook=None, meta=None):
            self.calls.append((model.training, None if meta is None else [dict(m) for m in meta]))
            return real(model, x, patch_hook, meta)

        monkeypatch.setattr(ClapClassifier, "forward_features", forward_features)


@pytest.fixture(scope="module")
def trained(small_icbhi, tmp_path_factory, clap_folder):
    """Two training steps of clap_bts with the field drop (and the metadata each call got)."""
    monkeypatch = pytest.MonkeyPatch()
    spy = MetaSpy(monkeypatch)
    try:
        result = fit(bts_cfg(small_icbhi, tmp_path_factory.mktemp("runs"), clap_folder, "method.params.meta_drop=0.1"),
                     progress=False, track=False)
    finally:
        monkeypatch.undo()
    return result, spy.calls


def test_every_training_and_evaluation_call_gets_its_samples_metadata(trained, small_icbhi):
    result, calls = trained
    assert result.finished and math.isfinite(result.history[0]["train_loss"])
    train = [meta for training, meta in calls if training]
    evaluation = [meta for training, meta in calls if not training]
    assert len(train) == 2 and all(len(meta) == 4 for meta in train)
    assert all(set(row) == {"age", "sex", "location", "device"} for meta in train + evaluation for row in meta)
    assert sum(len(meta) for meta in evaluation) == 4 * 6  # the test split: 4 patients x 6 cycles, all with metadata
    seen = {row["device"] for meta in evaluation for row in meta}
    assert seen == {"Meditron", "LittC2SE", "AKGC417L", "Litt3200"}  # patients 109-112: device by patient % 4
    assert all(row["location"] is None for meta in evaluation for row in meta)  # paper: no patient-level column here


def test_the_saved_model_reloads_offline_with_its_tokens_and_refuses_onnx(trained, monkeypatch, tmp_path):
    result, _ = trained

    def offline(*args, **kwargs):
        raise OSError("no network in this test")

    for cls in (transformers.ClapModel, transformers.AutoTokenizer, transformers.ClapFeatureExtractor):
        monkeypatch.setattr(cls, "from_pretrained", offline)
    model, cfg, _ = load_model(result.checkpoint)
    assert set(cfg.model.params) >= {"backbone_config", "feature_extractor", "prompt_tokens"}
    assert cfg.method.params == {"meta_drop": 0.1} and model.settings.meta_drop == 0.1
    from safetensors.torch import load_file

    saved = load_file(str(result.checkpoint / "model.safetensors"))
    for key, value in model.state_dict().items():
        torch.testing.assert_close(value, saved[key])
    x = 0.1 * torch.randn(2, 2 * 48000)
    with torch.no_grad():
        assert not torch.allclose(model(x, meta=[META] * 2), model(x))
    out = tmp_path / "onnx"
    with pytest.raises(LungsoundError, match=r"'clap_bts' cannot be exported: besides the waveform it reads the "
                                             r"recording's metadata") as info:
        export_checkpoint(result.checkpoint, out)
    assert "\n" not in str(info.value) and not out.exists()


def test_predict_with_and_without_metadata_on_real_recordings(trained, icbhi_dir):
    result, _ = trained
    predictor = Predictor.from_checkpoint(result.checkpoint)
    assert predictor.uses_metadata and predictor.sample_rate == 48000
    wav = sorted(icbhi_dir.rglob("*.wav"))[0]
    bare = predictor.predict(wav, segmentation="windows")
    given = predictor.predict(wav, segmentation="windows", metadata=META)
    part = predictor.predict(wav, segmentation="windows", metadata={"age": 70})
    assert any("no metadata was given" in w for w in bare.warnings)
    assert not any("metadata" in w for w in given.warnings)
    assert any(w.startswith("metadata sex, location, device unknown") for w in part.warnings)
    assert bare.metadata == dict.fromkeys(META) and given.to_dict()["metadata"] == META
    probs = [np.array([[s.probabilities[c] for c in predictor.classes] for s in p.segments]) for p in (bare, given)]
    np.testing.assert_allclose(probs[1].sum(axis=1), 1.0, rtol=1e-6)
    assert not np.allclose(probs[0], probs[1])
    explanation = predictor.explain(given, 0)  # gradients reach the waveform through the torch front end
    assert np.isfinite(explanation.heatmap).all() and explanation.heatmap.max() > 0
    with pytest.raises(LungsoundError, match="metadata sex must be M or F"):
        predictor.predict(wav, metadata={"sex": "?"})


def test_predict_cli_meta(trained, icbhi_dir, capsys):
    result, _ = trained
    wav = str(sorted(icbhi_dir.rglob("*.wav"))[0])
    assert main(["predict", "--checkpoint", str(result.checkpoint), "--json", "--segmentation", "windows",
                 "--meta", "age=70,sex=F,location=Pl,device=Meditron", wav]) == 0
    (pred,) = json.loads(capsys.readouterr().out)
    assert pred["metadata"] == {"age": 70.0, "sex": "F", "location": "Pl", "device": "Meditron"}
    assert main(["predict", "--checkpoint", str(result.checkpoint), "--meta", "age=70,weight=80", wav]) == 2
    err = capsys.readouterr().err.strip()
    assert err == "lungsound: error: --meta: metadata key(s) weight are not known; the keys are age, sex, location, device"


def test_the_app_shows_the_patient_form_for_a_bts_model_and_passes_it(tmp_path, monkeypatch, good_recording):
    """A random tiny clap_bts folder: the sidebar's patient form appears, blank fields give the "no metadata" warning,
    filled ones reach the model (the page's result is the Predictor's with that metadata)."""
    pytest.importorskip("streamlit.testing.v1", reason="streamlit is not installed")
    from lungsound.models.build import build_model
    from lungsound.models.folder import save_model
    from tests.app_support import open_app

    cfg = load_config(None, ["model.name=clap_bts", "data.input=waveform", "augment.specaug=false",
                             "data.duration=2.0"])
    cfg.model.params = {"overrides": TINY}
    torch.manual_seed(0)
    folder = save_model(tmp_path / "bts", build_model(cfg), cfg, {"selected_epoch": 1, "protocol": "clean"})
    at = open_app(folder, monkeypatch, tmp_path)
    card = next(m.value for m in at.markdown if m.value.startswith("| About this model"))
    assert ("| Model input | raw waveform (48 kHz samples) and the patient's age, sex, chest location and device, as "
            "one sentence |") in card
    assert [s.label for s in at.sidebar.selectbox if s.key and s.key.startswith("meta_")] == [
        "Sex", "Chest location", "Device"]
    at.file_uploader(key="upload").set_value((*good_recording, "audio/wav"))
    at.run()
    assert any(w.value.startswith("no metadata was given") for w in at.warning)
    at.number_input(key="meta_age").set_value(70.0)
    at.selectbox(key="meta_sex").set_value("F")
    at.selectbox(key="meta_location").set_value("Pl")
    at.selectbox(key="meta_device").set_value("Meditron")
    at.run()
    assert not at.exception and not any("metadata" in w.value for w in at.warning)
    expected = Predictor.from_checkpoint(folder).predict(good_recording[1], name=good_recording[0],
                                                         metadata={**META, "age": 70.0}, max_seconds=120.0)
    assert f"### {expected.summary['text']}" in [m.value for m in at.markdown]
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["Normal"] == f"{100 * expected.summary['probabilities']['normal']:.0f}%"


def test_the_audio_only_baseline_exports_to_onnx_and_matches_pytorch(tmp_path, icbhi_dir):
    """clap_audio has one input, the waveform; its front end (the STFT as a strided convolution) exports too."""
    from lungsound.models.build import build_model
    from lungsound.models.folder import save_model

    cfg = load_config(None, ["model.name=clap_audio", "data.input=waveform", "augment.specaug=false",
                             "data.duration=2.0"])
    cfg.model.params = {"overrides": TINY}
    torch.manual_seed(0)
    folder = save_model(tmp_path / "audio", build_model(cfg), cfg, {"selected_epoch": 1})
    info = export_checkpoint(folder, tmp_path / "onnx", data=icbhi_dir, n_check=4, log=lambda line: None)
    assert info["check"]["inputs"] == 4 and info["check"]["fp32_max_abs_logit_diff"] <= 1e-4
    assert (tmp_path / "onnx" / "model.onnx").is_file()
