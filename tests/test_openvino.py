"""The `openvino` runtime and `lungsound export --format openvino`, per model family at tiny size: the fp32 folder gives
PyTorch's logits to 1e-4, the int8 folder (NNCF, static scales) gives a segment the same result alone and inside a
batch, a predictor runs either on a recording, and a tampered or truncated model.xml/model.bin is one line naming the
file.

The families are read from the model registry (one per factory module and architecture, the smallest by its own
memory estimate), so a family registered later is covered without naming it here.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from lungsound.data.download import sha256_of
from lungsound.errors import LungsoundError
from lungsound.inference import Predictor
from lungsound.inference.onnx_export import FP32_TOLERANCE, check_inputs
from lungsound.inference.openvino_export import export_openvino
from lungsound.inference.openvino_folder import OpenVinoModel
from lungsound.models.folder import load_model, read_config
from lungsound.models.clap import TINY as CLAP_TINY
from lungsound.models.registry import MODELS, model_spec
from tests.conftest import one_error, random_model

pytest.importorskip("openvino", reason="openvino is not installed")
pytest.importorskip("nncf", reason="nncf is not installed")
SMALL = 16 * 2**20  # a family is tested with its smallest model when that one's 2-s working memory is below this


def quiet(line: str) -> None:
    pass


def _size(spec) -> float:
    if "feature_extractor" in spec.params.keys:  # CLAP: tested with tiny towers (`overrides`)
        return 0.0
    try:
        return spec.working_bytes({}, 2.0)
    except Exception:  # a model whose default parameters need more (it is then tested only if nothing smaller)
        return math.inf


def families() -> list:
    """One pytest param per family: (factory module, architecture) -> its smallest registered model."""
    groups: dict[tuple[str, str], list] = {}
    for name, spec in MODELS.items():
        if spec.uses_metadata:  # clap_bts: refused by every exporter (tests/test_openvino_export.py)
            continue
        groups.setdefault((spec.factory.__module__, spec.architecture), []).append((_size(spec), name))
    params = []
    for (_, architecture), members in sorted(groups.items()):
        size, name = min(members)
        marks = [pytest.mark.skip(reason=f"the smallest {architecture} model ({name}) is too large for a fast test; "
                                         "the same code is converted for its smaller siblings")] if size > SMALL else []
        params.append(pytest.param(name, marks=marks, id=name))
    return params


def overrides(name: str) -> tuple[str, ...]:
    spec = model_spec(name)
    waveform = spec.input == "waveform"
    tiny = (f"model.params.overrides={json.dumps(CLAP_TINY)}",) if "feature_extractor" in spec.params.keys else ()
    return (f"model.name={name}", "data.duration=2.0", *tiny) + (
        ("data.input=waveform", "augment.specaug=false") if waveform else ())


def write_audio(path: Path, seconds: float = 6.0, sr: int = 16000) -> Path:
    rng = np.random.default_rng(0)
    t = np.arange(int(seconds * sr)) / sr
    x = 0.1 * rng.standard_normal(len(t)) * (1.2 + np.sin(2 * np.pi * 0.25 * t)) + 0.05 * np.sin(2 * np.pi * 300 * t)
    sf.write(path, x.astype(np.float32), sr)
    return path


def torch_logits(checkpoint: Path, x: torch.Tensor) -> np.ndarray:
    model = load_model(checkpoint)[0]
    with torch.inference_mode():
        return model(x).numpy()


@pytest.mark.parametrize("name", families())
def test_each_family_exports_and_runs_like_pytorch(name, cycle_data, tmp_path):
    checkpoint = random_model(tmp_path / "run" / "best", overrides(name))
    fp32 = export_openvino(checkpoint, data=cycle_data, n_check=4, log=quiet)
    folder = Path(fp32["folder"])
    assert folder == tmp_path / "run" / "best-openvino" and fp32["precision"] == "fp32"
    assert fp32["check"]["fp32_max_abs_logit_diff"] <= FP32_TOLERANCE
    x = check_inputs(read_config(folder), cycle_data, 6)[0]
    expected = torch_logits(checkpoint, x)
    assert np.abs(OpenVinoModel(folder / "model.xml").logits(x) - expected).max() <= FP32_TOLERANCE

    int8 = export_openvino(checkpoint, int8=True, data=cycle_data, calibration_cycles=8, n_check=4, min_agreement=0.0,
                           log=quiet)
    assert int8["precision"] == "int8" and int8["quantization"]["subset_size"] == 8
    assert int8["quantization"]["model_type"] == ("transformer" if model_spec(name).transformer else "default")
    assert int8["sizes_bytes"]["model.bin"] < 0.6 * fp32["sizes_bytes"]["model.bin"]  # int8 weights
    model = OpenVinoModel(Path(int8["folder"]) / "model.xml", precision="int8")
    together = model.logits(x)
    alone = np.concatenate([model.logits(x[i:i + 1]) for i in range(len(x))])
    np.testing.assert_allclose(together, alone, rtol=0, atol=1e-6)  # static scales: no neighbour changes a result
    # it really is quantised (relative to the logits' scale: a random EfficientAT's new head gives logits near 1e-9)
    assert np.abs(together - expected).max() > 1e-6 * np.abs(expected).max()

    audio = write_audio(tmp_path / "a.wav")
    reference = Predictor.from_checkpoint(checkpoint, device="cpu").predict(audio, segmentation="windows")
    for exported in (folder, Path(int8["folder"])):
        predictor = Predictor.from_pretrained(exported)  # an exported folder runs on its own runtime
        assert predictor.runtime == "openvino" and predictor.backend.max_batch is None
        pred = predictor.predict(audio, segmentation="windows")
        assert [(s.start, s.end) for s in pred.segments] == [(s.start, s.end) for s in reference.segments]
        p = np.array([list(s.probabilities.values()) for s in pred.segments])
        q = np.array([list(s.probabilities.values()) for s in reference.segments])
        assert np.allclose(p.sum(axis=1), 1.0, atol=1e-6)
        if exported == folder:
            assert np.abs(p - q).max() <= FP32_TOLERANCE


@pytest.fixture(scope="module")
def ast_export(cycle_data, tmp_path_factory) -> Path:
    checkpoint = random_model(tmp_path_factory.mktemp("openvino") / "run" / "best")
    return Path(export_openvino(checkpoint, data=cycle_data, n_check=4, log=quiet)["folder"])


@pytest.mark.parametrize("name", ["model.xml", "model.bin"])
def test_a_tampered_or_truncated_model_file_is_one_line_naming_it(name, ast_export, tmp_path, capsys):
    import shutil

    audio = str(write_audio(tmp_path / "a.wav"))
    broken = shutil.copytree(ast_export, tmp_path / "broken")
    data = (broken / name).read_bytes()
    (broken / name).write_bytes(data[:len(data) // 2])  # truncated
    predict = ["predict", audio, "--checkpoint", str(broken), "--runtime", "openvino"]
    line = one_error(capsys, predict)
    assert f"{broken}: {name} is not the file this folder was exported with" in line  # its digest is checked first
    info = json.loads((broken / "export.json").read_text())
    info["weights_sha256"][name] = sha256_of(broken / name)  # the digest made to match: OpenVINO reads the file
    (broken / "export.json").write_text(json.dumps(info))
    line = one_error(capsys, predict)
    assert f"{broken}: cannot read model.xml/model.bin with OpenVINO" in line
    tampered = bytearray(data)
    tampered[len(data) // 3] ^= 0xFF  # one byte changed, the length kept
    (broken / name).write_bytes(bytes(tampered))
    info["weights_sha256"][name] = sha256_of(ast_export / name)
    (broken / "export.json").write_text(json.dumps(info))
    assert f"{name} is not the file this folder was exported with" in one_error(capsys, predict)


def test_an_openvino_folder_without_pytorch_weights_says_the_explanation_is_unavailable(ast_export, cycle_data,
                                                                                         tmp_path):
    checkpoint = random_model(tmp_path / "run" / "best")
    info = export_openvino(checkpoint, tmp_path / "lean", data=cycle_data, n_check=4, torch_weights=False, log=quiet)
    assert not (tmp_path / "lean" / "model.safetensors").exists() and info["torch_weights"] is False
    predictor = Predictor.from_checkpoint(info["folder"], runtime="openvino")
    assert not predictor.can_explain
    pred = predictor.predict(write_audio(tmp_path / "a.wav"), segmentation="windows")
    with pytest.raises(LungsoundError, match=r"this fast OpenVINO model has no explanation: it was exported without "
                                             r"its PyTorch weights \(--no-torch-weights\), and OpenVINO gives no "
                                             r"gradients or attention maps$"):
        predictor.explain(pred, 0)
    assert Predictor.from_checkpoint(ast_export, runtime="openvino").explain(pred, 0).method == "attention-rollout"


def test_a_model_that_cannot_be_converted_is_one_line_naming_it(cycle_data, tmp_path, monkeypatch):
    import openvino

    def refuse(*args, **kwargs):
        raise RuntimeError("Check 'op' failed\nunsupported operation aten::fancy\nmore details")

    monkeypatch.setattr(openvino, "convert_model", refuse)
    checkpoint = random_model(tmp_path / "run" / "best")
    with pytest.raises(LungsoundError, match=r"^model 'ast_tiny' cannot be converted to OpenVINO: Check 'op' failed"
                                             r"$"):
        export_openvino(checkpoint, data=cycle_data, n_check=4, log=quiet)
    assert not (tmp_path / "run" / "best-openvino").exists()
    assert [p.name for p in (tmp_path / "run").iterdir()] == ["best"]  # no temporary folder left behind


def test_a_model_that_reads_metadata_is_refused_before_anything_is_written(tmp_path):
    checkpoint = random_model(tmp_path / "run" / "best", overrides("clap_bts"))
    with pytest.raises(LungsoundError, match="reads the recording's metadata as a tokenised sentence"):
        export_openvino(checkpoint, log=quiet)
    assert sorted(p.name for p in (tmp_path / "run").iterdir()) == ["best"]
