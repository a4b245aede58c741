"""Tests of the synthetic ICBHI-format dataset (`lungsound.data.synthetic`).

The files are checked with independent parsing (plain string splitting and soundfile headers), the sounds with simple
signal features computed here (spectral peak prominence for wheezes, kurtosis of the high-passed signal for
crackles), and the like-annotations mode against real ICBHI annotation files from ../shared/data.
"""

from __future__ import annotations

import argparse
import collections
import dataclasses
import hashlib
import shutil
from pathlib import Path

import numpy as np
import pytest
import scipy.ndimage
import scipy.signal
import soundfile as sf

from lungsound.data.synthetic import (
    DEFAULT_RECORDINGS,
    generate,
    generate_like_annotations,
    is_synthetic,
    read_marker,
)
from lungsound.data.synthetic import cli
from lungsound.data.synthetic.cohort import draw_voice, plan_cohort
from lungsound.data.synthetic.devices import PROFILES, exact_response, frequency_response
from lungsound.data.synthetic.render import plan_breaths, render
from lungsound.data.synthetic.spec import Cycle, RecordingSpec, format_annotation
from lungsound.data.synthetic.writer import to_pcm
from lungsound.errors import LungsoundError

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "icbhi"
REAL_TXT = SHARED / "audio_and_txt_files"
REAL_SPLIT = SHARED / "meta" / "ICBHI_challenge_train_test.txt"
EXPECTED_RATE = {"AKGC417L": 44100, "LittC2SE": 44100, "Meditron": 44100, "Litt3200": 4000}
SIDE_FILES = {"ICBHI_challenge_train_test.txt", "metadata.txt", "ICBHI_Challenge_diagnosis.txt",
              "patient_list_foldwise.txt"}


def needs_shared():
    if not REAL_TXT.is_dir() or not REAL_SPLIT.is_file():
        pytest.skip("real ICBHI annotations not found in ../shared/data/icbhi (only present in the dev checkout)")


# ---------------------------------------------------------------------------------------------------------------------
# Independent readers
# ---------------------------------------------------------------------------------------------------------------------


def read_cycles(path: Path) -> list[tuple[float, float, int, int]]:
    rows = []
    for line in path.read_text().splitlines():
        if line.strip():
            start, end, crackles, wheezes = line.split("\t")
            rows.append((float(start), float(end), int(crackles), int(wheezes)))
    return rows


def read_split(path: Path) -> dict[str, str]:
    out = {}
    for line in path.read_bytes().decode().splitlines():
        if line.strip():
            stem, side = line.split("\t")
            out[stem] = side
    return out


def stems_of(folder: Path) -> list[str]:
    return sorted(p.stem for p in folder.glob("*.wav"))


def digest(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir()) if p.is_file()}


@pytest.fixture(scope="module")
def small_set(tmp_path_factory) -> tuple[Path, object]:
    out = tmp_path_factory.mktemp("synth") / "set"
    report = generate(out, n_recordings=30, seed=5, workers=2, progress=False)
    return out, report


# ---------------------------------------------------------------------------------------------------------------------
# Determinism
# ---------------------------------------------------------------------------------------------------------------------


def test_same_seed_gives_identical_bytes_whatever_the_worker_count(tmp_path):
    generate(tmp_path / "a", n_recordings=5, seed=3, workers=1, progress=False)
    generate(tmp_path / "b", n_recordings=5, seed=3, workers=2, progress=False)
    generate(tmp_path / "c", n_recordings=5, seed=4, workers=1, progress=False)
    a, b, c = digest(tmp_path / "a"), digest(tmp_path / "b"), digest(tmp_path / "c")
    assert len([n for n in a if n.endswith(".wav")]) == 5
    assert a == b
    wav_a = {h for n, h in a.items() if n.endswith(".wav")}
    wav_c = {h for n, h in c.items() if n.endswith(".wav")}
    assert not wav_a & wav_c  # another seed: no recording is the same


def test_render_depends_on_seed_and_not_on_call_order():
    spec = plan_cohort(4, seed=1).recordings[2]
    first = render(spec)
    render(plan_cohort(4, seed=1).recordings[0])
    assert np.array_equal(first, render(spec))
    assert not np.allclose(first, render(dataclasses.replace(spec, seed=2)))


# ---------------------------------------------------------------------------------------------------------------------
# Format of the written set
# ---------------------------------------------------------------------------------------------------------------------


