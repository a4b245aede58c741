"""The data-format seam and per-sample metadata: a second corpus format defined here trains the quickstart model; the
metadata of real ICBHI recordings, checked by hand against metadata.txt; and the domain integers of the domain methods,
computed from the metadata, equal the computation they replaced on the real annotations."""

from __future__ import annotations

import csv
import json
from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from torch.utils.data import DataLoader

from lungsound.cli import main
from lungsound.config import load_config
from lungsound.data.annotations import Cycle
from lungsound.data.cycles import CycleConfig
from lungsound.data.database import open_database
from lungsound.data.dataset import CycleDataset, collate_samples
from lungsound.data.formats import FORMATS, Database, DataFormat, Recording, RecordingId, register_format
from lungsound.data.generated import GeneratedCycles, MixedDataset
from lungsound.data.labels import age_group, domain_indices, sex_group
from lungsound.data.meta import read_metadata
from lungsound.data.naming import parse_stem
from lungsound.data.sample_meta import SampleMeta
from lungsound.errors import LungsoundError
from lungsound.models.folder import read_meta
from lungsound.results.device_ood import device_ood_rows
from lungsound.tracking import RunLogger
from lungsound.training.run import fit
from lungsound.training.trainer import Trainer, to_batch

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")
REPO = Path(__file__).resolve().parents[1]
TABLE = "cycles.csv"
COLUMNS = ("file", "start", "end", "crackles", "wheezes", "patient", "age", "sex", "location", "device", "split",
           "site")


@register_format
class CsvCycles(DataFormat):
    """A second corpus, in one module: a folder of WAVs and one `cycles.csv` (a row per cycle, with its metadata)."""

    name = "test_csv_cycles"
    title = "CSV-cycles"
    devices = ("phone", "digital")
    locations = ("front", "back")
    splits = ("official",)

    def read(self, root: Path, split: str | None, *, split_file=None, folds_file=None, load_cycles=True) -> Database:
        table = root / TABLE
        if not table.is_file():
            raise LungsoundError(f"no {TABLE}", root)
        rows = defaultdict(list)
        for row in csv.DictReader(table.open(newline="", encoding="utf-8")):
            rows[row["file"]].append(row)
        recordings = []
        for file, cycles in sorted(rows.items()):
            first, stem = cycles[0], Path(file).stem
            meta = SampleMeta(int(first["patient"]), stem, float(first["age"]) if first["age"] else None,
                              first["sex"] or None, first["location"] or None, first["device"], {"site": first["site"]})
            recordings.append(Recording(
                RecordingId(stem, meta.patient), table, root / file,
                [Cycle(float(c["start"]), float(c["end"]), int(c["crackles"]), int(c["wheezes"])) for c in cycles]
                if load_cycles else [], split=first["split"] if split else None, device=first["device"], meta=meta))
        return Database(root, split, recordings, format=self)


