"""Splits beyond the official one: the leak-free official split and leave-one-stethoscope-out folds."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from lungsound.config import load_config
from lungsound.data.database import open_database
from lungsound.data.formats.icbhi import DEVICES
from lungsound.data.splits import SPLIT_CHOICES, assign, check_split
from lungsound.errors import LungsoundError


def rec(stem: str, split: str | None):
    patient, *_, device = stem.split("_")
    return SimpleNamespace(stem=stem, patient=int(patient), device=device, split=split)


def sides(recordings) -> dict[str, list[str]]:
    return {s: sorted(r.stem for r in recordings if r.split == s) for s in ("train", "test")}


def test_noleak_sets_aside_only_the_test_recordings_of_shared_patients():
    recs = [rec("101_1b1_Al_sc_Meditron", "train"), rec("102_1b1_Al_sc_Meditron", "test"),
            rec("156_1b1_Al_sc_AKGC417L", "train"), rec("156_2b1_Al_sc_AKGC417L", "test"),
            rec("103_1b1_Al_sc_AKGC417L", None)]
    aside = assign("official_noleak", recs)
    assert sides(recs) == {"train": ["101_1b1_Al_sc_Meditron", "156_1b1_Al_sc_AKGC417L"],
                           "test": ["102_1b1_Al_sc_Meditron"]}
    assert aside == {"test recordings of patients also on the training side (156)": ["156_2b1_Al_sc_AKGC417L"]}


def test_device_out_without_official_test_recordings_tests_on_all_of_them_and_stays_patient_disjoint():
    # Device LittC2SE has only training recordings (as in ICBHI); patient 158 also has an AKGC417L training recording.
    recs = [rec("158_1b1_Al_sc_LittC2SE", "train"), rec("158_1b2_Al_sc_AKGC417L", "train"),
            rec("160_1b1_Al_sc_LittC2SE", "train"), rec("170_1b1_Al_sc_AKGC417L", "train"),
            rec("171_1b1_Al_sc_AKGC417L", "test"), rec("172_1b1_Al_sc_Meditron", "train")]
    aside = assign("device_out=LittC2SE", recs)
    assert sides(recs) == {"train": ["170_1b1_Al_sc_AKGC417L", "172_1b1_Al_sc_Meditron"],
                           "test": ["158_1b1_Al_sc_LittC2SE", "160_1b1_Al_sc_LittC2SE"]}
    assert aside == {
        "training recordings of patients with a LittC2SE test recording (patient-disjoint fold)":
            ["158_1b2_Al_sc_AKGC417L"],
        "official test recordings of the other devices": ["171_1b1_Al_sc_AKGC417L"]}


def test_device_out_with_official_test_recordings_tests_on_those_only():
    recs = [rec("101_1b1_Al_sc_Meditron", "train"), rec("102_1b1_Al_sc_Meditron", "test"),
            rec("103_1b1_Al_sc_AKGC417L", "train"), rec("104_1b1_Al_sc_AKGC417L", "test")]
    aside = assign("device_out=Meditron", recs)
    assert sides(recs) == {"train": ["103_1b1_Al_sc_AKGC417L"], "test": ["102_1b1_Al_sc_Meditron"]}
    assert sorted(aside) == ["Meditron training recordings (the held-out device is only tested)",
                             "official test recordings of the other devices"]


def test_unknown_split_names_are_one_line_errors():
    with pytest.raises(LungsoundError, match="unknown device 'Littmann'.*Meditron, LittC2SE, Litt3200, AKGC417L"):
        check_split("device_out=Littmann")
    with pytest.raises(LungsoundError, match="unknown split 'noleak'"):
        check_split("noleak")
    assert load_config(None, ["data.split=device_out=Litt3200"]).data.split == "device_out=Litt3200"
    assert load_config(None, ["data.split=official_noleak"]).data.split == "official_noleak"
    with pytest.raises(LungsoundError, match="data.split"):
        load_config(None, ["data.split=device_out=Stetho"])
    assert len(SPLIT_CHOICES) == 11


@pytest.mark.needs_shared
def test_noleak_on_the_real_annotations(icbhi_dir):
    official = open_database(icbhi_dir, load_cycles=False)
    noleak = open_database(icbhi_dir, split="official_noleak", load_cycles=False)
    test_patients = {r.patient for r in noleak.select("test")}
    assert not test_patients & {156, 218}
    assert not test_patients & {r.patient for r in noleak.select("train")}
    assert [r.stem for r in noleak.select("train")] == [r.stem for r in official.select("train")]
    gone = {r.stem for r in official.select("test")} - {r.stem for r in noleak.select("test")}
    assert len(gone) == 12 and {int(s[:3]) for s in gone} == {156, 218}


@pytest.mark.needs_shared
@pytest.mark.parametrize("device", DEVICES)
def test_device_out_folds_on_the_real_annotations(icbhi_dir, device):
    db = open_database(icbhi_dir, split=f"device_out={device}", load_cycles=False)
    train, test = db.select("train"), db.select("test")
    assert {r.device for r in test} == {device}
    assert device not in {r.device for r in train}
    assert not {r.patient for r in train} & {r.patient for r in test}
    official = {r.stem: r.split for r in open_database(icbhi_dir, load_cycles=False).recordings}
    assert all(official[r.stem] == "train" for r in train)
    expected_test_side = "train" if device == "LittC2SE" else "test"  # LittC2SE has no official test recording
    assert {official[r.stem] for r in test} == {expected_test_side}
    n_device = sum(r.device == device for r in open_database(icbhi_dir, load_cycles=False).select(expected_test_side))
    assert len(test) == n_device
