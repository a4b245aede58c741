"""Every registered runtime (`lungsound.inference.runtimes.RUNTIMES`) passes the same prediction check: on a tiny random
model folder (exported first with the runtime's own `export` where it has one), a real recording (a synthetic one
when ../shared/data is absent) gives the torch runtime's segments and probabilities within the runtime's tolerance; a
batch of 1 and a batch of N give the same logits; what the runtime says about itself (label, precision, largest
batch, whether it can explain) holds; and `runtime_for` picks it for its own folders only.

A new runtime is tested here by registering it: nothing in this file names one, except torch as the reference. The
last test registers a runtime of its own (a copy of the weights under another file name, "exported" by copying) and
follows it through export, predict, the app's picker, push and the model card: the seam is one class and its
registration.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from lungsound.cli import main
from lungsound.errors import LungsoundError
from lungsound.inference import DEFAULT_RUNTIME, RUNTIMES, Predictor, runtime_for
from lungsound.inference.runtimes import TorchRuntime
from lungsound.models.folder import CONFIG_FILE, META_FILE, MODEL_FILE, load_model, read_config
from lungsound.models.registry import model_spec
from lungsound.sharing.card import model_card
from lungsound.sharing.push import stage
from tests.app_support import load_app_module
from tests.conftest import REPO, SHARED_DATA, random_model

RECORDING = SHARED_DATA / "icbhi" / "audio_and_txt_files" / "104_1b1_Ll_sc_Litt3200.wav"  # 18.5 s at 4 kHz
TOLERANCE = {"fp32": 1e-4}  # largest |probability difference| from PyTorch fp32 allowed per precision
EXPORTED = [name for name, cls in RUNTIMES.items() if cls.export is not None]


def quiet(line: str) -> None:
    pass


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    return random_model(tmp_path_factory.mktemp("runtimes") / "run" / "best")


@pytest.fixture(scope="module")
def check_data(cycle_data) -> Path:
    """The real ICBHI folder, or a two-recording ICBHI-format folder when it is absent (tests/conftest.py)."""
    return cycle_data


@pytest.fixture(scope="module")
def recording(tmp_path_factory) -> Path:
    if RECORDING.is_file():
        return RECORDING
    path = tmp_path_factory.mktemp("recording") / "synthetic.wav"
    rng = np.random.default_rng(0)
    t = np.arange(12 * 4000) / 4000
    x = 0.1 * rng.standard_normal(len(t)) * (1.2 + np.sin(2 * np.pi * 0.25 * t)) + 0.05 * np.sin(2 * np.pi * 300 * t)
    sf.write(path, x.astype(np.float32), 4000)
    return path


@pytest.fixture(scope="module")
def folders(checkpoint, check_data) -> dict[str, Path]:
    """Each registered runtime's folder: the checkpoint for torch, an export (with the PyTorch weights) otherwise."""
    out = {DEFAULT_RUNTIME: checkpoint}
    for name in EXPORTED:
        info = RUNTIMES.get(name).export(checkpoint, checkpoint.parent / f"best-{name}", data=check_data, n_check=4,
                                         log=quiet)
        out[name] = Path(info["folder"])
    return out


@pytest.fixture(scope="module")
def reference(checkpoint, recording):
    return Predictor.from_checkpoint(checkpoint, device="cpu").predict(recording, segmentation="windows")


def probabilities(pred) -> np.ndarray:
    return np.array([list(s.probabilities.values()) for s in pred.segments])


@pytest.mark.parametrize("name", RUNTIMES.names())
def test_each_runtime_predicts_like_torch(name, folders, recording, reference):
    predictor = Predictor.from_checkpoint(folders[name], device="cpu", runtime=name)
    assert predictor.runtime == name and isinstance(predictor.backend, RUNTIMES.get(name))
    pred = predictor.predict(recording, segmentation="windows")
    assert [(s.start, s.end) for s in pred.segments] == [(s.start, s.end) for s in reference.segments]
    assert len(pred.segments) >= 5 and list(pred.segments[0].probabilities) == list(Predictor.classes)
    p, q = probabilities(pred), probabilities(reference)
    assert np.abs(p - q).max() <= TOLERANCE[predictor.backend.precision]
    assert (p.argmax(axis=1) == q.argmax(axis=1)).all()
    assert pred.summary["label"] == reference.summary["label"]


