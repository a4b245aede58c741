"""Issue 19 item 1: a command that writes a folder never deletes what the toolkit did not write.

Every folder writer goes through `lungsound.storage.claim_output_dir`: the target must be new, empty, or a folder of
the same kind the toolkit wrote (its describing files present, nothing else in it); a plain file, a folder of the
user's files, a folder of another kind and a folder holding (or inside) the source are refused in one line, and what
was there is left as it was.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from lungsound.cli import main
from lungsound.errors import LungsoundError
from lungsound.generation.diffusion import TRAIN_BETAS
from lungsound.generation.diffwave import DiffWave, DiffWaveConfig
from lungsound.generation.synth import synthesize
from lungsound.generation.vocoder_io import VOCODER_FOLDER, load_vocoder
from lungsound.sharing.push import stage
from lungsound.storage import claim_output_dir
from lungsound.models.folder import load_model, save_model
from tests.conftest import random_model

pytestmark = pytest.mark.usefixtures("one_thread")  # see tests/conftest.py


def one_error(capsys, argv: list[str]) -> str:
    """Run the CLI; it must exit 2 with exactly one line on stderr, which is returned."""
    assert main(argv) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("lungsound: error: "), lines
    return lines[0]


def user_folder(path: Path) -> Path:
    path.mkdir(parents=True)
    (path / "notes.txt").write_text("my notes")
    return path


def reference_checkpoint(path: Path) -> Path:
    """A small checkpoint in the reference DiffWave trainer's layout (model state dict + plain params)."""
    torch.manual_seed(0)
    model = DiffWave(DiffWaveConfig(residual_layers=2, residual_channels=4))
    params = {"residual_layers": 2, "residual_channels": 4, "dilation_cycle_length": 10,
              "noise_schedule": [float(b) for b in TRAIN_BETAS]}
    torch.save({"step": 3, "model": model.state_dict(), "params": params}, path)
    return path


@pytest.fixture
def model_folder(tmp_path) -> Path:
    return random_model(tmp_path / "runs" / "best")


def test_export_out_refuses_user_files_the_source_and_plain_files_and_keeps_them(model_folder, tmp_path, capsys):
    mine = user_folder(tmp_path / "mine")
    line = one_error(capsys, ["export", "--checkpoint", str(model_folder), "--out", str(mine)])
    assert f"{mine}: exists and holds other files (notes.txt), not only an ONNX export" in line
    assert (mine / "notes.txt").read_text() == "my notes" and sorted(p.name for p in mine.iterdir()) == ["notes.txt"]

    holder = model_folder.parent  # the folder holding the source checkpoint
    line = one_error(capsys, ["export", "--checkpoint", str(model_folder), "--out", str(holder)])
    assert "would overwrite or sit inside what it is made from" in line
    assert load_model(model_folder)[0] is not None

    plain = tmp_path / "export.txt"
    plain.write_text("a file")
    line = one_error(capsys, ["export", "--checkpoint", str(model_folder), "--out", str(plain)])
    assert line.endswith(f"{plain}: exists and is not a folder: choose a new or empty folder")
    assert plain.read_text() == "a file"

    line = one_error(capsys, ["export", "--checkpoint", str(model_folder), "--out", str(plain / "sub")])
    assert f"{plain / 'sub'}: cannot be created: {plain} is not a folder" in line

    line = one_error(capsys, ["export", "--checkpoint", str(model_folder), "--out", str(model_folder.parent.parent)])
    assert "would overwrite or sit inside" in line  # a folder two levels above the checkpoint holds it too


def test_export_replaces_its_own_previous_export_only(model_folder, tiny_icbhi, tmp_path, capsys):
    out = tmp_path / "onnx"
    argv = ["export", "--checkpoint", str(model_folder), "--out", str(out), "--check-data", str(tiny_icbhi),
            "--check-cycles", "2"]
    assert main(argv) == 0
    first = out.stat().st_ino
    assert main(argv) == 0  # an earlier export is replaced as a whole (a new folder swapped in)
    assert sorted(p.name for p in out.iterdir()) == ["config.yaml", "export.json", "meta.json", "model.onnx",
                                                      "model.safetensors"]
    assert out.stat().st_ino != first
    (out / "my-notes.md").write_text("kept")
    capsys.readouterr()
    line = one_error(capsys, argv)
    assert "holds other files (my-notes.md)" in line and (out / "my-notes.md").read_text() == "kept"


