"""Shared fixtures: the real data in ../shared (skipped with a reason when absent) and tiny hand-made databases."""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ.setdefault("MPLBACKEND", "Agg")
# Caches (features, the built-in data set) go to a throwaway folder, never to the user's home.
if "LUNGSOUND_CACHE" not in os.environ:
    os.environ["LUNGSOUND_CACHE"] = tempfile.mkdtemp(prefix="lungsound-test-cache-")
    atexit.register(shutil.rmtree, os.environ["LUNGSOUND_CACHE"], True)

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"


def _shared(sub: str) -> Path:
    path = SHARED_DATA / sub
    if not path.is_dir():
        pytest.skip(f"real data not available: {path} is absent (CI has it at ../shared/data)")
    return path


@pytest.fixture(scope="session")
def icbhi_dir() -> Path:
    """The real ICBHI folder: 920 annotation files, 29 recordings with audio, meta/ split and metadata files."""
    return _shared("icbhi")


@pytest.fixture(scope="session")
def kauh_dir() -> Path:
    return _shared("kauh")


def one_error(capsys, argv: list[str]) -> str:
    """Run the CLI with `argv`: it must exit 2 with exactly one `lungsound: error: ...` line on stderr, returned."""
    from lungsound.cli import main

    assert main(argv) == 2
    _, err = capsys.readouterr()
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("lungsound: error: "), err
    return lines[0]


