"""Metadata domains in the paper (reference code) and clean definitions, and the metadata values they rest on."""

from __future__ import annotations

import pytest

from lungsound.data.cycles import CycleConfig
from lungsound.data.database import open_database
from lungsound.data.dataset import CycleDataset
from lungsound.data.labels import age_group, sex_group
from lungsound.data.meta import read_metadata
from lungsound.errors import LungsoundError


@pytest.mark.parametrize(
    ("age", "paper", "clean"),
    [
        (0.75, "child", "child"),
        (17.9, "child", "child"),
        (18.0, "child", "adult"),  # the two definitions disagree between 18 and 19
        (18.99, "child", "adult"),
        (19.0, "adult", "adult"),
        (64.9, "adult", "adult"),
        (65.0, "adult", "elderly"),
        (None, "child", None),  # paper: a missing age counts as a child; clean: unknown
    ],
)
def test_age_groups(age, paper, clean):
    assert age_group(age, "paper") == paper
    assert age_group(age, "clean") == clean
    assert age_group(age) == clean  # clean by default


def test_sex_groups():
    assert [sex_group(s, "paper") for s in ("M", "F", None, "X")] == ["M", "F", "F", "F"]
    assert [sex_group(s, "clean") for s in ("M", "F", None, "X")] == ["M", "F", None, None]
    with pytest.raises(LungsoundError, match="definitions must be one of paper, clean, got 'official'"):
        sex_group("M", "official")


def test_dataset_domains_follow_the_definitions(tiny_icbhi, tmp_path):
    # Train split: 101_1b1_Al (3 cycles), 102_1b1_Ar (2 cycles). Patient 101: 19 years, male, metadata location Pr;
    # patient 102: age and sex missing, metadata location Tc.
    (tiny_icbhi / "metadata.txt").write_text("101\t19.0\tM\t21.0\tNA\tNA\tPr\n102\tNA\tNA\tNA\t9.8\t73.0\tTc\n"
                                             "103\t70.0\tF\t33.0\tNA\tNA\tAr\n104\t70.0\tM\t28.47\tNA\tNA\tAl\n")
    db = open_database(tiny_icbhi)
    ds = CycleDataset.from_split(db, "train", cycle_cfg=CycleConfig(duration=1.0), fbank_cfg=None,
                                 cache_dir=tmp_path / "cache", workers=1, progress=False)
    assert ds.patients.tolist() == [101, 101, 101, 102, 102]
    # paper: adult 0 / child 1 (missing age -> child); M 0 / else 1 (missing -> 1); Tc Al Ar Pl Pr Ll Lr from metadata
    assert ds.domain_labels("age_group", definitions="paper").tolist() == [0, 0, 0, 1, 1]
    assert ds.domain_labels("sex", definitions="paper").tolist() == [0, 0, 0, 1, 1]
    assert ds.domain_labels("location", definitions="paper").tolist() == [4, 4, 4, 0, 0]
    # clean: child 0 / adult 1 / elderly 2, missing -1; M 0 / F 1, missing -1; location from the recording's name
    assert ds.domain_labels("age_group", definitions="clean").tolist() == [1, 1, 1, -1, -1]
    assert ds.domain_labels("sex", definitions="clean").tolist() == [0, 0, 0, -1, -1]
    assert ds.domain_labels("location", definitions="clean").tolist() == [1, 1, 1, 2, 2]  # Al, Ar
    assert ds.domain_labels("device", definitions="paper").tolist() == [0] * 5  # Meditron either way
    with pytest.raises(LungsoundError, match="definitions must be one of paper, clean, got 'strict'"):
        ds.domain_labels("sex", definitions="strict")


def test_paper_location_without_a_metadata_column_is_unknown(tiny_icbhi, tmp_path):
    (tiny_icbhi / "metadata.txt").write_text("101\t3.0\tF\tNA\t19.0\t99.0\n102\t0.75\tF\tNA\t9.8\t73.0\n")
    db = open_database(tiny_icbhi)
    ds = CycleDataset.from_split(db, "train", cycle_cfg=CycleConfig(duration=1.0), fbank_cfg=None,
                                 cache_dir=tmp_path / "cache", workers=1, progress=False)
    assert ds.domain_labels("location", definitions="paper").tolist() == [-1] * 5


@pytest.mark.parametrize(
    ("row", "problem"),
    [
        ("102\t-3\tF\tNA\t9.8\t73.0\tAr", "line 2: age '-3' is negative"),
        ("102\tnan\tF\tNA\t9.8\t73.0\tAr", "line 2: age 'nan' is not a finite number (write NA when it is missing)"),
        ("102\tNaN\tF\tNA\t9.8\t73.0\tAr", "line 2: age 'NaN' is not a finite number (write NA when it is missing)"),
        ("102\tinf\tF\tNA\t9.8\t73.0\tAr", "line 2: age 'inf' is not a finite number (write NA when it is missing)"),
        ("102\t0.75\tF\tNA\t-9.8\t73.0\tAr", "line 2: child weight '-9.8' is negative"),
        ("102\t0.75\tF\tNA\t9.8\tabc\tAr", "line 2: child height 'abc' is not a number or NA"),
    ],
)
def test_bad_metadata_numbers_name_file_and_line(tmp_path, row, problem):
    path = tmp_path / "metadata.txt"
    path.write_text(f"101\t3.0\tF\tNA\t19.0\t99.0\tPr\n{row}\n")
    with pytest.raises(LungsoundError) as exc:
        read_metadata(path)
    assert exc.value.path == str(path) and exc.value.problem == problem

