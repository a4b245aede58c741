"""Hardening of the files the toolkit is handed (issue 19, items 3, 6, 15): a generated set's manifest cannot reach
outside its folder nor pass a database recording off as a clip, clip headers are checked before resampling, vocoder
sizes are bounded wherever they come from (vocoder.json, an imported checkpoint, an experiment file), set.json,
vocoder.json and manifest.csv are read typed, and one bad KAUH file name never stops the others."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from lungsound.cli import main
from lungsound.config import load_config
from lungsound.data.database import open_database
from lungsound.data.generated import GeneratedCycles, check_sources, load_clip, read_manifest, read_set_card
from lungsound.errors import LungsoundError
from lungsound.external import get_adapter
from lungsound.generation.diffusion import TRAIN_BETAS
from lungsound.generation.diffwave import DiffWave, DiffWaveConfig
from lungsound.generation.train import load_vocoder_config
from lungsound.generation.vocoder_io import import_reference, load_vocoder, save_vocoder
from lungsound.training.data import build_run_data
from tests.conftest import write_generated_set

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


def mixed_config(root: Path, generated: Path):
    return load_config(None, [f"data.root={root}", f"data.generated={generated}", "data.duration=2.0",
                              "model.name=ast_tiny", "data.cache=false"])


def set_first_file(folder: Path, file: str, **changes) -> None:
    """Point the first manifest row of a generated set at `file` (and change other columns of that row)."""
    with open(folder / "manifest.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    rows[0].update(file=file, **changes)
    with open(folder / "manifest.csv", "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def test_manifest_paths_must_stay_inside_the_set_folder(small_icbhi, tmp_path):
    outside = tmp_path / "outside.wav"
    sf.write(outside, np.zeros(16000, np.float32), 16000)  # a readable clip, so only its place is wrong
    for file, problem in (("../outside.wav", f"resolves to {outside}, outside the set folder {{set}}: refused"),
                          (str(outside), "must be a file name relative to the set folder")):
        gen = write_generated_set(small_icbhi, tmp_path / f"set-{len(file)}")
        set_first_file(gen, file)
        with pytest.raises(LungsoundError) as exc:
            read_manifest(gen)
        assert exc.value.path == str(gen / "manifest.csv") and "\n" not in str(exc.value)
        assert exc.value.problem == f"row 2: clip {file!r} " + problem.replace("{set}", str(gen.resolve()))


def test_a_symlink_to_a_test_recording_inside_the_set_is_refused(small_icbhi, tmp_path):
    gen = write_generated_set(small_icbhi, tmp_path / "linked")
    test_wav = next(r.audio for r in open_database(small_icbhi).select("test"))
    (gen / "looks_generated.wav").symlink_to(test_wav)
    set_first_file(gen, "looks_generated.wav")
    with pytest.raises(LungsoundError) as exc:
        GeneratedCycles(gen, fbank_cfg=None, progress=False, use_cache=False)
    assert exc.value.problem == (f"row 2: clip 'looks_generated.wav' resolves to {test_wav.resolve()}, outside the set "
                                 f"folder {gen.resolve()}: refused")


def test_a_byte_copy_of_a_test_recording_is_refused_whatever_the_manifest_says(small_icbhi, tmp_path):
    gen = write_generated_set(small_icbhi, tmp_path / "copied")
    test_rec = open_database(small_icbhi).select("test")[0]
    shutil.copyfile(test_rec.audio, gen / "clip_0.wav")
    set_first_file(gen, "clip_0.wav")  # its source_recording column still names a training recording
    with pytest.raises(LungsoundError) as exc:
        build_run_data(mixed_config(small_icbhi, gen), progress=False)
    assert exc.value.path == str(gen / "manifest.csv")
    assert exc.value.problem == (f"clip clip_0.wav is a byte copy of the recording {test_rec.audio} (test split of "
                                 f"{open_database(small_icbhi).root}), not a generated clip: refused")
    # The set without the copy is accepted, and the check reads only same-size files.
    (gen / "clip_0.wav").unlink()
    set_first_file(gen, sorted(p.name for p in gen.glob("*.wav"))[0])
    check_sources(GeneratedCycles(gen, fbank_cfg=None, progress=False, use_cache=False), open_database(small_icbhi))


def test_clip_sample_rates_are_checked_before_resampling(tmp_path):
    (tmp_path / "manifest.csv").write_text("file\n")
    sf.write(tmp_path / "one_hz.wav", np.zeros(100, np.float32), 1)  # 100 s at 1 Hz: 1.6 M samples at 16 kHz
    with pytest.raises(LungsoundError) as exc:
        load_clip(tmp_path, "one_hz.wav")
    assert exc.value.problem == "clip sample rate 1 Hz is outside [1000, 384000] Hz: refused before resampling"
    sf.write(tmp_path / "ok.wav", np.zeros(800, np.float32), 8000)
    assert load_clip(tmp_path, "ok.wav").shape == (1600,)


def test_a_non_utf8_manifest_is_one_line(tmp_path):
    (tmp_path / "manifest.csv").write_bytes(b"file,class\n\xff\xfe,normal\n")
    with pytest.raises(LungsoundError) as exc:
        read_manifest(tmp_path)
    assert str(exc.value) == f"{tmp_path / 'manifest.csv'}: not UTF-8 text (byte 11)"


@pytest.mark.parametrize(("card", "message"), [
    ({"vocoder_meta": {"duration": "x"}}, "vocoder_meta.duration must be a number in (0, 60], got 'x'"),
    ({"vocoder_meta": {"duration": 1e7}}, "vocoder_meta.duration must be a number in (0, 60], got 10000000.0"),
    ({"vocoder_meta": {"protocol": "xyz"}}, "vocoder_meta.protocol must be one of paper, clean, got 'xyz'"),
    ({"vocoder_meta": {"split": "fold9"}}, "vocoder_meta.split must be one of official, fold0"),
    ({"seed": "1"}, "seed must be an integer >= 0, got '1'"),
    ({"vocoder_meta": []}, "vocoder_meta must be a mapping, got []"),
])
def test_set_json_is_read_typed(tmp_path, card, message):
    (tmp_path / "set.json").write_text(json.dumps(card))
    with pytest.raises(LungsoundError) as exc:
        read_set_card(tmp_path)
    assert exc.value.path == str(tmp_path / "set.json") and exc.value.problem.startswith(message)
    (tmp_path / "set.json").write_bytes(b'{"seed": "\xff"}')
    with pytest.raises(LungsoundError, match=r"set.json: the set.json is not UTF-8 text \(byte 10\)$"):
        read_set_card(tmp_path)


# --- vocoders: sizes bounded wherever they come from, meta typed ------------------------------------------------------

TINY = DiffWaveConfig(residual_layers=2, residual_channels=4)


@pytest.fixture
def vocoder(tmp_path) -> Path:
    torch.manual_seed(0)
    return save_vocoder(tmp_path / "vocoder", DiffWave(TINY), TINY, {"protocol": "paper", "duration": 4.0})


def _edit_document(folder: Path, edit) -> None:
    document = json.loads((folder / "vocoder.json").read_text())
    edit(document)
    (folder / "vocoder.json").write_text(json.dumps(document))


def test_vocoder_json_sizes_and_meta_are_checked_before_building(vocoder):
    source = vocoder / "vocoder.json"
    _edit_document(vocoder, lambda d: d["config"].update(residual_layers=10**6))
    with pytest.raises(LungsoundError) as exc:
        load_vocoder(vocoder)
    assert str(exc.value) == f"{source}: DiffWave residual_layers must be an integer in [1, 256], got 1000000"
    _edit_document(vocoder, lambda d: d["config"].update(residual_layers=2, residual_channels=10**6))
    with pytest.raises(LungsoundError, match=r"residual_channels must be an integer in \[1, 1024\], got 1000000$"):
        load_vocoder(vocoder)
    _edit_document(vocoder, lambda d: d["config"].update(residual_channels=4))
    for meta, message in (({"duration": "x"}, "meta.duration must be a number in (0, 60], got 'x'"),
                          ({"duration": 1e7}, "meta.duration must be a number in (0, 60], got 10000000.0"),
                          ({"protocol": "xyz"}, "meta.protocol must be one of paper, clean, got 'xyz'")):
        _edit_document(vocoder, lambda d: d.update(meta=meta))
        with pytest.raises(LungsoundError) as exc:
            load_vocoder(vocoder)
        assert str(exc.value) == f"{source}: {message}"
    (vocoder / "vocoder.json").write_bytes(b'{"format": "\xff"}')
    with pytest.raises(LungsoundError, match=r"vocoder.json: the vocoder.json is not UTF-8 text \(byte 12\)$"):
        load_vocoder(vocoder)


def _reference(path: Path, state: dict, **params) -> Path:
    base = dict(sample_rate=16000, n_mels=80, n_fft=1024, hop_samples=256, residual_layers=2, residual_channels=4,
                dilation_cycle_length=10, unconditional=False, class_condition=False,
                noise_schedule=list(TRAIN_BETAS))
    torch.save({"step": 1, "model": state, "params": {**base, **params}}, path)
    return path


def test_imported_checkpoint_sizes_are_bounded(tmp_path):
    state = {k: v.clone() for k, v in DiffWave(TINY).state_dict().items()}
    path = _reference(tmp_path / "wide.pt", state, residual_channels=10**6)
    with pytest.raises(LungsoundError) as exc:
        import_reference(path, tmp_path / "out")
    assert str(exc.value) == (f"{path}: reference params: DiffWave residual_channels must be an integer in [1, 1024], "
                              "got 1000000")
    # A class table whose stored shape says a billion classes (a stride-0 view: a few bytes on disk).
    huge = {**state, "diffusion_embedding.class_embedding.weight": torch.zeros(1, 128).expand(10**9, 128)}
    path = _reference(tmp_path / "classes.pt", huge, class_condition=True)
    assert path.stat().st_size < 2_000_000  # the weights of the tiny model; the table itself would be 512 GB
    with pytest.raises(LungsoundError, match=r"reference params: DiffWave num_classes must be null or an integer in "
                                             r"\[1, 1000\], got 1000000000$"):
        import_reference(path, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_vocoder_experiment_sizes_are_bounded(tmp_path):
    with pytest.raises(LungsoundError) as exc:
        load_vocoder_config(None, ["model.residual_layers=1000000"])
    assert str(exc.value) == "<defaults>: model.residual_layers must be an integer in [1, 256], got 1000000"


# --- KAUH: one bad name never stops the others -----------------------------------------------------------------------

def test_a_kauh_age_of_superscript_two_is_unmappable_and_the_others_score(tiny_model, tmp_path, capsys, monkeypatch):
    folder = tmp_path / "kauh" / "AudioFiles"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    names = ("DP1_Asthma,E W,P L L,31,M.wav", "EP2_N,N,A R U,40,F.wav", "BP3_COPD,C,P R L,²,M.wav",
             "BP4_COPD,C,P R L,٣٤,M.wav")  # Arabic-Indic digits: decimal to Python, not ASCII
    for name in names:
        sf.write(folder / name, (0.1 * rng.standard_normal(4000 * 4)).astype(np.float32), 4000, subtype="PCM_16")
    external = get_adapter("kauh").load(folder.parent)
    assert sorted(r.file.name for r in external.labelled) == sorted(names[:2])
    assert {u.file.name: u.reason for u in external.unmappable} == {
        names[2]: "age '²' is not a number of years (ASCII digits)",
        names[3]: "age '٣٤' is not a number of years (ASCII digits)"}
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    code = main(["validate-external", "--quiet", "--dataset", "kauh", "--root", str(folder.parent), "--checkpoint",
                 str(tiny_model), "--json"])
    out, err = capsys.readouterr()
    assert code == 0, err
    result = json.loads(out)
    assert (result["recordings"], result["scored"], len(result["unmappable"])) == (4, 2, 2)
