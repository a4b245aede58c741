"""Vocoder folders and the import of reference-trainer checkpoints (weights-only, never running pickled code)."""

from __future__ import annotations

import hashlib
import json
import os

import numpy as np
import pytest
import torch

from lungsound.errors import LungsoundError
from lungsound.generation import (
    DiffWave, DiffWaveConfig, import_reference, load_vocoder, save_vocoder, step_table, vocoder_sha256,
)

TINY = DiffWaveConfig(residual_layers=2, residual_channels=4)


pytestmark = pytest.mark.usefixtures("one_thread")  # see tests/conftest.py


def tiny_model(seed: int = 0, config: DiffWaveConfig = TINY) -> DiffWave:
    torch.manual_seed(seed)
    return DiffWave(config)


def reference_params(**changes):
    params = dict(batch_size=16, learning_rate=2e-4, max_grad_norm=False, sample_rate=16000, n_mels=80, n_fft=1024,
                  hop_samples=256, crop_mel_frames=62, residual_layers=2, residual_channels=4,
                  dilation_cycle_length=10, unconditional=False, class_condition=False,
                  noise_schedule=np.linspace(1e-4, 0.05, 50).tolist(),
                  inference_noise_schedule=[0.0001, 0.001, 0.01, 0.05, 0.2, 0.5], audio_len=80000)
    params.update(changes)
    return params


def write_reference(path, model, params, **extra):
    """A checkpoint in the reference trainer's layout: step, model, optimizer, params (a plain dict), scaler."""
    optimizer = torch.optim.Adam(model.parameters(), lr=2e-4)
    ckpt = {"step": 1234, "model": {k: v.cpu() for k, v in model.state_dict().items()},
            "optimizer": optimizer.state_dict(), "params": params,
            "scaler": {"scale": 65536.0, "growth_factor": 2.0, "backoff_factor": 0.5, "growth_interval": 2000,
                       "_growth_tracker": 0}}
    ckpt.update(extra)
    torch.save(ckpt, path)
    return path