def test_generate_import_never_deletes_the_folder_of_the_checkpoint_it_reads(tmp_path, capsys):
    folder = tmp_path / "downloads"
    folder.mkdir()
    weights = reference_checkpoint(folder / "weights.pt")
    line = one_error(capsys, ["generate", "import", str(weights), "--out", str(folder)])
    assert "would overwrite or sit inside what it is made from" in line
    assert weights.is_file() and torch.load(weights, weights_only=True)["step"] == 3

    mine = user_folder(tmp_path / "mine")
    line = one_error(capsys, ["generate", "import", str(weights), "--out", str(mine)])
    assert "holds other files (notes.txt), not only a vocoder folder" in line and (mine / "notes.txt").exists()

    other_kind = random_model(tmp_path / "a-model")  # a model folder is not a vocoder folder
    line = one_error(capsys, ["generate", "import", str(weights), "--out", str(other_kind)])
    assert "holds other files (config.yaml, meta.json), not only a vocoder folder" in line
    assert load_model(other_kind)[0] is not None

    out = tmp_path / "vocoder"
    for _ in range(2):  # new, then its own earlier import: replaced
        assert main(["generate", "import", str(weights), "--out", str(out)]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["model.safetensors", "vocoder.json"]
    assert load_vocoder(out)[2]["step"] == 3


def test_generate_train_export_is_refused_before_training(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    mine = user_folder(tmp_path / "mine")
    line = one_error(capsys, ["generate", "train", "--export", str(mine), "train.steps=1", "model.residual_layers=2",
                              "model.residual_channels=4", f"tracking.output_dir={tmp_path / 'outputs'}"])
    assert "holds other files (notes.txt), not only a vocoder folder" in line
    assert not (tmp_path / "outputs").exists() and not (tmp_path / "mlruns").exists()  # nothing trained
    assert (mine / "notes.txt").read_text() == "my notes"


def test_generate_synth_out_is_claimed_before_the_vocoder_is_read(tmp_path):
    mine = user_folder(tmp_path / "mine")
    (mine / "README.md").write_text("my readme")  # a name a generated set also writes
    with pytest.raises(LungsoundError, match="holds other files .notes.txt., not only a generated set"):
        synthesize(tmp_path / "no-vocoder", 2, mine, progress=False)
    assert (mine / "README.md").read_text() == "my readme"
    only_readme = tmp_path / "docs"
    only_readme.mkdir()
    (only_readme / "README.md").write_text("mine too")
    with pytest.raises(LungsoundError, match=r"is not a generated set this toolkit wrote \(manifest.csv is missing\)"):
        synthesize(tmp_path / "no-vocoder", 2, only_readme, progress=False)


def test_push_out_takes_a_folder_staged_before_but_not_a_users_readme(model_folder, tmp_path):
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "README.md").write_text("my readme")  # a name a staged folder also has
    with pytest.raises(LungsoundError, match=r"is not a staged model folder this toolkit wrote \(config.yaml is"):
        stage(model_folder, docs, "alice/lungs")
    assert (docs / "README.md").read_text() == "my readme"
    staged = stage(model_folder, tmp_path / "staged", "alice/lungs").folder
    assert stage(model_folder, staged, "alice/lungs").folder == staged  # staged before: replaced


def test_model_folders_are_rewritten_but_never_over_other_files(tmp_path):
    best = random_model(tmp_path / "best")
    again = random_model(best)  # a run's best/ is rewritten at every better epoch
    assert again == best and sorted(p.name for p in best.iterdir()) == ["config.yaml", "meta.json",
                                                                        "model.safetensors"]
    (best / "plot.png").write_bytes(b"mine")
    model, cfg, _ = load_model(best)
    with pytest.raises(LungsoundError, match=r"holds other files \(plot.png\), not only a model folder"):
        save_model(best, model, cfg, {"selected_epoch": 2})
    assert (best / "plot.png").read_bytes() == b"mine"


def test_claim_output_dir_kinds_links_and_empty_folders(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    assert claim_output_dir(empty, VOCODER_FOLDER) == empty
    assert claim_output_dir(tmp_path / "new" / "deeper", VOCODER_FOLDER) == tmp_path / "new" / "deeper"
    assert not (tmp_path / "new").exists()  # nothing is created by the check
    half = tmp_path / "half"
    half.mkdir()
    (half / "model.safetensors").write_bytes(b"x")
    with pytest.raises(LungsoundError, match=r"is not a vocoder folder this toolkit wrote \(vocoder.json is missing\)"):
        claim_output_dir(half, VOCODER_FOLDER)
    link = tmp_path / "link"
    link.symlink_to(empty)
    with pytest.raises(LungsoundError, match="is a symbolic link"):
        claim_output_dir(link, VOCODER_FOLDER)
    nested = tmp_path / "with-sub"
    (nested / "sub").mkdir(parents=True)
    with pytest.raises(LungsoundError, match=r"holds other files \(sub\)"):
        claim_output_dir(nested, VOCODER_FOLDER)