@pytest.mark.parametrize("name", RUNTIMES.names())
def test_a_batch_of_one_and_a_batch_of_n_give_the_same_result(name, folders, recording, reference):
    one = Predictor.from_checkpoint(folders[name], device="cpu", runtime=name, batch_size=1)
    many = Predictor.from_checkpoint(folders[name], device="cpu", runtime=name, batch_size=7)
    assert one.batch_size == 1 and many.batch_size == min(7, many.backend.max_batch or 7)
    np.testing.assert_allclose(probabilities(one.predict(recording, segmentation="windows")),
                               probabilities(many.predict(recording, segmentation="windows")), rtol=0, atol=1e-5)
    spans = [(s.start, s.end) for s in reference.segments[:5]]
    x = one.model_inputs(reference.waveform, spans)
    n = min(len(x), one.backend.max_batch or len(x))
    together = one.backend.logits(x[:n])
    alone = np.concatenate([one.backend.logits(x[i:i + 1]) for i in range(n)])
    assert together.shape == (n, len(Predictor.classes)) and together.dtype == np.float32
    np.testing.assert_allclose(together, alone, rtol=0, atol=1e-5)


@pytest.mark.parametrize("name", RUNTIMES.names())
def test_a_runtime_is_what_it_says(name, folders, recording):
    cls, folder = RUNTIMES.get(name), folders[name]
    predictor = Predictor.from_checkpoint(folder, device="cpu", runtime=name, batch_size=64)
    backend = predictor.backend
    assert backend.precision == cls.precision_of(folder) and backend.precision in TOLERANCE
    if cls.exported:
        assert backend.info["precision"] == backend.precision and backend.precision in backend.label
    assert predictor.card["runtime"] == predictor.runtime_label == backend.label and backend.words
    assert predictor.batch_size == min(64, backend.max_batch or 64)  # the predictor never exceeds it
    assert cls.files[0] in {f.name for f in folder.iterdir()} and cls.holds(folder)
    assert cls.describe(folder) and cls.title in cls.describe(folder)
    assert backend.can_explain  # the folder holds the PyTorch weights
    pred = predictor.predict(recording, segmentation="windows")
    explanation = predictor.explain(pred, 1)
    assert explanation.method == model_spec(read_config(folder).model.name).explanation == "attention-rollout"
    assert explanation.heatmap.shape == explanation.fbank.shape and explanation.heatmap.max() == 1.0


@pytest.mark.parametrize("name", EXPORTED)
def test_an_export_without_pytorch_weights_says_it_cannot_explain(name, checkpoint, check_data, recording, tmp_path):
    cls = RUNTIMES.get(name)
    info = cls.export(checkpoint, tmp_path / "lean", data=check_data, n_check=4, torch_weights=False, log=quiet)
    predictor = Predictor.from_checkpoint(info["folder"], runtime=name)
    assert not predictor.backend.can_explain and not predictor.can_explain
    assert predictor.card["explanation"] == f"none: this fast {cls.title} model was exported without its PyTorch weights"
    pred = predictor.predict(recording, segmentation="windows")
    with pytest.raises(LungsoundError, match="no explanation") as err:
        predictor.explain(pred, 0)
    assert "\n" not in str(err.value)
    with pytest.raises(LungsoundError, match=rf"holds only the {cls.title} model \(no PyTorch weights\): use the "
                                             rf"{name} runtime \(--runtime {name}\)$"):
        Predictor.from_checkpoint(info["folder"], runtime=DEFAULT_RUNTIME)


def test_runtime_for_picks_each_folders_own_runtime(folders, tmp_path):
    for name, folder in folders.items():
        assert runtime_for(folder) is RUNTIMES.get(name)  # an export runs on its runtime, a checkpoint on torch
        assert runtime_for(folder, DEFAULT_RUNTIME) is RUNTIMES.get(DEFAULT_RUNTIME)  # asked for: given
        for other in EXPORTED:
            assert RUNTIMES.get(other).holds(folder) == (other == name)
    assert runtime_for(tmp_path / "nowhere") is RUNTIMES.get(DEFAULT_RUNTIME)
    known = ", ".join([DEFAULT_RUNTIME] + [n for n in RUNTIMES.names() if n != DEFAULT_RUNTIME])
    with pytest.raises(LungsoundError, match=rf"^runtime must be one of {known}, got 'tensorrt'$"):
        runtime_for(folders[DEFAULT_RUNTIME], "tensorrt")