def test_every_recording_is_a_valid_icbhi_pair(small_set):
    out, report = small_set
    stems = stems_of(out)
    assert len(stems) == report.n_recordings == 30
    assert sorted(p.stem for p in out.glob("*.txt") if p.name not in SIDE_FILES) == stems
    seen_subtypes = collections.Counter()
    for stem in stems:
        patient, index, location, mode, device = stem.split("_")
        assert len(patient) == 3 and patient.isdigit()
        assert index[0].isdigit() and index[1] in "bp" and index[2:].isdigit()
        assert location in {"Tc", "Al", "Ar", "Pl", "Pr", "Ll", "Lr"} and mode in {"sc", "mc"}
        info = sf.info(str(out / f"{stem}.wav"))
        assert info.format == "WAV" and info.channels == 1
        assert info.samplerate == EXPECTED_RATE[device]
        assert info.subtype == "PCM_16" if device == "Litt3200" else info.subtype in {"PCM_16", "PCM_24"}
        seen_subtypes[info.subtype] += 1
        cycles = read_cycles(out / f"{stem}.txt")
        assert len(cycles) >= 3
        for (s0, e0, *_), (s1, *_rest) in zip(cycles, cycles[1:]):
            assert e0 == s1  # consecutive, as in ICBHI
        for start, end, crackles, wheezes in cycles:
            assert 1.0 - 1e-3 <= end - start <= 8.0 + 1e-3
            assert crackles in (0, 1) and wheezes in (0, 1)
        assert 0.0 <= cycles[0][0] <= 1.2
        assert 0.05 - 1e-3 <= info.duration - cycles[-1][1] <= 0.5 + 1e-3  # the annotation covers the audio
        line = (out / f"{stem}.txt").read_text().splitlines()[0]
        assert all(len(v.split(".")[1]) == 3 for v in line.split("\t")[:2])
        audio, _ = sf.read(str(out / f"{stem}.wav"))
        assert 0.005 < np.sqrt(np.mean(audio ** 2)) < 0.7 and np.abs(audio).max() <= 1.0
    assert seen_subtypes["PCM_24"] > 0


def test_split_metadata_and_folds_are_consistent(small_set):
    out, report = small_set
    split = read_split(out / "ICBHI_challenge_train_test.txt")
    assert sorted(split) == stems_of(out)
    assert (out / "ICBHI_challenge_train_test.txt").read_bytes().endswith(b"\r\n")  # CRLF, as published
    sides = collections.defaultdict(set)
    for stem, side in split.items():
        sides[stem.split("_")[0]].add(side)
    assert all(len(s) == 1 for s in sides.values())  # patient-disjoint
    n_train = sum(1 for side in split.values() if side == "train")
    assert 0.45 <= n_train / len(split) <= 0.75
    assert report.split_recordings == {"train": n_train, "test": len(split) - n_train}

    patients = set(sides)
    rows = [line.split("\t") for line in (out / "metadata.txt").read_text().splitlines()]
    assert {r[0] for r in rows} == patients and all(len(r) == 7 for r in rows)
    for r in rows:
        age = None if r[1] == "NA" else float(r[1])
        assert r[2] in ("M", "F", "NA") and r[6] in {"Tc", "Al", "Ar", "Pl", "Pr", "Ll", "Lr"}
        if age is not None and age >= 18:
            assert r[4] == "NA" and r[5] == "NA"  # adults: BMI only
        if age is not None and age < 18:
            assert r[3] == "NA"  # children: weight and height only
    diagnoses = dict(line.split("\t") for line in (out / "ICBHI_Challenge_diagnosis.txt").read_text().splitlines())
    assert set(diagnoses) == patients
    assert set(diagnoses.values()) <= {"Healthy", "URTI", "Asthma", "COPD", "LRTI", "Bronchiectasis", "Pneumonia",
                                       "Bronchiolitis"}
    folds = dict(line.split(" ") for line in (out / "patient_list_foldwise.txt").read_text().splitlines())
    assert set(folds) == patients and set(folds.values()) <= {"0", "1", "2", "3", "4"}


def test_marker_counts_match_the_files(small_set):
    out, report = small_set
    marker = read_marker(out)
    assert is_synthetic(out) and marker["complete"] is True and marker["seed"] == 5
    counts = collections.Counter()
    for stem in stems_of(out):
        for _, _, crackles, wheezes in read_cycles(out / f"{stem}.txt"):
            counts[("normal", "crackle", "wheeze", "both")[crackles + 2 * wheezes]] += 1
    assert marker["class_counts"] == dict(counts) == report.class_counts
    assert marker["cycles"] == sum(counts.values()) == report.n_cycles


