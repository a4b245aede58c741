"""EfficientAT ([EFFAT], docs/methods.md section 12): the real mn04 checkpoint loads strictly and tags the three sample
clips as the upstream implementation does (the golden table of ../shared/models/README.md), the front end equals an
independent numpy computation, the fine-tuning head keeps the pretrained Linear(C, 512), and bad weights are one line.
The tests that need the checkpoint skip with the reason when ../shared/models is absent."""

from __future__ import annotations

import csv
import hashlib
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from lungsound.errors import LungsoundError
from lungsound.inference.explain import explain_input, explanation_method
from lungsound.models import create_model, model_spec
from lungsound.models import efficientat_weights as weights_module
from lungsound.models.efficientat import EfficientAT, EfficientATConfig, audioset_tagger, divisible
from lungsound.models.efficientat_frontend import LogMelFrontEnd, FrontEndConfig

SHARED = Path(__file__).resolve().parents[2] / "shared" / "models" / "efficientat"
MN04 = SHARED / "mn04_as_mAP_432.pt"
# ../shared/models/README.md: the upstream implementation's top 3 (sigmoid probabilities) per sample clip
GOLDEN = {
    "speech": [("Speech", 0.818), ("Door", 0.373), ("Slam", 0.204)],
    "music": [("Music", 0.598), ("Musical instrument", 0.118), ("Guitar", 0.106)],
    "typing": [("Computer keyboard", 0.891), ("Typing", 0.871), ("Speech", 0.024)],
}


@pytest.fixture(scope="module")
def checkpoint() -> Path:
    if not MN04.is_file():
        pytest.skip(f"real weights not available: {MN04} is absent (CI has them at ../shared/models)")
    return MN04


@pytest.fixture(scope="module")
def tagger(checkpoint, one_thread):
    return audioset_tagger(str(checkpoint))


# ------------------------------------------------------------------------------------------------- real weights

def test_the_release_file_is_the_one_the_registry_knows(checkpoint):
    release = weights_module.RELEASES["mn04"]
    assert checkpoint.name == release.file and checkpoint.stat().st_size == release.size == 4_066_513
    assert hashlib.sha256(checkpoint.read_bytes()).hexdigest() == release.sha256


def test_strict_load_covers_every_tensor_and_counts_983599_parameters(checkpoint, tagger):
    state = torch.load(checkpoint, map_location="cpu", weights_only=True)
    model = tagger.model
    assert len(state) == 312 and set(state) == set(model.state_dict())  # upstream layout, nothing left over
    for key, value in state.items():
        assert torch.equal(model.state_dict()[key], value), key
    assert sum(p.numel() for p in model.parameters()) == 983_599
    assert model.feature_dim == 384 and model.hidden == 512


def test_top3_of_the_sample_clips_equal_the_golden_table(tagger):
    names = [row[2] for row in list(csv.reader((SHARED / "class_labels_indices.csv").open()))[1:]]
    assert len(names) == 527
    for clip, golden in GOLDEN.items():
        wave, sr = sf.read(SHARED / "sample_audio" / f"{clip}.wav", dtype="float32")
        assert sr == 32000 and len(wave) == 320_000
        probs = torch.sigmoid(tagger(torch.from_numpy(wave)[None]))[0]
        assert probs.shape == (527,)
        top = probs.topk(3)
        got = [(names[i], round(float(p), 3)) for p, i in zip(top.values, top.indices)]
        assert got == golden, clip


def test_fine_tuning_head_keeps_the_pretrained_hidden_layer_bit_exactly(checkpoint, one_thread):
    state = torch.load(checkpoint, map_location="cpu", weights_only=True)
    torch.manual_seed(0)
    model = create_model("efficientat_mn04", num_classes=4, weights=str(checkpoint))
    assert torch.equal(model.classifier[2].weight, state["classifier.2.weight"])
    assert torch.equal(model.classifier[2].bias, state["classifier.2.bias"])
    last = model.classifier[5]
    assert last.weight.shape == (4, 512) and torch.equal(last.bias, torch.zeros(4))
    assert abs(float(last.weight.detach().std()) - 0.01) < 0.002  # N(0, 0.01), 2,048 draws
    assert sum(p.numel() for p in model.parameters()) == 715_300  # docs/methods.md section 12
    for key in (k for k in state if k.startswith("features.")):
        assert torch.equal(model.state_dict()[key], state[key]), key