def same_weights(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_save_and_load_round_trip(tmp_path):
    model = tiny_model()
    folder = save_vocoder(tmp_path / "voc", model, TINY, {"steps": 10, "note": "tiny"})
    assert sorted(p.name for p in folder.iterdir()) == ["model.safetensors", "vocoder.json"]
    document = json.loads((folder / "vocoder.json").read_text())
    assert document["config"] == {"residual_layers": 2, "residual_channels": 4, "dilation_cycle_length": 10,
                                  "n_mels": 80, "noise_steps": 50, "hop_samples": 256, "num_classes": None}
    loaded, config, meta = load_vocoder(folder)
    assert config == TINY and meta == {"steps": 10, "note": "tiny"} and not loaded.training
    assert same_weights(model, loaded)
    assert load_vocoder(folder / "model.safetensors")[1] == TINY  # the weights file names its folder too
    assert vocoder_sha256(folder) == hashlib.sha256((folder / "model.safetensors").read_bytes()).hexdigest()
    # Saving again replaces the folder as a whole and leaves no temporary folder behind.
    save_vocoder(folder, tiny_model(1), TINY, {"steps": 20})
    assert load_vocoder(folder)[2] == {"steps": 20} and sorted(p.name for p in tmp_path.iterdir()) == ["voc"]
    assert not same_weights(model, load_vocoder(folder)[0])


def test_load_errors_are_one_line(tmp_path):
    with pytest.raises(LungsoundError, match="no such vocoder folder"):
        load_vocoder(tmp_path / "nothing")
    folder = save_vocoder(tmp_path / "voc", tiny_model(), TINY, {})
    document = (folder / "vocoder.json").read_text()

    (folder / "vocoder.json").write_text(document.replace('"residual_channels": 4', '"residual_channels": 8'))
    # 4 -> 8 channels changes 21 shapes: input projection 2, 8 per residual layer x 2, skip 2, output weight 1.
    with pytest.raises(LungsoundError, match=r"do not fit the DiffWave it describes: shape mismatch 21 \(first: "
                                             r"input_projection.weight \(4, 1, 1\) vs \(8, 1, 1\)") as info:
        load_vocoder(folder)
    assert "\n" not in str(info.value) and str(folder) in str(info.value)

    (folder / "vocoder.json").write_text(document.replace('"n_mels"', '"mels"'))
    with pytest.raises(LungsoundError, match=r"unknown DiffWave config keys \['mels'\]"):
        load_vocoder(folder)
    (folder / "vocoder.json").write_text("{not json")
    with pytest.raises(LungsoundError, match="corrupt vocoder.json"):
        load_vocoder(folder)
    (folder / "vocoder.json").write_text(document)
    (folder / "model.safetensors").write_bytes(b"\x00" * 40)
    with pytest.raises(LungsoundError, match="corrupt model.safetensors"):
        load_vocoder(folder)
    (folder / "vocoder.json").unlink()
    with pytest.raises(LungsoundError, match="vocoder.json is missing"):
        load_vocoder(folder)


def test_import_reference_round_trip(tmp_path):
    model = tiny_model(3)
    path = write_reference(tmp_path / "weights-1234.pt", model, reference_params())
    out = import_reference(path, tmp_path / "imported")
    loaded, config, meta = load_vocoder(out)
    assert config == TINY and same_weights(model, loaded)
    assert meta["step"] == 1234 and meta["source_file"] == "weights-1234.pt"
    assert meta["source_sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    assert meta["reference_params"]["crop_mel_frames"] == 62
    x, mel = torch.randn(1, 512), torch.rand(1, 80, 2)
    assert torch.equal(loaded(x, torch.tensor([3.5]), mel), model.eval()(x, torch.tensor([3.5]), mel))


def test_import_accepts_ddp_prefixes_a_persistent_step_table_and_class_conditioning(tmp_path):
    model = tiny_model(4, DiffWaveConfig(residual_layers=2, residual_channels=4, num_classes=4))
    state = {f"module.{k}": v for k, v in model.state_dict().items()}
    state["module.diffusion_embedding.embedding"] = step_table(50)  # older trainers saved the table
    path = tmp_path / "old.pt"
    torch.save({"step": 7, "model": state, "params": reference_params(class_condition=True)}, path)
    loaded, config, _ = load_vocoder(import_reference(path, tmp_path / "imported"))
    assert config.num_classes == 4 and same_weights(model, loaded)


def test_import_refuses_weights_and_params_that_do_not_fit(tmp_path):
    model = tiny_model()
    path = write_reference(tmp_path / "a.pt", model, reference_params(residual_layers=3))
    with pytest.raises(LungsoundError, match=r"do not fit the DiffWave it describes: missing 8 "
                                             r"\(first: residual_layers\.2\.") as info:
        import_reference(path, tmp_path / "out")
    assert str(path) in str(info.value) and "\n" not in str(info.value)
    write_reference(path, model, reference_params(noise_schedule=np.linspace(1e-4, 0.02, 50).tolist()))
    with pytest.raises(LungsoundError, match="training noise schedule"):
        import_reference(path, tmp_path / "out")
    write_reference(path, model, reference_params(sample_rate=22050))
    with pytest.raises(LungsoundError, match="sample_rate is 22050"):
        import_reference(path, tmp_path / "out")
    torch.save({"model": model.state_dict()}, path)
    with pytest.raises(LungsoundError, match="not a reference DiffWave checkpoint"):
        import_reference(path, tmp_path / "out")
    path.write_bytes(b"definitely not a checkpoint")
    with pytest.raises(LungsoundError, match="a.pt: "):
        import_reference(path, tmp_path / "out")
    assert not (tmp_path / "out").exists()


class AttrDict(dict):
    """The reference code's params class: a dict subclass (a custom global for the unpickler)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.__dict__ = self


class RunsCode:
    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def test_a_pickle_that_would_run_code_is_refused_without_running_it(tmp_path):
    marker = tmp_path / "pwned"
    path = write_reference(tmp_path / "evil.pt", tiny_model(), reference_params(), optimizer=RunsCode(marker))
    with pytest.raises(LungsoundError, match=r"refused: loading it would call \w+\.system") as info:
        import_reference(path, tmp_path / "out")
    assert str(path) in str(info.value) and "\n" not in str(info.value)
    assert not marker.exists() and not (tmp_path / "out").exists()


def test_attrdict_params_are_refused_with_the_re_save_recipe(tmp_path):
    path = write_reference(tmp_path / "attr.pt", tiny_model(), AttrDict(reference_params()))
    with pytest.raises(LungsoundError, match=r"custom class [\w.]*AttrDict") as info:
        import_reference(path, tmp_path / "out")
    message = str(info.value)
    assert "torch.save({**ckpt, 'params': dict(ckpt['params'])}, path)" in message and "\n" not in message
    assert message.startswith(str(path))