def test_pcm_quantisation_round_trips_exactly(tmp_path):
    x = np.array([-1.0, -0.5, 0.0, 0.25, 0.999999, 1.0])
    for subtype, bits in (("PCM_16", 16), ("PCM_24", 24)):
        sf.write(str(tmp_path / "x.wav"), to_pcm(x, subtype), 4000, subtype=subtype)
        back, _ = sf.read(str(tmp_path / "x.wav"))
        scale = 2.0 ** (bits - 1)
        assert np.array_equal(back, np.clip(np.round(x * scale), -scale, scale - 1) / scale)


# ---------------------------------------------------------------------------------------------------------------------
# Cohort statistics and sound content
# ---------------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", [0, 1, 2, 3, 4])
def test_default_size_has_icbhi_like_class_imbalance(seed):
    cohort = plan_cohort(DEFAULT_RECORDINGS, seed)
    counts = collections.Counter(c.crackles + 2 * c.wheezes for r in cohort.recordings for c in r.cycles)
    normal, crackle, wheeze, both = (counts[k] for k in range(4))
    assert normal > crackle > wheeze > both > 0
    assert sum(counts.values()) >= 1000
    assert 0.4 <= normal / sum(counts.values()) <= 0.65
    devices = collections.Counter(r.device for r in cohort.recordings)
    assert devices.most_common(1)[0][0] == "AKGC417L"
    mix = {side: np.zeros(4) for side in ("train", "test")}
    for r in cohort.recordings:
        for c in r.cycles:
            mix[cohort.split[r.stem]][c.crackles + 2 * c.wheezes] += 1
    assert np.abs(mix["train"] / mix["train"].sum() - mix["test"] / mix["test"].sum()).sum() < 0.2
    assert 0.55 <= sum(1 for side in cohort.split.values() if side == "train") / len(cohort.split) <= 0.65


def test_large_cohort_matches_icbhi_proportions():
    cohort = plan_cohort(1000, seed=0)
    counts = collections.Counter(c.crackles + 2 * c.wheezes for r in cohort.recordings for c in r.cycles)
    total = sum(counts.values())
    for k, share in enumerate((0.53, 0.27, 0.13, 0.07)):  # ICBHI overall: 3642/1864/886/506 of 6898
        assert abs(counts[k] / total - share) < 0.06
    lengths = [c.end - c.start for r in cohort.recordings for c in r.cycles]
    assert 2.0 <= np.median(lengths) <= 3.0
    healthy = [r for r in cohort.recordings if next(p for p in cohort.patients if p.pid == r.patient).diagnosis
               == "Healthy"]
    normal_share = np.mean([c.crackles + c.wheezes == 0 for r in healthy for c in r.cycles])
    assert normal_share > 0.85


def _controlled_specs(device: str) -> list[RecordingSpec]:
    """Two recordings of 12 cycles cycling normal, crackle, wheeze, both, with fixed mid-range sound levels."""
    specs = []
    for i in range(2):
        voice = dataclasses.replace(draw_voice(np.random.default_rng(i), "COPD", 70.0), crackle_gain=4.0,
                                    wheeze_gain=0.5)
        cycles = tuple(Cycle(round(0.5 + 2.5 * j, 3), round(3.0 + 2.5 * j, 3), j % 4 & 1, j % 4 >> 1)
                       for j in range(12))
        specs.append(RecordingSpec(index=i, seed=11, stem=f"1{i:02d}_1b1_Al_sc_{device}", patient=100 + i,
                                   location="Al", device=device, subtype="PCM_16", duration=cycles[-1].end + 0.3,
                                   cycles=cycles, voice=voice, annotation=format_annotation(cycles)))
    return specs


def _tonality_db(x: np.ndarray, sr: int) -> float:
    """98th percentile over frames of the strongest spectral peak above its local median (120-1000 Hz), in dB."""
    freqs, _, z = scipy.signal.stft(x, sr, nperseg=int(0.064 * sr), noverlap=int(0.048 * sr))
    level = 10 * np.log10(np.abs(z) ** 2 + 1e-12)
    prominence = level - scipy.ndimage.median_filter(level, size=(15, 1), mode="nearest")
    band = (freqs >= 120) & (freqs <= 1000)
    return float(np.percentile(prominence[band].max(axis=0), 98))


