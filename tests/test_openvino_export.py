"""`lungsound export --format openvino` from the command line, its choices (precision from the CPU, calibration drawn
with a seed and held out from the check, the agreement threshold) and the OpenVINO folder everywhere a model is
chosen: the app's picker, `lungsound push` and its model card, `validate-external --runtime openvino`.
"""

from __future__ import annotations

import json
import shutil
import warnings
from pathlib import Path

import numpy as np
import pytest

import lungsound.inference.openvino_folder as openvino_folder
from lungsound.cli import main
from lungsound.config import load_config
from lungsound.errors import LungsoundError
from lungsound.inference import Predictor
from lungsound.inference.openvino_calibration import draw_cycles
from lungsound.inference.openvino_export import export_openvino
from lungsound.inference.openvino_folder import OpenVinoModel, native_bf16, resolve_precision
from lungsound.sharing.card import model_card
from lungsound.sharing.push import stage
from tests.app_support import load_app_module
from tests.conftest import random_model, write_recording

pytest.importorskip("openvino", reason="openvino is not installed")
pytest.importorskip("nncf", reason="nncf is not installed")
TINY = load_config(None, ["model.name=ast_tiny", "data.duration=2.0"])


def quiet(line: str) -> None:
    pass


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    return random_model(tmp_path_factory.mktemp("ov-export") / "outputs" / "app" / "run-1" / "best")


@pytest.fixture(scope="module")
def int8_folder(checkpoint, cycle_data) -> Path:
    return Path(export_openvino(checkpoint, int8=True, data=cycle_data, calibration_cycles=8, n_check=4,
                                min_agreement=0.0, log=quiet)["folder"])


def test_the_command_exports_int8_at_the_cpus_precision(checkpoint, cycle_data, tmp_path, capsys):
    source = shutil.copytree(checkpoint, tmp_path / "best")
    assert main(["export", "--checkpoint", str(source), "--format", "openvino", "--int8", "--precision", "auto",
                 "--calibration", str(cycle_data), "--calibration-cycles", "8", "--check-cycles", "4",
                 "--min-agreement", "0"]) == 0
    out = capsys.readouterr().out
    native, why = native_bf16()
    compute = "bf16" if native else "f32"
    label = "int8+bf16" if native else "int8"
    folder = tmp_path / ("best-openvino-int8" + ("-bf16" if native else ""))
    assert f"precision: auto: {compute}, because {why}\n" in out
    assert f"int8: NNCF post-training quantisation on 8 calibration cycles (transformer preset)" in out
    assert f"exported ast_tiny as {label} OpenVINO: {folder} (model.xml + model.bin " in out
    assert f"--checkpoint {folder} --runtime openvino" in out
    info = json.loads((folder / "export.json").read_text())
    assert info["format"] == "openvino" and info["precision"] == label and info["inference_precision"] == compute
    assert info["quantization"]["calibration"].startswith(f"8 calibration + 4 held-out check cycles drawn from ")
    assert info["quantization"]["seed"] == 0 and info["check"]["inputs"] == 4
    assert set(info["weights_sha256"]) == {"model.xml", "model.bin", "model.safetensors"}
    assert info["cpu"]["openvino_capabilities"] and "FP32" in info["cpu"]["openvino_capabilities"]
    assert sorted(p.name for p in folder.iterdir()) == ["config.yaml", "export.json", "meta.json", "model.bin",
                                                       "model.safetensors", "model.xml"]


