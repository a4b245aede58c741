"""RepAugment in the training engine: every objective applies it to z before the head, in training only; speech models
train from a local `save_pretrained` folder, are saved, reload offline and predict on real recordings."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
import transformers

from lungsound.config import load_config
from lungsound.errors import LungsoundError
from lungsound.inference import Predictor
from lungsound.methods.repaugment import RepAugment
from lungsound.models.speech import TINY
from lungsound.models.folder import load_model
from lungsound.training.run import fit
from lungsound.training.trainer import Trainer

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


@pytest.fixture(scope="module")
def hf_folder(tmp_path_factory) -> Path:
    """A tiny wav2vec 2.0 written by transformers' own `save_pretrained`, as a user's local checkpoint would be."""
    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("hf") / "tiny-wav2vec2"
    transformers.Wav2Vec2Model(transformers.Wav2Vec2Config(**TINY)).save_pretrained(folder)
    return folder


def speech_cfg(root, tmp_path, folder, *extra):
    # The tiny models are 64-d: the Rep-Mask bound is 0.375 D (24) rather than the absolute 288 of the paper files.
    return load_config(None, [f"data.root={root}", "data.duration=2.0", "data.input=waveform", "augment.specaug=false",
                              "model.name=wav2vec2_tiny", f"model.pretrained={folder}", "train.epochs=1",
                              "train.max_steps_per_epoch=2", "train.batch_size=4", f"tracking.output_dir={tmp_path}",
                              "train.lr=1e-3", "augment.rep_max_width_ratio=0.375", *extra])


class Spy:
    """Records what RepAugment.forward receives while leaving its behaviour as it is."""

    def __init__(self, monkeypatch):
        self.calls = []
        real = RepAugment.forward

        def forward(module, z, labels=None, generator=None):
            self.calls.append((tuple(z.shape), module.training, None if labels is None else labels.tolist()))
            return real(module, z, labels, generator)

        monkeypatch.setattr(RepAugment, "forward", forward)


@pytest.mark.parametrize("representation", ["none", "rep_mask", "rep_gen", "repaugment"])
def test_speech_model_trains_saves_reloads_offline_and_predicts(small_icbhi, tmp_path, hf_folder, icbhi_dir,
                                                                   monkeypatch, representation):
    spy = Spy(monkeypatch)
    result = fit(speech_cfg(small_icbhi, tmp_path, hf_folder, f"augment.representation={representation}"),
                 progress=False, track=False)
    assert result.finished and math.isfinite(result.history[0]["train_loss"])
    assert len(spy.calls) == 2 and all(shape == (4, 64) and training for shape, training, _ in spy.calls)

    def offline(*args, **kwargs):
        raise OSError("no network in this test")

    monkeypatch.setattr(transformers.Wav2Vec2Model, "from_pretrained", offline)
    model, cfg, _ = load_model(result.checkpoint)  # rebuilt from the stored backbone config, not from the folder
    assert cfg.augment.representation == representation and model.feature_dim == 64
    predictor = Predictor.from_checkpoint(result.checkpoint)
    wavs = sorted((icbhi_dir / "audio_and_txt_files").glob("*.wav"))[:2]
    assert len(wavs) == 2, f"no real recordings under {icbhi_dir / 'audio_and_txt_files'}"
    for wav in wavs:
        pred = predictor.predict(wav, annotation=None, segmentation="windows")
        probs = np.array([[s.probabilities[c] for c in predictor.classes] for s in pred.segments])
        np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=1e-6)
        assert pred.segments[0].start == 0.0 and pred.segments[-1].end == pytest.approx(pred.duration, abs=0.02)


def test_the_reloaded_speech_model_gives_the_trained_outputs(small_icbhi, tmp_path, hf_folder):
    result = fit(speech_cfg(small_icbhi, tmp_path, hf_folder), progress=False, track=False)
    model, _, _ = load_model(result.checkpoint)
    trained = Trainer(speech_cfg(small_icbhi, tmp_path, hf_folder), progress=False)
    from safetensors.torch import load_file

    trained.model.load_state_dict(load_file(str(result.checkpoint / "model.safetensors")))
    x = torch.randn(2, 32000)
    torch.testing.assert_close(model(x), trained.model.eval()(x), rtol=1e-5, atol=1e-6)


def test_ast_repaugment_sees_the_pooled_vector_with_each_objective(small_icbhi, tmp_path, monkeypatch):
    for method in ("ce", "patchmix_cl", "dat", "sgscl"):
        spy = Spy(monkeypatch)
        cfg = load_config(None, [f"data.root={small_icbhi}", "data.duration=2.0", "model.name=ast_tiny",
                                 "augment.specaug=false", "augment.representation=repaugment", f"method.name={method}",
                                 "augment.rep_max_width_ratio=0.375",
                                 "train.epochs=1", "train.max_steps_per_epoch=1", "train.batch_size=4",
                                 f"tracking.output_dir={tmp_path}"])
        fit(cfg, progress=False, track=False)
        assert [c[0] for c in spy.calls] == [(4, 64)], method  # one classification pass per step, before the head
        monkeypatch.undo()


def test_oversampling_draws_per_class_items_each_epoch(small_icbhi, tmp_path, hf_folder):
    cfg = speech_cfg(small_icbhi, tmp_path, hf_folder, "data.balance=oversample", "data.balance_per_class=6",
                     "augment.representation=rep_gen", "augment.rep_minority=all")
    trainer = Trainer(cfg, progress=False)
    order = list(trainer._loader(1).sampler)
    counts = np.bincount(trainer.data.train.labels[order], minlength=4)
    assert counts.tolist() == [6, 6, 6, 6] and order == list(trainer._loader(1).sampler)


def test_specaugment_on_waveforms_is_refused_and_mixing_with_repaugment_warns(tmp_path):
    with pytest.raises(LungsoundError, match="augment.specaug=true masks spectrograms"):
        load_config(None, ["data.input=waveform", "model.name=wav2vec2_tiny"])
    with pytest.warns(UserWarning, match="never combines them"):
        load_config(None, ["augment.specaug=true", "augment.representation=rep_mask"])
    with pytest.raises(LungsoundError, match="takes waveform input"):
        fit(load_config(None, ["model.name=wav2vec2_tiny", f"tracking.output_dir={tmp_path}",
                               f"data.root={tmp_path / 'never-read'}"]), track=False)


def test_a_width_bound_wider_than_the_representation_is_refused_before_training(small_icbhi, tmp_path):
    # The absolute 288 of the paper protocol on the tiny AST's 64-d representation: one line naming the option.
    cfg = load_config(None, [f"data.root={small_icbhi}", "data.duration=2.0", "model.name=ast_tiny",
                             "augment.specaug=false", "augment.representation=rep_mask", f"tracking.output_dir={tmp_path}"])
    with pytest.raises(LungsoundError, match=r"augment.rep_max_width=288 is wider than the 64-d representation of "
                                             r"model 'ast_tiny': set augment.rep_max_width to at most 64"):
        Trainer(cfg, progress=False)
    cfg.augment.representation = "rep_gen"  # no mask, no bound
    assert Trainer(cfg, progress=False).represent.width(64) == 288
    cfg.augment.representation, cfg.augment.rep_max_width_ratio = "repaugment", 0.375
    assert Trainer(cfg, progress=False).represent.width(64) == pytest.approx(24.0)