def write_csv_corpus(root: Path, patients: int = 10) -> Path:
    """`patients` recordings (one each) of 4 cycles at 8 kHz; patients 1-7 train, 8-10 test; devices alternate."""
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    rows = []
    for p in range(1, patients + 1):
        file = f"rec{p:02d}.wav"
        sf.write(root / file, (0.1 * rng.standard_normal(8000 * 5)).astype(np.float32), 8000)
        for k in range(4):
            rows.append({"file": file, "start": k * 1.2, "end": k * 1.2 + 1.0, "crackles": (p + k) % 2,
                         "wheezes": int(k == 3), "patient": p, "age": "" if p == 3 else 20 + 5 * p,
                         "sex": "MF"[p % 2], "location": ("front", "back")[p % 3 == 0],
                         "device": ("phone", "digital")[p % 2], "split": "train" if p <= 7 else "test",
                         "site": "ward A" if p < 5 else "ward B"})
    with open(root / TABLE, "w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(COLUMNS))
        writer.writeheader()
        writer.writerows(rows)
    return root


@pytest.fixture(scope="module")
def csv_corpus(tmp_path_factory) -> Path:
    return write_csv_corpus(tmp_path_factory.mktemp("csv") / "corpus")


def test_a_second_format_is_read_through_the_registry(csv_corpus, capsys):
    assert "test_csv_cycles" in FORMATS and "icbhi" in FORMATS
    db = open_database(csv_corpus, format="test_csv_cycles")
    assert db.devices == ("phone", "digital") and db.locations == ("front", "back")
    assert [r.stem for r in db.select("train")] == [f"rec{p:02d}" for p in range(1, 8)]
    rec = db.find("rec03")
    assert rec.meta == SampleMeta(3, "rec03", None, "F", "back", "digital", {"site": "ward A"})
    ds = CycleDataset.from_split(db, "test", cycle_cfg=CycleConfig(duration=1.0), fbank_cfg=None, progress=False,
                                 workers=1, use_cache=False)
    # test patients 8, 9, 10: devices phone, digital, phone (index into the database's vocabulary)
    assert ds.devices.tolist() == [0] * 4 + [1] * 4 + [0] * 4 and ds.device_names == ("phone", "digital")
    assert ds.domain_labels("location").tolist() == [0] * 4 + [1] * 4 + [0] * 4  # front, back: this corpus's codes
    assert ds.domain_labels("age_group").tolist() == [1] * 4 + [2] * 8  # 60, 65, 70 years: adult, elderly, elderly
    with pytest.raises(LungsoundError, match="unknown split 'fold1' for CSV-cycles data; choose one of official"):
        open_database(csv_corpus, "fold1", format="test_csv_cycles")
    with pytest.raises(LungsoundError, match="unknown data format 'csv'; known: .*icbhi"):
        open_database(csv_corpus, format="csv")
    assert main(["data", "stats", "--root", str(csv_corpus), "--format", "test_csv_cycles", "--json"]) == 0
    stats = json.loads(capsys.readouterr().out)
    assert stats["train"]["devices"] == {"phone": 3, "digital": 4} and stats["test"]["cycles"] == 12


def test_the_config_reads_the_formats_registry(csv_corpus):
    cfg = load_config(None, [f"data.root={csv_corpus}", "data.format=test_csv_cycles"])
    assert cfg.data.format == "test_csv_cycles" and load_config(None).data.format == "icbhi"
    with pytest.raises(LungsoundError, match="data.format must be one of icbhi, test_csv_cycles, got 'csv'"):
        load_config(None, ["data.format=csv"])
    with pytest.raises(LungsoundError, match="data.split must be one of official, got 'fold0'"):
        load_config(None, [f"data.root={csv_corpus}", "data.format=test_csv_cycles", "data.split=fold0"])
    with pytest.raises(LungsoundError, match="data.format=test_csv_cycles needs data.root"):
        load_config(None, ["data.format=test_csv_cycles"])
    with pytest.raises(LungsoundError, match="n_domains=1 is too small for the 'location' domain, which has 2 values"):
        load_config(None, [f"data.root={csv_corpus}", "data.format=test_csv_cycles", "method.name=dat",
                           "method.params.domain=location", "method.params.n_domains=1"])


def quickstart(corpus: Path, out: Path, *extra: str):
    return load_config(REPO / "experiments" / "quickstart.yaml",
                       ["train.epochs=1", "train.max_steps_per_epoch=1", f"data.root={corpus}",
                        "data.format=test_csv_cycles", f"tracking.output_dir={out}", *extra])


def test_a_batch_carries_one_metadata_record_per_sample(csv_corpus, tmp_path):
    trainer = Trainer(quickstart(csv_corpus, tmp_path), progress=False)
    seen = []

    def spy(model, batch, ctx):
        seen.append(batch)
        return original(model, batch, ctx)

    original, trainer.objective.forward = trainer.objective.forward, spy
    trainer.train_epoch(1)
    (batch,) = seen
    assert len(batch.meta) == len(batch.label) == 8
    train = trainer.data.train
    assert batch.meta == [train.metas[i] for i in batch.index.tolist()]
    assert all(isinstance(m, SampleMeta) and m.extra["site"] in ("ward A", "ward B") for m in batch.meta)
    assert batch.device.tolist() == [("phone", "digital").index(m.device) for m in batch.meta]


def test_the_quickstart_model_trains_one_step_on_the_second_format(csv_corpus, tmp_path):
    result = fit(quickstart(csv_corpus, tmp_path), progress=False, track=False)
    assert result.finished and result.selected_epoch == 1
    metrics = result.metrics
    assert {"final_test_score", "final_val_score"} <= set(metrics)
    # per-device scores are named by this corpus's devices: test patients 8, 10 (phone) and 9 (digital)
    assert {"final_test_score_phone", "final_test_score_digital"} <= set(metrics)
    assert not any(k.endswith(("_Meditron", "_AKGC417L")) for k in metrics)
    assert read_meta(result.checkpoint)["devices"] == ["phone", "digital"]


@pytest.mark.needs_shared
def test_metadata_of_real_icbhi_recordings(icbhi_dir):
    """By hand from meta/metadata.txt: `101 3.0 F NA 19.0 99.0 Pr` and `223 NA NA NA NA NA Ll`; official_split.txt
    puts both patients' recordings on the test side, recorded with the Meditron."""
    db = open_database(icbhi_dir)
    assert db.devices == ("Meditron", "LittC2SE", "Litt3200", "AKGC417L") and len(db.locations) == 7
    al, pr = db.find("101_1b1_Al_sc_Meditron"), db.find("101_1b1_Pr_sc_Meditron")
    assert al.meta == SampleMeta(101, "101_1b1_Al_sc_Meditron", 3.0, "F", "Al", "Meditron",
                                 {"patient_location": "Pr", "mode": "sc", "adult_bmi": None, "child_weight": 19.0,
                                  "child_height": 99.0})
    assert pr.meta.location == "Pr" and pr.meta.age == 3.0 and al.split == pr.split == "test"
    assert al.meta.as_mapping() == {"age": 3.0, "sex": "F", "location": "Al", "device": "Meditron"}
    assert al.meta.as_mapping("paper")["location"] == "Pr"  # the patient-level column
    # Patient 223: no age, no sex; the patient-level location labels all six recordings "Ll".
    metas = [r.meta for r in db.recordings if r.patient == 223]
    assert len(metas) == 6 and {m.chest_location("paper") for m in metas} == {"Ll"}
    assert {m.location for m in metas} == {"Al", "Ar", "Pl", "Pr", "Ll", "Lr"}
    assert all(m.age is None and m.sex is None and m.device == "Meditron" for m in metas)


def test_the_device_of_the_metadata_is_the_split_files_spelling(tiny_icbhi):
    for suffix in (".txt", ".wav"):
        (tiny_icbhi / f"101_1b1_Al_sc_Meditron{suffix}").rename(tiny_icbhi / f"101_1b1_Al_sc_AKGC417L{suffix}")
    rec = open_database(tiny_icbhi).find("101_1b1_Al_sc_AKGC417L")
    assert rec.meta.recording == "101_1b1_Al_sc_AKGC417L" and rec.meta.device == rec.device == "Meditron"


# The computation the metadata records replaced (lungsound.data.dataset._domain_value before the redesign), written
# out here: device from the recording, location from its name (clean) or the patient's metadata column (paper), age
# and sex groups from the patient's row.
OLD_VOCABULARIES = {
    "clean": {"device": ("Meditron", "LittC2SE", "Litt3200", "AKGC417L"), "age_group": ("child", "adult", "elderly"),
              "sex": ("M", "F"), "location": ("Tc", "Al", "Ar", "Pl", "Pr", "Ll", "Lr")},
    "paper": {"device": ("Meditron", "LittC2SE", "Litt3200", "AKGC417L"), "age_group": ("adult", "child"),
              "sex": ("M", "F"), "location": ("Tc", "Al", "Ar", "Pl", "Pr", "Ll", "Lr")},
}


def old_domain(name: str, stem: str, device: str, patients: dict, definitions: str) -> int:
    vocab = OLD_VOCABULARIES[definitions][name]
    patient = patients.get(parse_stem(stem).patient)
    if name == "device":
        value = device
    elif name == "location":
        value = (patient.chest_location if patient else None) if definitions == "paper" else parse_stem(stem).location
    elif name == "age_group":
        value = age_group(patient.age if patient else None, definitions)
    else:
        value = sex_group(patient.sex if patient else None, definitions)
    return vocab.index(value) if value in vocab else -1


@pytest.mark.needs_shared
def test_domain_integers_equal_the_old_computation_on_the_real_annotations(icbhi_dir, tmp_path):
    patients = read_metadata(icbhi_dir / "meta" / "metadata.txt")
    db = open_database(icbhi_dir)
    for definitions in ("paper", "clean"):  # every one of the 920 annotated recordings
        for name in ("device", "age_group", "sex", "location"):
            assert domain_indices(name, [r.meta for r in db.recordings], definitions, db) == [
                old_domain(name, r.stem, r.device, patients, definitions) for r in db.recordings], (name, definitions)
    recs = [r for r in db.recordings if r.audio is not None]
    assert len(recs) == 29
    ds = CycleDataset(db, recs, cycle_cfg=CycleConfig(duration=1.0), fbank_cfg=None, cache_dir=tmp_path, workers=1,
                      progress=False)
    # Two clips "generated" from training recordings: their domains are their source recordings' ([AFT]).
    sources = [r for r in recs if r.split == "train"][:2]
    gen = tmp_path / "gen"
    gen.mkdir()
    with open(gen / "manifest.csv", "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["file", "class", "source_recording", "source_cycle", "patient", "device"])
        for k, rec in enumerate(sources):
            sf.write(gen / f"clip{k}.wav", np.zeros(16000, dtype=np.float32), 16000)
            writer.writerow([f"clip{k}.wav", "normal", rec.stem, 0, rec.patient, rec.device])
    mixed = MixedDataset(ds, GeneratedCycles(gen, CycleConfig(duration=1.0), fbank_cfg=None, progress=False,
                                             use_cache=False, devices=db.devices))
    stems = [ds.recordings[r].stem for r in ds.recording_index] + [r.stem for r in sources]
    devices = [ds.recordings[r].device for r in ds.recording_index] + [r.device for r in sources]
    loader = DataLoader(mixed, batch_size=16, shuffle=True, generator=torch.Generator().manual_seed(0),
                        collate_fn=collate_samples)
    for definitions in ("paper", "clean"):
        for name in ("device", "age_group", "sex", "location"):
            old = np.array([old_domain(name, s, d, patients, definitions) for s, d in zip(stems, devices)])
            assert mixed.domain_labels(name, definitions=definitions).tolist() == old.tolist(), (name, definitions)
            assert len(set(old.tolist())) > 1, (name, definitions)  # the real data has more than one group
            table = mixed.domain_labels(name, definitions=definitions)
            for step, sample in enumerate(loader):  # the first batches, as the trainer builds them
                batch = to_batch(sample, table, torch.device("cpu"))
                assert batch.domain.tolist() == old[batch.index.numpy()].tolist()
                assert len(batch.meta) == len(batch.label)
                if step == 2:
                    break
    old_device = np.array([old_domain("device", s, d, patients, "clean") for s, d in zip(stems, devices)])
    assert [mixed[i].device for i in range(len(mixed))] == old_device.tolist()
    assert mixed.domain_labels("generated").tolist() == [0] * len(ds) + [1, 1]


def test_the_device_ood_table_follows_the_runs_format(mlflow_store):
    for split, score, per_device in (("official", 60.0, {"phone": 70.0, "digital": 50.0}),
                                     ("device_out=phone", 40.0, {})):
        logger = RunLogger.start("fmt-ood", split, {"experiment_file": "exp", "protocol": "paper", "seed": 1,
                                                     "data_fingerprint": split})
        logger.log_params({"data.split": split, "train.seed": 1, "data.format": "test_csv_cycles"})
        logger.log_metrics({"final_test_score": score, **{f"final_test_score_{d}": v for d, v in per_device.items()}})
        logger.end("FINISHED")
    rows = device_ood_rows("exp", mlflow_experiments=["fmt-ood"])
    assert [r["held_out"] for r in rows] == ["phone", "digital", "none (official split)"]
    assert rows[0]["score"][0] == 40.0 and rows[0]["id_score"][0] == 70.0 and rows[0]["delta"] == -30.0
    assert rows[1]["seeds"] == 0 and rows[1]["id_score"][0] == 50.0