def _transient_kurtosis(x: np.ndarray, sr: int) -> float:
    """Kurtosis E[y^4] / E[y^2]^2 of the signal high-passed at 400 Hz (3 for Gaussian noise; clicks raise it)."""
    b, a = scipy.signal.butter(4, 400 / (sr / 2), "high")
    y = scipy.signal.lfilter(b, a, x)
    return float(np.mean(y ** 4) / np.mean(y ** 2) ** 2)


def _auc(pos: list[float], neg: list[float]) -> float:
    return float(np.mean([(p > q) + 0.5 * (p == q) for p in pos for q in neg]))


@pytest.mark.parametrize("device", ["AKGC417L", "Meditron"])
def test_wheezes_are_tonal_and_crackles_are_transient(device):
    features = collections.defaultdict(list)
    for spec in _controlled_specs(device):
        audio, sr = render(spec), PROFILES[device].sample_rate
        for c in spec.cycles:
            seg = audio[int(c.start * sr):int(c.end * sr)]
            features[(c.crackles, c.wheezes)].append((_tonality_db(seg, sr), _transient_kurtosis(seg, sr)))
    tonal = {k: [t for t, _ in v] for k, v in features.items()}
    kurt = {k: [q for _, q in v] for k, v in features.items()}
    assert np.median(tonal[(0, 1)]) > np.median(tonal[(0, 0)]) + 3.0
    assert np.median(kurt[(1, 0)]) > 3.0 * np.median(kurt[(0, 0)])
    assert _auc(tonal[(0, 1)] + tonal[(1, 1)], tonal[(0, 0)] + tonal[(1, 0)]) >= 0.8
    assert _auc(kurt[(1, 0)] + kurt[(1, 1)], kurt[(0, 0)] + kurt[(0, 1)]) >= 0.75


def test_device_responses_differ_as_described():
    f = np.array([150.0, 1000.0])
    db = {name: 20 * np.log10(np.abs(exact_response(p, f))) for name, p in PROFILES.items()}
    assert all(abs(v[0]) < 1e-9 for v in db.values())  # normalised at 150 Hz
    assert db["LittC2SE"][1] < db["Meditron"][1] - 15 and db["LittC2SE"][1] < db["AKGC417L"][1] - 15
    grid = np.linspace(0, 22050, 1001)
    akg = PROFILES["AKGC417L"]
    assert np.allclose(frequency_response(akg, grid), exact_response(akg, grid), rtol=1e-3, atol=1e-4)


def test_fillers_cover_gaps_and_annotated_cycles_keep_their_bounds():
    voice = draw_voice(np.random.default_rng(0), "Healthy", 30.0)
    cycles = (Cycle(1.7, 4.0, 0, 0), Cycle(7.5, 9.0, 1, 0))  # 1.7 s lead, 3.5 s gap
    breaths = plan_breaths(cycles, 10.0, voice, np.random.default_rng(1))
    assert breaths[0].start < 0 < breaths[0].end and breaths[-1].end >= 10.0
    for a, b in zip(breaths, breaths[1:]):
        assert b.start == pytest.approx(a.end)
    annotated = [(b.start, b.end) for b in breaths if b.cycle is not None]
    assert annotated == [(1.7, 4.0), (7.5, 9.0)]
    assert sum(1 for b in breaths if b.cycle is None and 4.0 <= b.start < 7.5) >= 1
    for b in breaths:
        assert b.start < b.inspiration_end < b.expiration_start < b.end
        assert 0.3 <= (b.inspiration_end - b.start) / (b.end - b.start) <= 0.5


# ---------------------------------------------------------------------------------------------------------------------
# Like-annotations mode
# ---------------------------------------------------------------------------------------------------------------------