def test_a_plain_linear_head_takes_only_the_features(checkpoint, one_thread):
    model = create_model("efficientat_mn04", num_classes=4, weights=str(checkpoint), head="linear")
    assert [type(m).__name__ for m in model.classifier] == ["AdaptiveAvgPool2d", "Flatten", "Linear"]
    assert model.classifier[2].weight.shape == (4, 384)
    wave = 0.1 * torch.randn(2, 32000)
    assert model.eval()(wave).shape == (2, 4)


def test_weights_of_another_width_are_refused_in_one_line(checkpoint):
    with pytest.raises(LungsoundError, match=r"mn04_as_mAP_432.pt: weights do not fit this EfficientAT .*mismatched"):
        create_model("efficientat_mn10", weights=str(checkpoint))


def test_a_file_with_the_release_name_but_other_bytes_is_refused(tmp_path):
    fake = tmp_path / "mn04_as_mAP_432.pt"
    torch.save(EfficientAT("mn04", EfficientATConfig(num_classes=527)).state_dict(), fake)
    with pytest.raises(LungsoundError, match="carries the release name mn04_as_mAP_432.pt but not its SHA-256"):
        create_model("efficientat_mn04", weights=str(fake))


def test_a_missing_file_and_a_pickle_are_one_line(tmp_path):
    with pytest.raises(LungsoundError, match="no such EfficientAT weights file .*'audioset'"):
        create_model("efficientat_mn04", weights=str(tmp_path / "nope.pt"))
    bad = tmp_path / "object.pt"
    torch.save({"a": object()}, bad)  # needs code to unpickle: weights-only loading refuses it
    with pytest.raises(LungsoundError, match="cannot read EfficientAT weights with weights_only loading"):
        create_model("efficientat_mn04", weights=str(bad))


def test_an_unreachable_release_url_says_how_to_pass_a_file(tmp_path, monkeypatch):
    monkeypatch.setenv("LUNGSOUND_CACHE", str(tmp_path))
    monkeypatch.setattr(weights_module, "RELEASE_URL", "http://127.0.0.1:9/")  # nothing listens on port 9
    monkeypatch.setattr(weights_module, "DOWNLOAD", weights_module.DownloadConfig(timeout=2, retries=0, progress=False))
    with pytest.raises(LungsoundError) as err:
        create_model("efficientat_mn05", weights="audioset")
    text = str(err.value)
    assert "\n" not in text and "cannot download the EfficientAT mn05 AudioSet weights" in text
    assert "pass model.pretrained=PATH" in text and str(tmp_path / "models" / "efficientat" / "mn05_as_mAP_443.pt") in text


def test_a_cached_release_is_checked_against_its_recorded_checksum(tmp_path, monkeypatch):
    """A release without a known checksum is checked against the SHA-256 recorded at its first download."""
    monkeypatch.setenv("LUNGSOUND_CACHE", str(tmp_path))
    folder = tmp_path / "models" / "efficientat"
    folder.mkdir(parents=True)
    cached = folder / "mn05_as_mAP_443.pt"
    cached.write_bytes(b"not the recorded bytes")
    (folder / "mn05_as_mAP_443.pt.sha256").write_text("0" * 64 + "  mn05_as_mAP_443.pt\n")
    with pytest.raises(LungsoundError, match=f"SHA-256 .* differs from the expected {'0' * 64}; delete the file"):
        weights_module.fetch_release("mn05")