@pytest.fixture(scope="session")
def cycle_data(tmp_path_factory) -> Path:
    """The real ICBHI folder, or (when it is absent) a two-recording ICBHI-format folder of 12 annotated cycles."""
    real = SHARED_DATA / "icbhi"
    if real.is_dir():
        return real
    root = tmp_path_factory.mktemp("cycle-data")
    for k, stem in enumerate(("101_1b1_Al_sc_Meditron", "102_1b1_Ar_sc_Meditron")):
        write_recording(root, stem, [(0.1 + 1.3 * i, 1.4 + 1.3 * i, i % 2, (i // 2) % 2) for i in range(6)], seed=k)
    return root


def write_recording(folder: Path, stem: str, cycles: list[tuple[float, float, int, int]], sr: int = 4000,
                    duration: float | None = None, seed: int = 0, subtype: str = "PCM_16") -> Path:
    """Write `<stem>.wav` (noise plus a tone) and `<stem>.txt` with the given cycles; returns the wav path."""
    folder.mkdir(parents=True, exist_ok=True)
    duration = duration if duration is not None else cycles[-1][1] + 0.5
    rng = np.random.default_rng(seed)
    t = np.arange(int(duration * sr)) / sr
    audio = 0.1 * rng.standard_normal(len(t)) + 0.3 * np.sin(2 * np.pi * 220 * t)
    sf.write(folder / f"{stem}.wav", np.clip(audio, -1, 1).astype(np.float32), sr, subtype=subtype)
    (folder / f"{stem}.txt").write_text("".join(f"{a}\t{b}\t{c}\t{w}\n" for a, b, c, w in cycles))
    return folder / f"{stem}.wav"


def random_model(folder: Path, overrides: tuple[str, ...] = ("model.name=ast_tiny", "data.duration=2.0")) -> Path:
    """A model folder with random weights (seed 0): built in a second, loads and predicts like a trained one."""
    import torch

    from lungsound.config import load_config
    from lungsound.models.build import build_model
    from lungsound.models.folder import save_model

    torch.manual_seed(0)
    cfg = load_config(None, list(overrides))
    return save_model(folder, build_model(cfg), cfg, {"selected_epoch": 1})


def write_generated_set(root: Path, out: Path, per_recording: int = 2, split: str = "train", seconds: float = 1.5) -> Path:
    """A generated set made by hand: noise clips 'generated' from the first cycles of `split` recordings of `root`."""
    import csv

    from lungsound.data.database import open_database
    from lungsound.data.generated import COLUMNS

    db = open_database(root)
    out.mkdir(parents=True, exist_ok=True)
    rows, rng = [], np.random.default_rng(0)
    for rec in db.select(split):
        for k, cycle in enumerate(rec.cycles[:per_recording]):
            name = f"{rec.stem}_{k}.wav"
            sf.write(out / name, (0.1 * rng.standard_normal(int(seconds * 16000))).astype(np.float32), 16000)
            rows.append({"file": name, "class": ("normal", "crackle", "wheeze", "both")[cycle.label],
                         "source_recording": rec.stem, "source_cycle": k, "patient": rec.patient,
                         "device": rec.device, "seed": 0, "vocoder_sha256": "test"})
    with open(out / "manifest.csv", "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(COLUMNS))
        writer.writeheader()
        writer.writerows(rows)
    return out


TINY_RECORDINGS = {
    "101_1b1_Al_sc_Meditron": ("train", [(0.1, 1.2, 0, 0), (1.2, 2.5, 1, 0), (2.5, 3.0, 0, 1)]),
    "102_1b1_Ar_sc_Meditron": ("train", [(0.0, 0.9, 1, 1), (0.9, 2.0, 0, 0)]),
    "103_2b2_Ar_mc_LittC2SE": ("test", [(0.2, 1.5, 0, 0), (1.5, 2.4, 0, 1)]),
    "104_1b1_Ll_sc_Litt3200": ("test", [(0.05, 1.0, 1, 0)]),
}


@pytest.fixture
def tiny_icbhi(tmp_path: Path) -> Path:
    """A 4-recording ICBHI-format folder (flat archive layout) with a split file and metadata."""
    root = tmp_path / "ICBHI_final_database"
    for i, (stem, (_, cycles)) in enumerate(TINY_RECORDINGS.items()):
        write_recording(root, stem, cycles, sr=4000 if "Litt3200" in stem else 8000, seed=i)
    (root / "ICBHI_challenge_train_test.txt").write_text(
        "".join(f"{stem}\t{split}\n" for stem, (split, _) in TINY_RECORDINGS.items()))
    (root / "metadata.txt").write_text("101\t3.0\tF\tNA\t19.0\t99.0\tPr\n102\t0.75\tF\tNA\t9.8\t73.0\tAr\n"
                                       "103\t70.0\tF\t33.0\tNA\tNA\tAr\n104\t70.0\tM\t28.47\tNA\tNA\tAl\n")
    (root / "ICBHI_Challenge_diagnosis.txt").write_text("101\tURTI\n102\tHealthy\n103\tAsthma\n104\tCOPD\n")
    return root


@pytest.fixture(scope="session")
def small_icbhi(tmp_path_factory) -> Path:
    """12 recordings (8 train, 4 test patients), 6 cycles each, all four devices: enough to train a tiny model."""
    root = tmp_path_factory.mktemp("small") / "db"
    rng = np.random.default_rng(0)
    lines = []
    for patient in range(101, 113):
        device = ("Meditron", "LittC2SE", "AKGC417L", "Litt3200")[patient % 4]
        stem = f"{patient}_1b1_Al_sc_{device}"
        cycles, t = [], 0.1
        for _ in range(6):
            d = float(rng.uniform(0.8, 2.0))
            cycles.append((round(t, 3), round(t + d, 3), int(rng.random() < 0.4), int(rng.random() < 0.3)))
            t += d
        write_recording(root, stem, cycles, sr=4000 if device == "Litt3200" else 8000, seed=patient)
        lines.append(f"{stem}\t{'train' if patient < 109 else 'test'}\n")
    (root / "ICBHI_challenge_train_test.txt").write_text("".join(lines))
    return root


@pytest.fixture(scope="module")
def mlflow_store(tmp_path_factory) -> str:
    """A sqlite MLflow store shared by the tests of one module (creating a store costs seconds)."""
    import mlflow

    uri = f"sqlite:///{tmp_path_factory.mktemp('mlflow') / 'mlflow.db'}"
    old = os.environ.get("MLFLOW_TRACKING_URI")
    os.environ["MLFLOW_TRACKING_URI"] = uri
    mlflow.set_tracking_uri(uri)
    yield uri
    if old is None:
        os.environ.pop("MLFLOW_TRACKING_URI", None)
    else:
        os.environ["MLFLOW_TRACKING_URI"] = old


@pytest.fixture(autouse=True)
def _restore_main_module():
    """Streamlit's AppTest runs the app script as `__main__`; put the real one back so that later spawned worker
    processes (the synthetic generator's pool) do not re-run the app script when they start."""
    import sys

    main = sys.modules.get("__main__")
    yield
    if main is not None:
        sys.modules["__main__"] = main


@pytest.fixture(scope="module")
def one_thread():
    """One intra-op thread: small convolutions only pay for thread start-up (and stall on a busy machine)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


# --- the app's tests: a tiny random model, the real recording they upload, and what an independent Predictor says ---

@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory) -> Path:
    from tests.app_support import write_tiny_model

    return write_tiny_model(tmp_path_factory.mktemp("app-model") / "tiny")


@pytest.fixture(scope="module")
def good_recording() -> tuple[str, bytes]:
    from tests.app_support import AUDIO_DIR, GOOD

    path = AUDIO_DIR / f"{GOOD}.wav"
    if not path.is_file():
        pytest.skip(f"real data not available: {path} is absent (CI has it at ../shared/data)")
    return path.name, path.read_bytes()


@pytest.fixture(scope="module")
def good_excerpt(good_recording) -> tuple[str, bytes]:
    """The first 6 s of the good recording (quicker to analyse; used after each bad input)."""
    import io

    from tests.app_support import to_wav

    x, sr = sf.read(io.BytesIO(good_recording[1]), dtype="float32")
    return "excerpt.wav", to_wav(x[: 6 * sr], sr)


@pytest.fixture(scope="module")
def expected(tiny_model, good_recording):
    from tests.app_support import predict_upload

    return predict_upload(tiny_model, good_recording)
