"""ICBHI discovery, naming variants, split matching and side files."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from lungsound.data.annotations import parse_annotation_text, read_annotation
from lungsound.data.database import open_database
from lungsound.data.meta import read_diagnosis, read_metadata, read_split_file
from lungsound.data.naming import parse_stem
from lungsound.data.stats import database_stats
from lungsound.errors import LungsoundError
from tests.conftest import TINY_RECORDINGS

# methods.md section 1: the published counts of the official split.
OFFICIAL = {
    "train": {"cycles": 4142, "normal": 2063, "crackle": 1215, "wheeze": 501, "both": 363, "recordings": 539,
              "devices": {"AKGC417L": 361, "LittC2SE": 87, "Meditron": 86, "Litt3200": 5}},
    "test": {"cycles": 2756, "normal": 1579, "crackle": 649, "wheeze": 385, "both": 143, "recordings": 381,
             "devices": {"AKGC417L": 285, "Litt3200": 55, "Meditron": 41, "LittC2SE": 0}},
}


def test_parse_stem_fields_and_key():
    name = parse_stem("226_1b1_Pl_sc_LittC2SE")
    assert (name.patient, name.index, name.location, name.mode, name.device) == (226, "1b1", "Pl", "sc", "LittC2SE")
    assert name.key == "226_1b1_Pl_sc" and name.with_device("Meditron").stem == "226_1b1_Pl_sc_Meditron"
    with pytest.raises(LungsoundError, match="device 'Sony' is not one of"):
        parse_stem("101_1b1_Al_sc_Sony")
    with pytest.raises(LungsoundError, match="not an ICBHI recording name"):
        parse_stem("hello")


def test_annotation_parsing_and_errors(tmp_path):
    cycles = parse_annotation_text("0.036\t0.579\t0\t0\n0.579\t2.45\t1\t1\n", "x.txt")
    assert [c.label for c in cycles] == [0, 3] and cycles[1].duration == pytest.approx(1.871)
    bad = tmp_path / "101_1b1_Al_sc_Meditron.txt"
    bad.write_text("0.1\t0.5\t0\t0\n0.5\t0.9\t2\t0\n")
    with pytest.raises(LungsoundError, match=r"101_1b1_Al_sc_Meditron.txt: line 2: crackle and wheeze flags"):
        read_annotation(bad)
    bad.write_text("0.1 0.5 0\n")
    with pytest.raises(LungsoundError, match="line 1: expected 4 fields"):
        read_annotation(bad)
    bad.write_text("0.9\t0.5\t0\t0\n")
    with pytest.raises(LungsoundError, match="start < end"):
        read_annotation(bad)
    bad.write_text("")
    with pytest.raises(LungsoundError, match="no cycles"):
        read_annotation(bad)


def test_side_files(tmp_path):
    meta = tmp_path / "metadata.txt"
    meta.write_text("101\t3.0\tF\tNA\t19.0\t99.0\tPr\n103\t70\tM\t33.0\tNA\tNA\n")
    patients = read_metadata(meta)
    assert patients[101].age == 3.0 and patients[101].adult_bmi is None and patients[101].chest_location == "Pr"
    assert patients[101].age_group == "child" and patients[103].age_group == "elderly"
    assert patients[103].chest_location is None
    csv = tmp_path / "patient_diagnosis.csv"
    csv.write_text("ID,CLASS\n101,URTI\n102,Healthy\n")
    assert read_diagnosis(csv) == {101: "URTI", 102: "Healthy"}
    split = tmp_path / "split.txt"
    split.write_text("101_1b1_Al_sc_Meditron\ttrain\n101_1b1_Al_sc_AKGC417L\ttest\n")
    with pytest.raises(LungsoundError, match="line 2: recording 101_1b1_Al_sc is listed twice"):
        read_split_file(split)
    split.write_text("101_1b1_Al_sc_Meditron\tvalid\n")
    with pytest.raises(LungsoundError, match="line 1: expected '<stem> train|test'"):
        read_split_file(split)


def test_tiny_database(tiny_icbhi):
    db = open_database(tiny_icbhi)
    assert [r.stem for r in db.select("train")] == ["101_1b1_Al_sc_Meditron", "102_1b1_Ar_sc_Meditron"]
    assert len(db.select("test")) == 2 and all(r.audio is not None for r in db.recordings)
    assert db.patient(104).sex == "M" and db.diagnoses[104] == "COPD"
    stats = database_stats(db)
    assert stats["train"]["cycles"] == 5 and stats["train"]["crackle"] == 1 and stats["train"]["both"] == 1
    assert stats["test"]["devices"] == {"Meditron": 0, "LittC2SE": 1, "Litt3200": 1, "AKGC417L": 0}
    assert db.report.problems() == []


def test_naming_variant_and_unmatched_are_reported(tiny_icbhi):
    # The challenge download calls 101_1b1_Al_sc "_AKGC417L" where the split file says "_Meditron".
    for ext in (".wav", ".txt"):
        (tiny_icbhi / f"101_1b1_Al_sc_Meditron{ext}").rename(tiny_icbhi / f"101_1b1_Al_sc_AKGC417L{ext}")
    shutil.copy(tiny_icbhi / "102_1b1_Ar_sc_Meditron.txt", tiny_icbhi / "105_1b1_Tc_sc_Meditron.txt")
    with open(tiny_icbhi / "ICBHI_challenge_train_test.txt", "a") as fh:
        fh.write("106_1b1_Tc_sc_Meditron\ttest\n")
    db = open_database(tiny_icbhi)
    rec = db.find("101_1b1_Al_sc_Meditron")
    assert rec.name.device == "AKGC417L" and rec.device == "Meditron" and rec.split == "train"
    assert rec.audio.name == "101_1b1_Al_sc_AKGC417L.wav"
    assert db.report.renamed == [("101_1b1_Al_sc_AKGC417L", "101_1b1_Al_sc_Meditron")]
    assert db.report.unmatched_recordings == ["105_1b1_Tc_sc_Meditron"]
    assert db.report.unmatched_split_entries == ["106_1b1_Tc_sc_Meditron"]
    assert db.report.missing_audio == ["105_1b1_Tc_sc_Meditron"]
    problems = " ".join(db.report.problems())
    assert "105_1b1_Tc_sc_Meditron" in problems and "106_1b1_Tc_sc_Meditron" in problems


def test_kaggle_and_nested_layouts(tiny_icbhi, tmp_path):
    kaggle = tmp_path / "Respiratory_Sound_Database"
    shutil.copytree(tiny_icbhi, kaggle / "audio_and_txt_files")
    (kaggle / "audio_and_txt_files" / "ICBHI_Challenge_diagnosis.txt").unlink()
    (kaggle / "patient_diagnosis.csv").write_text("ID,CLASS\n101,URTI\n102,Healthy\n103,Asthma\n104,COPD\n")
    db = open_database(tmp_path)
    assert len(db.recordings) == 4 and db.diagnoses[103] == "Asthma"
    nested = tmp_path / "nested"
    for i, stem in enumerate(TINY_RECORDINGS):
        (nested / f"part{i}").mkdir(parents=True)
        for ext in (".wav", ".txt"):
            shutil.copy(tiny_icbhi / f"{stem}{ext}", nested / f"part{i}" / f"{stem}{ext}")
    shutil.copy(tiny_icbhi / "ICBHI_challenge_train_test.txt", nested)
    db = open_database(nested)
    assert sorted(r.stem for r in db.recordings) == sorted(TINY_RECORDINGS)
    assert all(r.audio is not None and r.audio.parent == r.annotation.parent for r in db.recordings)


def test_missing_inputs_have_clear_errors(tmp_path, tiny_icbhi):
    with pytest.raises(LungsoundError, match="data folder not found"):
        open_database(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(LungsoundError, match="empty: no ICBHI annotation files"):
        open_database(tmp_path / "empty")
    (tiny_icbhi / "ICBHI_challenge_train_test.txt").unlink()
    with pytest.raises(LungsoundError, match="no split file found"):
        open_database(tiny_icbhi)
    with pytest.raises(LungsoundError, match="needs patient_list_foldwise.txt"):
        open_database(tiny_icbhi, split="fold0")
    assert len(open_database(tiny_icbhi, split=None).recordings) == 4


@pytest.mark.needs_shared
def test_official_counts_match_methods_md(icbhi_dir):
    stats = database_stats(open_database(icbhi_dir))
    for split, expected in OFFICIAL.items():
        for key, value in expected.items():
            assert stats[split][key] == value, (split, key)
    assert stats["patients_in_both_splits"] == [156, 218]
    assert stats["recordings"] == 920 and stats["train"]["patients"] + stats["test"]["patients"] - 2 == 126
    assert stats["recordings_without_audio"] == 920 - 29


@pytest.mark.needs_shared
def test_challenge_split_file_naming(icbhi_dir):
    """With the challenge's own split file, 226_1b1_Pl_sc takes its '_Meditron' spelling (one recording moves)."""
    db = open_database(icbhi_dir, split_file=icbhi_dir / "meta" / "ICBHI_challenge_train_test.txt")
    stats = database_stats(db)
    assert stats["train"]["devices"]["Meditron"] == 87 and stats["train"]["devices"]["LittC2SE"] == 86
    assert db.report.renamed == [("226_1b1_Pl_sc_LittC2SE", "226_1b1_Pl_sc_Meditron")]
    assert stats["train"]["cycles"] == 4142 and stats["test"]["cycles"] == 2756


@pytest.mark.needs_shared
def test_patient_folds(icbhi_dir):
    seen_test_patients = []
    for k in range(5):
        db = open_database(icbhi_dir, split=f"fold{k}")
        train = {r.patient for r in db.select("train")}
        test = {r.patient for r in db.select("test")}
        assert not train & test and len(train | test) == 126
        seen_test_patients.append(len(test))
        assert sum(len(r.cycles) for r in db.recordings if r.split) == 6898
    assert sorted(seen_test_patients) == [25, 25, 25, 25, 26]
