"""Hardening of configs and model checks (issue 19, items 5, 6, 9, 11, 12): YAML bombs, depth, size and duplicate keys
are refused by the one loader; model.params are checked by the model's registration before any run, folder or model
exists (from experiment files and from model folders' config.yaml); train.device names a device the machine has."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import yaml

from lungsound.cli import main
from lungsound.config import load_config
from lungsound.documents import MAX_BYTES, load_yaml
from lungsound.errors import LungsoundError
from lungsound.models import check_model_params, create_model
from lungsound.models.folder import load_model
from lungsound.training.trainer import resolve_device
from tests.conftest import random_model


def one_line(exc: pytest.ExceptionInfo, source) -> str:
    """The problem of a one-line LungsoundError that names `source`."""
    err = exc.value
    assert isinstance(err, LungsoundError) and "\n" not in str(err)
    assert err.path == str(source), (err.path, source)
    return err.problem


def laughs(levels: int = 9) -> str:
    """The "billion laughs" document in model.params: level i is a list of nine aliases of level i - 1 (9^9 strings)."""
    lines = ["model:", "  params:", "    l0: &l0 [lol, lol, lol, lol, lol, lol, lol, lol, lol]"]
    lines += [f"    l{i}: &l{i} [{', '.join([f'*l{i - 1}'] * 9)}]" for i in range(1, levels)]
    return "\n".join(lines) + "\n"


# --- item 5: what a config file may expand to -------------------------------------------------------------------------

def test_billion_laughs_in_model_params_is_refused_while_reading(tmp_path: Path):
    path = tmp_path / "bomb.yaml"
    path.write_text(laughs())
    assert len(path.read_bytes()) < 1000  # the whole attack is a few hundred bytes
    with pytest.raises(LungsoundError) as exc:
        load_config(path)
    problem = one_line(exc, path)
    # Lines 3-6 (l0..l3) expand to 10 + 91 + 820 + 7,381 values; l4 on line 7 alone to 66,430.
    assert problem.startswith("refused: the YAML expands to more than 10,000 values") and problem.endswith("(line 7)")


def test_recursive_alias_and_deep_nesting_are_refused_in_one_line(tmp_path: Path):
    deep = tmp_path / "deep.yaml"
    deep.write_text("model:\n  params:\n    depth: " + "[" * 5000 + "]" * 5000 + "\n")
    with pytest.raises(LungsoundError) as exc:
        load_config(deep)
    assert one_line(exc, deep) == "refused: the YAML nests deeper than 50 levels (line 3)"
    loop = tmp_path / "loop.yaml"
    loop.write_text("model:\n  params:\n    weights: &w [*w]\n")
    with pytest.raises(LungsoundError) as exc:
        load_config(loop)
    assert one_line(exc, loop).startswith("refused: a YAML alias refers to a node that contains it")


def test_a_config_of_more_than_1_mb_and_a_long_description_are_refused(tmp_path: Path):
    big = tmp_path / "big.yaml"
    big.write_text("description: '" + "x" * MAX_BYTES + "'\n")
    with pytest.raises(LungsoundError) as exc:
        load_config(big)
    assert one_line(exc, big) == f"refused: the experiment file is larger than {MAX_BYTES:,} bytes"
    with pytest.raises(LungsoundError) as exc:
        load_config(None, ["description=" + "y" * 10_001])
    problem = one_line(exc, "<defaults>")
    assert problem.startswith("description must be at most 10,000 characters") and len(problem) < 300
    assert load_config(None, ["description=" + "y" * 10_000]).description == "y" * 10_000


def test_a_model_folder_config_yaml_bomb_is_refused_by_load_model(tmp_path: Path):
    folder = random_model(tmp_path / "model")
    text = (folder / "config.yaml").read_text()
    (folder / "config.yaml").write_text(text + laughs().replace("model:\n  params:\n", "bombs:\n"))
    with pytest.raises(LungsoundError) as exc:
        load_model(folder)
    assert one_line(exc, folder).startswith("unreadable config.yaml: refused: the YAML expands to more than")


def test_anchors_and_merge_keys_within_the_bounds_still_load(tmp_path: Path):
    path = tmp_path / "anchors.yaml"
    path.write_text("train: &t {epochs: 2, batch_size: 4}\ntracking:\n  run_name: a\n"
                    "model:\n  name: ast_tiny\n  params: {<<: {depth: 1, num_heads: 2}, depth: 2}\n")
    cfg = load_config(path)
    assert (cfg.train.epochs, cfg.train.batch_size, cfg.model.params) == (2, 4, {"depth": 2, "num_heads": 2})


# --- item 11: duplicate keys ------------------------------------------------------------------------------------------

def test_a_duplicate_section_is_refused_naming_the_key_and_both_lines(tmp_path: Path):
    path = tmp_path / "twice.yaml"
    path.write_text("train:\n  epochs: 50\nmodel:\n  name: ast\ntrain:\n  epochs: 1\n")
    with pytest.raises(LungsoundError) as exc:
        load_config(path)
    assert one_line(exc, path).startswith("duplicate key 'train' on line 5 (first on line 1)")
    with pytest.raises(LungsoundError, match="duplicate key 'lr' on line 3 .first on line 2."):
        load_yaml("train:\n  lr: 1.0e-4\n  lr: 1.0e-3\n", "inline.yaml")


# --- item 9: model.params checked by the registration before anything runs --------------------------------------------

BAD_PARAMS = [
    ("model.params.num_heads=0", "model.params.num_heads must be an integer in [1, 64], got 0"),
    ("model.params.fstride=0", "model.params.fstride must be an integer in [1, 128], got 0"),
    ("model.params.patch=0", "model.params.patch must be an integer in [1, 128], got 0"),
    ("model.params.drop=5.0", "model.params.drop must be a number in [0, 1), got 5.0"),
    ("model.params.embed_dim=abc", "model.params.embed_dim must be an integer in [1, 4096], got 'abc'"),
    ("model.params.depth=-1", "model.params.depth must be an integer in [1, 48], got -1"),
    ("model.params.embed_dim=1000000000", "model.params.embed_dim must be an integer in [1, 4096], got 1000000000"),
    ("model.params.embed_dim=30", "model.params: embed_dim 30 is not divisible by num_heads 12"),
    ("model.params.depht=3", "model.params: unknown config key(s) depht for model 'ast'; known keys: "
                             "attn_implementation, depth, drop"),
    ("model.params={fstride: 1, tstride: 1}", "model.params: 113 x 783 = 88,479 patch tokens, more than 8,192"),
    ("model.params={embed_dim: 4096, num_heads: 64, depth: 48}", "model.params: this AST would have about"),
]


@pytest.mark.parametrize(("override", "message"), BAD_PARAMS, ids=[o for o, _ in BAD_PARAMS])
def test_bad_model_params_are_refused_by_load_config(override, message):
    with pytest.raises(LungsoundError) as exc:
        load_config(None, [override])
    assert one_line(exc, "<defaults>").startswith(message)


def test_other_models_params_are_checked_by_their_registrations():
    with pytest.raises(LungsoundError, match=r"arch 'resnet_9000' is not a timm model name \(model 'cnn'\)"):
        load_config(None, ["model.name=cnn", "model.params.arch=resnet_9000"])
    speech = ["model.name=wav2vec2_tiny", "data.input=waveform", "augment.specaug=false"]
    with pytest.raises(LungsoundError, match=r"overrides.hidden_size must be an integer in \[1, 4096\]"):
        load_config(None, [*speech, "model.params.overrides={hidden_size: 1000000000}"])
    with pytest.raises(LungsoundError, match="backbone_config.conv_dim must be a list of at most 16 items"):
        load_config(None, [*speech, "model.params.backbone_config={conv_dim: [10000000]}"])
    with pytest.raises(LungsoundError, match="hidden_size 96 is not divisible by num_attention_heads 5"):
        check_model_params("hubert_tiny", {"overrides": {"hidden_size": 96, "num_attention_heads": 5}})
    with pytest.raises(LungsoundError, match="model.params.depth must be an integer in"):
        create_model("ast_tiny", depth=0)  # the Python API checks too
    # The papers' settings and the quickstart's stay valid.
    assert check_model_params("ast", {}, seconds=8.0)["input_frames"] == 798
    assert check_model_params("ast_tiny", {"fstride": 16, "tstride": 16}, seconds=2.0)["embed_dim"] == 64


def test_a_short_clip_is_refused_against_the_models_patch(tmp_path):
    with pytest.raises(LungsoundError) as exc:
        load_config(None, ["data.duration=0.1"])
    assert one_line(exc, "<defaults>").startswith("model.params: an fbank of 8 frames x 128 bins is smaller than one "
                                                  "16x16 patch")


def test_train_with_bad_params_fails_before_any_run_or_folder(tmp_path: Path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    code = main(["train", "--quiet", "model.name=ast_tiny", "model.params.patch=0", "train.epochs=1",
                 f"tracking.output_dir={tmp_path / 'outputs'}"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and err == ("lungsound: error: <defaults>: model.params.patch must be an integer in [1, 128], "
                                 "got 0 (model 'ast_tiny')")
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # no MLflow store, no run folder


def test_a_model_folder_with_a_huge_embed_dim_is_refused_naming_its_config_yaml(tmp_path: Path, capsys):
    folder = random_model(tmp_path / "model")
    cfg = yaml.safe_load((folder / "config.yaml").read_text())
    cfg["model"]["params"] = {"embed_dim": 10**9}
    (folder / "config.yaml").write_text(yaml.safe_dump(cfg))
    with pytest.raises(LungsoundError) as exc:
        load_model(folder)
    assert one_line(exc, folder / "config.yaml") == ("model.params.embed_dim must be an integer in [1, 4096], got "
                                                     "1000000000 (model 'ast_tiny')")
    for argv in (["predict", "--checkpoint", str(folder), str(tmp_path / "none.wav")],
                 ["evaluate", "--checkpoint", str(folder)], ["export", "--checkpoint", str(folder),
                                                              "--out", str(tmp_path / "onnx")]):
        assert main(argv) == 2
        err = capsys.readouterr().err.strip()
        assert err.count("\n") == 0 and f"{folder / 'config.yaml'}: model.params.embed_dim must be" in err
    assert not (tmp_path / "onnx").exists()


# --- item 12: train.device --------------------------------------------------------------------------------------------

def test_a_cuda_device_this_machine_lacks_is_one_line(monkeypatch, tmp_path, capsys):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(LungsoundError, match=r"^train.device=cuda:7, but CUDA is not available here"):
        resolve_device("cuda:7")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    code = main(["train", "--quiet", "model.name=ast_tiny", "train.device=cuda:7", "data.duration=2.0",
                 f"tracking.output_dir={tmp_path / 'outputs'}"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and err.startswith("lungsound: error: train.device=cuda:7, but CUDA is not available here")
    assert err.count("\n") == 0 and not (tmp_path / "mlflow.db").exists()
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    with pytest.raises(LungsoundError, match=r"cuda:7, but this machine has 2 CUDA device\(s\): cuda:0..cuda:1$"):
        resolve_device("cuda:7")
    assert resolve_device("cuda:1") == torch.device("cuda:1")  # only built, nothing moved there
    assert resolve_device("cpu") == torch.device("cpu")