def test_importing_the_runtimes_module_registers_every_runtime():
    """In a fresh interpreter, importing the runtimes module alone registers every runtime (the package imports each
    runtime module, and none of them imports the package's other modules in a circle)."""
    code = "from lungsound.inference.runtimes import RUNTIMES; print(','.join(RUNTIMES.names()))"
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "PYTHONPATH": str(REPO)})
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == ",".join(RUNTIMES.names()) and len(RUNTIMES) >= 2


class CopyRuntime(TorchRuntime):
    """A runtime defined here: its folders hold the PyTorch weights once more as `weights.copy` and an export.json,
    written by its `export`; it runs them with PyTorch."""

    name, title, engine, exported = "copy", "Copy", "PyTorch from a copy", True
    files = ("weights.copy", "export.json", CONFIG_FILE, META_FILE, MODEL_FILE)

    @property
    def label(self) -> str:
        return f"Copy runtime {self.precision}"

    @property
    def words(self) -> str:
        return "the same weights under another name"

    @classmethod
    def holds(cls, folder: Path) -> bool:
        return all((Path(folder) / name).is_file() for name in cls.files[:3])

    @classmethod
    def precision_of(cls, folder: Path) -> str:
        return json.loads((Path(folder) / "export.json").read_text())["precision"]

    @classmethod
    def describe(cls, folder: Path) -> str:
        return f"Copy {cls.precision_of(folder)} (`weights.copy`), run with PyTorch"

    @classmethod
    def open(cls, folder: Path, device=None, threads=None):
        model, cfg, meta = load_model(folder, device="cpu")
        return cls(model, device, threads), cfg, meta

    @staticmethod
    def export(checkpoint, out=None, **options) -> dict:
        out = Path(out) if out is not None else Path(checkpoint).parent / f"{Path(checkpoint).name}-copy"
        shutil.copytree(checkpoint, out)
        shutil.copy2(out / MODEL_FILE, out / "weights.copy")
        info = {"format": "copy", "precision": "fp32", "model": read_config(out).model.name}
        (out / "export.json").write_text(json.dumps(info))
        return {**info, "folder": str(out), "sizes_bytes": {f.name: f.stat().st_size for f in out.iterdir()}}


def test_a_runtime_defined_here_plugs_in_everywhere(checkpoint, recording, reference, tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(RUNTIMES._items, "copy", CopyRuntime)  # registered for this test only
    best = shutil.copytree(checkpoint, tmp_path / "outputs" / "app" / "run-1" / "best")
    assert main(["export", "--checkpoint", str(best), "--format", "copy"]) == 0
    out = capsys.readouterr().out
    folder = best.parent / "best-copy"
    assert f"exported ast_tiny as fp32 Copy: {folder} (weights.copy" in out and "--runtime copy" in out
    assert runtime_for(folder) is CopyRuntime and runtime_for(best) is TorchRuntime
    auto = Predictor.from_pretrained(folder)
    assert auto.runtime == "copy" and auto.exported and auto.card["runtime"] == "Copy runtime fp32"
    assert auto.card["explanation"].endswith("computed with the folder's PyTorch weights for the segment shown")
    np.testing.assert_allclose(probabilities(auto.predict(recording, segmentation="windows")),
                               probabilities(reference), rtol=0, atol=1e-6)
    assert main(["predict", str(recording), "--checkpoint", str(folder), "--runtime", "copy", "--json",
                 "--segmentation", "windows"]) == 0
    assert len(json.loads(capsys.readouterr().out)[0]["segments"]) == len(reference.segments)
    models = load_app_module("models")
    monkeypatch.delenv("LUNGSOUND_APP_MODEL", raising=False)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.chdir(tmp_path)
    found = models.discover_models(tmp_path / "outputs")
    assert [(c.label, c.runtime) for c in found.choices] == [("checkpoint: app/run-1", "torch"),
                                                            ("Copy fp32: app/run-1/best-copy", "copy")]
    assert models.load_predictor(found.choices[1].source, found.choices[1].runtime).runtime == "copy"
    staged = stage(folder, tmp_path / "staged", "alice/copy")
    assert staged.files == sorted(CopyRuntime.files + ("README.md",))
    card = model_card(folder, "alice/copy")
    assert "Copy fp32 (`weights.copy`), run with PyTorch; the PyTorch weights are included for explanations" in card
    assert "- copy" in card and "Copy export: `from_pretrained` runs it with PyTorch from a copy." in card