def test_the_four_sizes_have_the_upstream_widths_and_head():
    """Channel counts by the rounding rule (multiples of 8, never 10% below): mn04 384/512, mn10 960/1280."""
    assert [divisible(v) for v in (6.4, 9.6, 25.6, 268.8, 4.8)] == [8, 16, 24, 272, 8]
    expected = {"mn04": (384, 512), "mn05": (480, 640), "mn10": (960, 1280), "mn20": (1920, 2560)}
    for size, (c, h) in expected.items():
        spec = model_spec(f"efficientat_{size}")
        assert (spec.input, spec.sample_rate, spec.explanation, spec.paper) == ("waveform", 32000, "grad-cam", "EFFAT")
        model = EfficientAT(size, EfficientATConfig())
        assert (model.feature_dim, model.hidden) == (c, h), size
    assert sum(p.numel() for p in EfficientAT("mn10", EfficientATConfig(num_classes=527)).parameters()) == 4_876_831


# -------------------------------------------------------------------------------------------------------- front end

def numpy_front_end(x: np.ndarray) -> np.ndarray:
    """The README's evaluation front end, written independently in float64 numpy: (n_mels, T)."""
    y = x[1:] - 0.97 * x[:-1]
    padded = np.pad(y, (512, 512), mode="reflect")
    n = np.arange(800)
    window = np.zeros(1024)
    window[112:912] = 0.5 - 0.5 * np.cos(2 * np.pi * n / 799)  # symmetric Hann of 800, centred in 1024
    frames = 1 + (len(padded) - 1024) // 320
    spec = np.stack([np.abs(np.fft.rfft(padded[t * 320:t * 320 + 1024] * window)) ** 2 for t in range(frames)], 1)

    def mel(f):
        return 1127.0 * np.log(1.0 + f / 700.0)

    lo, hi = mel(0.0), mel(15000.0)
    d = (hi - lo) / 129
    m = mel(np.arange(513) * 32000 / 1024)
    bank = np.zeros((128, 513))
    for b in range(128):
        left, centre, right = lo + b * d, lo + (b + 1) * d, lo + (b + 2) * d
        bank[b] = np.maximum(0, np.minimum((m - left) / (centre - left), (right - m) / (right - centre)))
    bank[:, 512] = 0  # the Nyquist bin
    return (np.log(bank @ spec + 1e-5) + 4.5) / 5


def test_front_end_equals_an_independent_numpy_computation_and_gives_800_frames_for_8_s():
    rng = np.random.default_rng(0)
    x = (0.1 * rng.standard_normal(8 * 32000) + 0.3 * np.sin(2 * np.pi * 440 * np.arange(8 * 32000) / 32000))
    out = LogMelFrontEnd().eval()(torch.from_numpy(x.astype(np.float32))[None])
    assert out.shape == (1, 1, 128, 800)
    np.testing.assert_allclose(out[0, 0].double().numpy(), numpy_front_end(x.astype(np.float32).astype(np.float64)),
                               atol=1e-4, rtol=0)


def test_jitter_draws_new_filter_edges_only_in_training():
    torch.manual_seed(0)
    front = LogMelFrontEnd(FrontEndConfig(jitter=True))
    x = 0.1 * torch.randn(1, 32000)
    front.eval()
    fixed = front(x)
    assert torch.equal(front(x), fixed)
    front.train()
    jittered = [front(x) for _ in range(3)]
    assert all(not torch.equal(j, fixed) for j in jittered)
    assert not torch.equal(jittered[0], jittered[1])
    plain = LogMelFrontEnd().train()
    assert torch.equal(plain(x), fixed)  # without jitter, training changes nothing


def test_grad_cam_maps_its_own_spectrogram_frames_time_first(one_thread):
    """Grad-CAM of a 2-s waveform is a map over the front end's 1 + 63,999 // 320 = 200 frames x 128 bands."""
    torch.manual_seed(0)
    model = EfficientAT("mn04", EfficientATConfig())
    assert explanation_method(model) == "grad-cam"
    heat, method, target = explain_input(model, 0.1 * torch.randn(64000), None, "grad-cam")
    assert method == "grad-cam" and heat.shape == (200, 128) and 0 <= target < 4
    assert heat.min() >= 0 and heat.max() <= 1