def _real_subset(dest: Path, count: int = 20) -> list[Path]:
    """`count` real annotation files covering all four devices and both splits, copied into `dest`."""
    files = sorted(REAL_TXT.glob("*.txt"))
    by_device = collections.defaultdict(list)
    for f in files:
        by_device[f.stem.split("_")[4]].append(f)
    chosen = [fs[i] for fs in by_device.values() for i in range(0, len(fs), max(1, len(fs) // 5))][:count]
    dest.mkdir()
    for f in chosen:
        shutil.copy(f, dest / f.name)
    return chosen


def test_like_annotations_reproduces_real_cycles(tmp_path):
    needs_shared()
    chosen = _real_subset(tmp_path / "ann")
    report = generate_like_annotations(tmp_path / "ann", tmp_path / "out", seed=0, split=REAL_SPLIT, workers=2,
                                       progress=False)
    out = tmp_path / "out"
    assert stems_of(out) == sorted(f.stem for f in chosen)
    assert {f.stem.split("_")[4] for f in chosen} == set(EXPECTED_RATE)
    for f in chosen:
        assert (out / f.name).read_bytes() == f.read_bytes()
        real = read_cycles(f)
        assert read_cycles(out / f.name) == real
        info = sf.info(str(out / f"{f.stem}.wav"))
        assert info.samplerate == EXPECTED_RATE[f.stem.split("_")[4]]
        assert real[-1][1] <= info.duration <= real[-1][1] + 0.5 + 1e-3
    real_split = {tuple(s.split("_")[:4]): side for s, side in read_split(REAL_SPLIT).items()}
    written = read_split(out / "ICBHI_challenge_train_test.txt")
    assert len(written) == len(chosen)
    assert {tuple(s.split("_")[:4]): side for s, side in written.items()} == {
        tuple(f.stem.split("_")[:4]): real_split[tuple(f.stem.split("_")[:4])] for f in chosen}
    assert (out / "metadata.txt").read_bytes() == (SHARED / "meta" / "metadata.txt").read_bytes()
    assert report.n_cycles == sum(len(read_cycles(f)) for f in chosen)


def test_like_annotations_without_side_files_makes_a_patient_disjoint_split(tmp_path):
    ann = tmp_path / "deep" / "ann"
    ann.mkdir(parents=True)
    for stem in ("301_1b1_Al_sc_Meditron", "301_1b1_Ar_sc_Meditron", "302_2b3_Tc_mc_Litt3200",
                 "303_1p2_Ll_mc_AKGC417L"):
        (ann / f"{stem}.txt").write_text("0.2\t1.5\t0\t0\n1.5\t2.9\t1\t1\n")
    report = generate_like_annotations(ann, tmp_path / "out", seed=1, workers=1, progress=False)
    assert set(report.sources.values()) == {"synthesised"}
    split = read_split(tmp_path / "out" / "ICBHI_challenge_train_test.txt")
    assert split["301_1b1_Al_sc_Meditron"] == split["301_1b1_Ar_sc_Meditron"]
    assert sf.info(str(tmp_path / "out" / "302_2b3_Tc_mc_Litt3200.wav")).samplerate == 4000
    rows = (tmp_path / "out" / "metadata.txt").read_text().splitlines()
    assert [r.split("\t")[0] for r in rows] == ["301", "302", "303"]


@pytest.mark.slow
def test_full_like_annotations_set_reproduces_the_official_split(tmp_path):
    needs_shared()
    # The split file is found next to the annotations (official_split.txt first, as the loader prefers it).
    report = generate_like_annotations(REAL_TXT, tmp_path / "out", seed=0, progress=False)
    out = tmp_path / "out"
    split = {tuple(s.split("_")[:4]): side for s, side in read_split(out / "ICBHI_challenge_train_test.txt").items()}
    counts = collections.Counter()
    devices = collections.Counter()
    for stem in stems_of(out):
        side = split[tuple(stem.split("_")[:4])]
        devices[(side, stem.split("_")[4])] += 1
        assert sf.info(str(out / f"{stem}.wav")).samplerate == EXPECTED_RATE[stem.split("_")[4]]
        for _, _, crackles, wheezes in read_cycles(out / f"{stem}.txt"):
            counts[(side, crackles + 2 * wheezes)] += 1
    assert [counts[("train", k)] for k in range(4)] == [2063, 1215, 501, 363]
    assert [counts[("test", k)] for k in range(4)] == [1579, 649, 385, 143]
    assert report.split_cycles == {"train": 4142, "test": 2756}
    assert len(stems_of(out)) == 920 and devices[("test", "Litt3200")] == 55
    # ... and the loader sees exactly the published counts of methods.md section 1, devices included.
    from lungsound.data.database import open_database
    from lungsound.data.stats import database_stats
    from tests.test_database import OFFICIAL

    stats = database_stats(open_database(out))
    for side, expected in OFFICIAL.items():
        assert {k: stats[side][k] for k in expected} == expected, side


# ---------------------------------------------------------------------------------------------------------------------
# Errors and the command
# ---------------------------------------------------------------------------------------------------------------------


def test_refuses_a_non_empty_foreign_folder_but_reuses_a_synthetic_one(tmp_path):
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("keep me")
    with pytest.raises(LungsoundError, match="is not a synthetic set this toolkit wrote .SYNTHETIC.json is missing."):
        generate(foreign, n_recordings=1, progress=False)
    assert (foreign / "notes.txt").read_text() == "keep me"
    generate(foreign, n_recordings=1, progress=False, workers=1, overwrite=True)
    assert (foreign / "notes.txt").exists() and len(stems_of(foreign)) == 1

    synth = tmp_path / "synth"
    generate(synth, n_recordings=2, seed=0, workers=1, progress=False)
    (synth / "999_1b1_Al_sc_Meditron.wav").write_bytes(b"stale")
    generate(synth, n_recordings=1, seed=0, workers=1, progress=False)
    assert len(stems_of(synth)) == 1 and read_marker(synth)["recordings"] == 1


def test_like_annotations_input_errors_name_the_file(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "readme.txt").write_text("no annotations here")
    with pytest.raises(LungsoundError, match="no ICBHI annotation files") as err:
        generate_like_annotations(empty, tmp_path / "o1", progress=False)
    assert str(empty) in str(err.value)

    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "101_1b1_Al_sc_Meditron.txt").write_text("0.1\t1.2\t0\t0\n1.2\t2.5\t0\t1\n2.5\tabc\t0\t0\n")
    with pytest.raises(LungsoundError, match=r"101_1b1_Al_sc_Meditron\.txt: line 3: not numbers"):
        generate_like_annotations(bad, tmp_path / "o2", progress=False)
    (bad / "101_1b1_Al_sc_Meditron.txt").write_text("0.1\t1.2\t0\t2\n")
    with pytest.raises(LungsoundError, match="line 1: crackle and wheeze flags must be 0 or 1"):
        generate_like_annotations(bad, tmp_path / "o3", progress=False)
    (bad / "101_1b1_Al_sc_Meditron.txt").write_text("2.0\t1.0\t0\t0\n")
    with pytest.raises(LungsoundError, match="line 1: cycle must have 0 <= start < end"):
        generate_like_annotations(bad, tmp_path / "o4", progress=False)
    assert not (tmp_path / "o2").exists()  # inputs are validated before anything is written

    odd = tmp_path / "odd"
    odd.mkdir()
    (odd / "101_1b1_Al_sc_Phone.txt").write_text("0.1\t1.2\t0\t0\n")
    with pytest.raises(LungsoundError, match="no ICBHI annotation files"):  # an unknown device is not ICBHI
        generate_like_annotations(odd, tmp_path / "o5", progress=False)

    split = tmp_path / "split.txt"
    split.write_text("999_1b1_Al_sc_Meditron\ttrain\n")
    (odd / "101_1b1_Al_sc_Phone.txt").rename(odd / "101_1b1_Al_sc_Meditron.txt")
    with pytest.raises(LungsoundError, match="1 annotation file.* no entry in this split file"):
        generate_like_annotations(odd, tmp_path / "o6", split=split, progress=False)
    with pytest.raises(LungsoundError, match="must differ from the annotation folder"):
        generate_like_annotations(odd, odd, progress=False)


def _parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    cli.add_arguments(parser)
    return parser.parse_args(argv)


def test_cli_runs_and_rejects_inconsistent_options(tmp_path, capsys):
    assert cli.run(_parse(["--out", str(tmp_path / "s"), "--recordings", "2", "--seed", "7", "--workers", "1",
                           "--quiet"])) == 0
    assert "wrote 2 synthetic recordings" in capsys.readouterr().out
    assert read_marker(tmp_path / "s")["seed"] == 7
    with pytest.raises(LungsoundError, match="--split only applies"):
        cli.run(_parse(["--out", str(tmp_path / "t"), "--split", "x.txt"]))
    with pytest.raises(LungsoundError, match="cannot be combined"):
        cli.run(_parse(["--out", str(tmp_path / "t"), "--like-annotations", str(tmp_path), "--recordings", "3"]))
    with pytest.raises(LungsoundError, match="--recordings must be an integer from 1 to 10,000, got 0"):
        cli.run(_parse(["--out", str(tmp_path / "t"), "--recordings", "0"]))
    assert cli.main(["--out", str(tmp_path / "u"), "--like-annotations", str(tmp_path / "missing")]) == 2
    assert "annotation folder not found" in capsys.readouterr().err


def test_plot_examples_writes_a_png(small_set, tmp_path):
    from lungsound.data.synthetic.plots import plot_examples

    out, _ = small_set
    png = plot_examples(out, tmp_path / "grid.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 20_000
    with pytest.raises(LungsoundError, match="no recordings with audio"):
        plot_examples(tmp_path, tmp_path / "none.png")