def test_an_option_the_format_does_not_take_is_one_line(checkpoint, capsys):
    assert main(["export", "--checkpoint", str(checkpoint), "--format", "onnx", "--precision", "bf16"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == "lungsound: error: --precision is not an option of --format onnx"


@pytest.mark.parametrize("cpu, expected", [
    ({"flags": ["avx2", "avx512f", "avx512_vnni"], "openvino_capabilities": ["FP32", "BF16", "INT8"]},
     ("f32", "auto: f32, because the CPU has neither AVX512-BF16 nor AMX")),
    ({"flags": ["avx2", "avx512f", "avx512_bf16"], "openvino_capabilities": ["FP32", "BF16"]},
     ("bf16", "auto: bf16, because the CPU has avx512_bf16")),
    ({"flags": ["avx512_bf16", "amx_bf16", "amx_int8"], "openvino_capabilities": ["FP32", "BF16"]},
     ("bf16", "auto: bf16, because the CPU has avx512_bf16 and amx_bf16")),
    ({"flags": None, "openvino_capabilities": ["FP32", "INT8"]},
     ("f32", "auto: f32, because OpenVINO does not list BF16 among the CPU's capabilities")),
])
def test_auto_precision_is_bf16_only_on_a_cpu_with_native_bf16(cpu, expected, monkeypatch):
    monkeypatch.setattr(openvino_folder, "cpu_instructions", lambda: {"device": "test", **cpu})
    assert resolve_precision("auto") == expected
    assert resolve_precision("f32") == ("f32", "f32 as asked") and resolve_precision("bf16")[0] == "bf16"
    with pytest.raises(LungsoundError, match=r"^--precision must be one of f32, bf16, auto, got 'fp16'$"):
        resolve_precision("fp16")


def test_a_bf16_folder_runs_in_f32_on_a_cpu_without_bf16(int8_folder, monkeypatch):
    monkeypatch.setattr(openvino_folder, "native_bf16", lambda: (False, "the CPU has neither AVX512-BF16 nor AMX"))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model = OpenVinoModel(int8_folder / "model.xml", precision="int8+bf16")
    hint = model.compiled.get_property("INFERENCE_PRECISION_HINT")
    assert model.inference == "f32" and str(hint) == "<Type: 'float32'>"
    assert [str(w.message) for w in caught] == [f"{int8_folder}: this int8+bf16 model runs in float32 here: the CPU "
                                                "has neither AVX512-BF16 nor AMX"]


def test_calibration_cycles_are_drawn_with_a_seed_and_held_out_of_the_check(cycle_data, tmp_path):
    a, b = draw_cycles(TINY, cycle_data, 6, 3, seed=0), draw_cycles(TINY, cycle_data, 6, 3, seed=0)
    assert a.calibration.shape == (6, 198, 128) and a.check.shape == (3, 198, 128)
    assert np.array_equal(a.calibration.numpy(), b.calibration.numpy()) and np.array_equal(a.check, b.check)
    other = draw_cycles(TINY, cycle_data, 6, 3, seed=1)
    assert not np.array_equal(a.calibration.numpy(), other.calibration.numpy())
    rows = {r.numpy().tobytes() for r in a.calibration}
    assert not any(r.numpy().tobytes() in rows for r in a.check)  # no check cycle was calibrated on
    small = tmp_path / "small"
    write_recording(small, "101_1b1_Al_sc_Meditron", [(0.1 + i, 1.0 + i, 0, 0) for i in range(5)])
    few = draw_cycles(TINY, small, 300, 64)  # 5 cycles: a quarter (1) held out, 4 calibrate
    assert (len(few.calibration), len(few.check), few.recordings) == (4, 1, 1)
    assert few.described == f"4 calibration + 1 held-out check cycles drawn from 1 recordings in {small}"
    write_recording(tmp_path / "one", "101_1b1_Al_sc_Meditron", [(0.1, 1.0, 0, 0)])
    with pytest.raises(LungsoundError, match="only 1 annotated cycle"):
        draw_cycles(TINY, tmp_path / "one", 300, 64)


def test_an_int8_model_below_the_agreement_threshold_is_refused_and_nothing_is_written(checkpoint, cycle_data,
                                                                                      tmp_path, monkeypatch):
    real = OpenVinoModel.logits
    monkeypatch.setattr(OpenVinoModel, "logits",
                        lambda self, x: -real(self, x) if self.precision.startswith("int8") else real(self, x))
    out = tmp_path / "refused"
    with pytest.raises(LungsoundError, match=r"the int8 model gives PyTorch's class for only \d+\.\d% of the check "
                                             r"cycles, below the threshold 95%: use the fp32 export$"):
        export_openvino(checkpoint, out, int8=True, data=cycle_data, calibration_cycles=8, n_check=4, log=quiet)
    assert not out.exists() and not list(tmp_path.glob(".refused*"))


def test_the_app_picker_push_and_card_take_an_openvino_folder(checkpoint, int8_folder, tmp_path, monkeypatch):
    models = load_app_module("models")
    monkeypatch.delenv("LUNGSOUND_APP_MODEL", raising=False)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.chdir(tmp_path)
    found = models.discover_models(checkpoint.parents[2])
    assert [(c.label, c.runtime) for c in found.choices] == [("checkpoint: app/run-1", "torch"),
                                                            ("OpenVINO int8: app/run-1/best-openvino-int8", "openvino")]
    assert models.load_predictor(found.choices[1].source, found.choices[1].runtime).runtime_label == "OpenVINO int8"
    staged = stage(int8_folder, tmp_path / "staged", "alice/lungs-openvino")
    assert staged.files == ["README.md", "config.yaml", "export.json", "meta.json", "model.bin", "model.safetensors",
                            "model.xml"]
    assert (tmp_path / "staged" / "model.bin").read_bytes() == (int8_folder / "model.bin").read_bytes()
    card = model_card(int8_folder, "alice/lungs-openvino")
    assert "OpenVINO int8 (`model.xml` and `model.bin`), run with OpenVINO" in card
    assert "OpenVINO export: `from_pretrained` runs it with OpenVINO." in card
    assert Predictor.from_pretrained(tmp_path / "staged").runtime == "openvino"  # the pushed folder runs as such


def test_validate_external_runs_an_openvino_folder(int8_folder, kauh_dir, tmp_path, capsys):
    folder = shutil.copytree(int8_folder, tmp_path / "int8")
    assert main(["validate-external", "--dataset", "kauh", "--root", str(kauh_dir), "--checkpoint", str(folder),
                 "--runtime", "openvino", "--json", "--quiet"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["runtime"] == "OpenVINO int8" and result["scored"] + len(result["unmappable"]) == result["recordings"]
    assert result["scored"] >= 1
    assert Predictor.from_checkpoint(folder, runtime="openvino").backend.precision == "int8"  # still loads


def test_calibration_and_check_data_can_come_from_two_folders(checkpoint, cycle_data, tmp_path):
    check = tmp_path / "check"
    write_recording(check, "101_1b1_Al_sc_Meditron", [(0.1 + i, 1.0 + i, 0, 0) for i in range(5)])
    info = export_openvino(checkpoint, tmp_path / "out", int8=True, calibration=cycle_data, data=check,
                           calibration_cycles=6, n_check=3, min_agreement=0.0, log=quiet)
    assert info["check"]["data"] == f"3 check cycles drawn from 1 recordings in {check}"
    assert info["check"]["inputs"] == 3 and info["quantization"]["subset_size"] == 6
    assert info["quantization"]["calibration"].startswith("6 calibration + 3 held-out check cycles drawn from ")
    assert info["quantization"]["calibration"].endswith(f" recordings in {cycle_data}")
