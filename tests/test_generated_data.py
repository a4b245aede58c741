"""[AFT] mixed training data: generated clips join the training split only, with their flags, patients and devices;
paper stretches a clip's fbank, clean repeat-pads it; the AFT objective's reversed gradient reaches the backbone."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
import torch.nn.functional as F

from lungsound.config import load_config
from lungsound.data.cycles import CycleConfig, fix_length
from lungsound.data.generated import GeneratedCycles, MixedDataset
from lungsound.errors import LungsoundError
from lungsound.features.fbank import FbankConfig, compute_features
from lungsound.methods import Batch, StepContext, create_objective
from lungsound.models import create_model
from lungsound.training.data import build_run_data
from lungsound.training.run import fit
from tests.conftest import write_generated_set

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


def cfg_for(root, gen, *extra):
    return load_config(None, [f"data.root={root}", f"data.generated={gen}", "data.duration=2.0", "model.name=ast_tiny",
                              "train.epochs=1", "train.max_steps_per_epoch=2", "train.batch_size=4", *extra])


def test_generated_clips_join_the_training_split_only(small_icbhi, tmp_path):
    gen = write_generated_set(small_icbhi, tmp_path / "gen")
    data = build_run_data(cfg_for(small_icbhi, gen), progress=False)
    assert isinstance(data.train, MixedDataset) and not isinstance(data.test, MixedDataset)
    n_real, n_gen = len(data.train.real), len(data.train.generated)
    assert n_gen == 16 and len(data.train) == n_real + n_gen  # 8 training recordings x 2 clips
    flags = data.train.domain_labels("generated")
    assert flags.tolist() == [0] * n_real + [1] * n_gen
    rows = list(csv.DictReader(open(gen / "manifest.csv")))
    sample = data.train[n_real + 3]
    assert sample.patient == int(rows[3]["patient"]) and sample.recording == rows[3]["file"] and sample.index == n_real + 3
    device_names = [data.db.find(r["source_recording"]).device for r in rows]
    assert data.train.domain_labels("device")[n_real:].tolist() == [
        ("Meditron", "LittC2SE", "Litt3200", "AKGC417L").index(d) for d in device_names]
    assert sample.x.shape == data.train[0].x.shape  # the paper stretch gives the real cycles' frame count


def test_paper_stretches_and_clean_repeat_pads(small_icbhi, tmp_path):
    gen = write_generated_set(small_icbhi, tmp_path / "gen", per_recording=1)
    cycle_cfg = CycleConfig(duration=2.0)
    clip, _ = sf.read(gen / sorted(p.name for p in gen.glob("*.wav"))[0], dtype="float32")
    feats = compute_features(clip, FbankConfig())  # 1.5 s: 148 frames
    paper = GeneratedCycles(gen, cycle_cfg, FbankConfig(), stretch=True, use_cache=False, progress=False)
    clean = GeneratedCycles(gen, cycle_cfg, FbankConfig(), stretch=False, use_cache=False, progress=False)
    first = sorted(range(len(paper.items)), key=lambda i: paper.items[i].file)[0]
    x_paper, x_clean = paper.item(first)[0], clean.item(first)[0]
    assert feats.shape[0] == 148 and x_paper.shape == x_clean.shape == (198, 128)
    # bilinear stretch along time only: frame 0 and the last frame are the clip's first and last frames' blend ends
    expected = F.interpolate(feats[None, None], size=(198, 128), mode="bilinear", align_corners=False)[0, 0]
    torch.testing.assert_close(x_paper, expected)
    torch.testing.assert_close(x_clean, compute_features(fix_length(clip, cycle_cfg), FbankConfig()))


def test_clean_protocol_drops_the_clips_of_validation_patients(small_icbhi, tmp_path):
    gen = write_generated_set(small_icbhi, tmp_path / "gen")
    data = build_run_data(cfg_for(small_icbhi, gen, "train.protocol=clean", "data.val_fraction=0.25"),
                          progress=False)
    val_patients = set(data.val.patients.tolist())
    assert val_patients and not val_patients & set(data.train.generated.patients.tolist())
    assert len(data.train.generated) == 16 - 2 * len(val_patients)


def test_clips_from_test_recordings_or_broken_manifests_are_refused(small_icbhi, tmp_path):
    gen = write_generated_set(small_icbhi, tmp_path / "leak", split="test")
    with pytest.raises(LungsoundError, match="not in the training split"):
        build_run_data(cfg_for(small_icbhi, gen), progress=False)
    good = write_generated_set(small_icbhi, tmp_path / "gone")
    next(good.glob("*.wav")).unlink()
    with pytest.raises(LungsoundError, match="row .*: clip .* is missing"):
        GeneratedCycles(good, progress=False, use_cache=False)
    with pytest.raises(LungsoundError, match="needs a generated set"):
        load_config(None, ["data.domain=generated"])


def test_aft_objective_reverses_the_generated_flag_gradient_into_the_backbone():
    torch.manual_seed(0)
    model = create_model("ast_tiny", input_frames=98)
    weights = torch.tensor([0.1, 0.2, 0.3, 0.4])
    aft = create_objective("dat", model.feature_dim, 4, class_weights=weights, domain="generated", n_domains=2,
                           alpha=0.2, grl_schedule="constant", grl_lambda=1.0, weighted_ce=True)
    batch = Batch(x=torch.randn(4, 98, 128), label=torch.tensor([0, 1, 2, 3]), device=torch.tensor([0, 1, 2, 3]),
                  domain=torch.tensor([0, 0, 1, 1]))
    zs = []
    original = model.forward_features
    model.forward_features = lambda x, patch_hook=None: zs.append(original(x)) or zs[-1].retain_grad() or zs[-1]
    loss, logs = aft(model, batch, StepContext())
    loss.backward()
    z = zs[0]
    z_grad = z.grad.clone()  # (autograd.grad below also accumulates into the retained .grad)
    ce = F.cross_entropy(model.forward_head(z), batch.label, weight=weights)
    dom = F.cross_entropy(aft.domain_head(z), batch.domain)
    g_ce, g_dom = torch.autograd.grad(ce, z, retain_graph=True)[0], torch.autograd.grad(dom, z)[0]
    torch.testing.assert_close(z_grad, g_ce - 0.2 * g_dom)  # the discriminator's gradient arrives reversed, x 0.2
    assert loss.item() == pytest.approx(ce.item() + 0.2 * dom.item(), abs=1e-5)
    first = model.backbone.embeddings.patch_embeddings.projection.weight
    assert first.grad is not None and first.grad.abs().sum() > 0


def test_aft_trains_end_to_end_on_a_mixed_set(small_icbhi, tmp_path):
    gen = write_generated_set(small_icbhi, tmp_path / "gen")
    cfg = load_config(Path(__file__).resolve().parents[1] / "experiments" / "icbhi_aft_mixed500.yaml",
                      [f"data.root={small_icbhi}", f"data.generated={gen}", "data.duration=2.0", "model.name=ast_tiny",
                       "model.pretrained=null", "train.epochs=1", "train.max_steps_per_epoch=2", "train.batch_size=8",
                       f"tracking.output_dir={tmp_path}"])
    result = fit(cfg, progress=False, track=False)
    logs = result.history[0]
    assert result.finished and np.isfinite(logs["train_loss_domain"]) and 0 <= logs["train_domain_acc"] <= 1
