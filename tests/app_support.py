"""What the app's tests share: paths, app modules loaded by file, a tiny random model and the prediction an independent
`Predictor` makes on an upload (tests/test_app*.py, tests/test_hub_sharing.py). The fixtures built on these
(`tiny_model`, `good_recording`, `good_excerpt`, `expected`) are in tests/conftest.py.
"""

from __future__ import annotations

import importlib.util
import io
import sys
from pathlib import Path

import numpy as np
import soundfile as sf

REPO = Path(__file__).resolve().parents[1]
APP = REPO / "app" / "streamlit_app.py"
AUDIO_DIR = REPO.parent / "shared" / "data" / "icbhi" / "audio_and_txt_files"
GOOD = "104_1b1_Ll_sc_Litt3200"  # 18.5 s, 4 kHz: small and quick
TIMEOUT = 180


def load_app_module(name: str):
    """app/<name>.py as a module (the app folder is not a package; dataclasses need the module registered)."""
    full = f"lungsound_app_{name}"
    if full not in sys.modules:
        spec = importlib.util.spec_from_file_location(full, REPO / "app" / f"{name}.py")
        sys.modules[full] = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(sys.modules[full])
    return sys.modules[full]


def to_wav(x: np.ndarray, sr: int) -> bytes:
    buf = io.BytesIO()
    sf.write(buf, np.asarray(x, dtype=np.float32), sr, format="WAV", subtype="PCM_16")
    return buf.getvalue()


def write_tiny_model(folder: Path) -> Path:
    """A random 2-block AST checkpoint (2 s input) of a config without data.root, i.e. trained on the synthetic set."""
    import torch

    from lungsound.config import load_config
    from lungsound.models.build import build_model
    from lungsound.models.folder import save_model

    cfg = load_config(None, ["model.name=ast_tiny", "data.duration=2.0"])
    torch.manual_seed(0)
    meta = {"selected_epoch": 1, "protocol": "paper", "method": "ce", "experiment": "app-test",
            "metrics": {"test_sp": 61.0, "test_se": 40.0, "test_score": 50.5}}  # data.root None: synthetic
    return save_model(folder, build_model(cfg), cfg, meta)


def predict_upload(model: Path, recording: tuple[str, bytes]):
    """The prediction an independent Predictor makes on an upload."""
    from lungsound.inference import Predictor

    name, data = recording
    return Predictor.from_checkpoint(model).predict(data, name=name, max_seconds=120.0)


def open_app(model: Path, monkeypatch, cwd: Path):
    """The app run once with `model` as $LUNGSOUND_APP_MODEL, no MLflow store and `cwd` (no ./outputs) as the folder."""
    from streamlit.testing.v1 import AppTest

    monkeypatch.setenv("LUNGSOUND_APP_MODEL", str(model))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.chdir(cwd)
    at = AppTest.from_file(str(APP), default_timeout=TIMEOUT)
    at.run()
    assert not at.exception, at.exception
    return at
