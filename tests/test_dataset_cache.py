"""The feature cache and the training dataset on a tiny hand-made database and on real recordings."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

import lungsound.data.cache as cache_mod
from lungsound.data.cycles import CycleConfig, load_cycles
from lungsound.data.database import open_database
from lungsound.data.dataset import CycleDataset, collate_samples
from lungsound.errors import LungsoundError
from lungsound.features.fbank import FbankConfig, compute_features_batch

CYCLE = CycleConfig(duration=2.0)  # short cycles keep the test fast; the pipeline is the same


def test_dataset_items_and_domains(tiny_icbhi, tmp_path):
    db = open_database(tiny_icbhi)
    ds = CycleDataset.from_split(db, "train", cycle_cfg=CYCLE, cache_dir=tmp_path / "cache", workers=1,
                                 progress=False)
    assert len(ds) == 5 and ds.class_counts().tolist() == [2, 1, 1, 1]
    sample = ds[1]
    assert sample.x.shape == (198, 128) and sample.label == 1 and sample.device == 0  # Meditron
    assert sample.patient == 101 and sample.recording == "101_1b1_Al_sc_Meditron" and sample.index == 1
    assert ds.domain_labels("age_group").tolist() == [0, 0, 0, 0, 0]  # both patients are children
    assert ds.domain_labels("location").tolist() == [1, 1, 1, 2, 2]  # Al, Ar
    assert ds.domain_labels("sex").tolist() == [1] * 5
    with pytest.raises(LungsoundError, match="unknown domain 'bmi'"):
        ds.domain_labels("bmi")
    batch = next(iter(DataLoader(ds, batch_size=4, collate_fn=collate_samples)))
    assert batch.x.shape == (4, 198, 128) and batch.label.tolist() == [0, 1, 2, 3]
    assert batch.recording[0] == "101_1b1_Al_sc_Meditron"
    # one metadata record per sample, its recording's (conftest's metadata.txt: 101 3 years F, 102 0.75 years F)
    assert [(m.patient, m.age, m.sex, m.location, m.device) for m in batch.meta] == [
        (101, 3.0, "F", "Al", "Meditron")] * 3 + [(102, 0.75, "F", "Ar", "Meditron")]


def test_features_equal_direct_pipeline(tiny_icbhi, tmp_path):
    db = open_database(tiny_icbhi)
    rec = db.select("test")[0]
    ds = CycleDataset(db, [rec], cycle_cfg=CYCLE, cache_dir=tmp_path, workers=1, progress=False)
    direct = compute_features_batch(load_cycles(rec.audio, rec.cycles, CYCLE), FbankConfig())
    torch.testing.assert_close(torch.stack([ds[i].x for i in range(len(ds))]), direct)
    wave = CycleDataset(db, [rec], cycle_cfg=CYCLE, fbank_cfg=None, cache_dir=tmp_path, workers=1, progress=False)
    assert wave[0].x.shape == (32000,)


def test_cache_hit_miss_and_invalidation(tiny_icbhi, tmp_path, monkeypatch):
    tmp_path = tmp_path / "cache"
    db = open_database(tiny_icbhi)
    first = CycleDataset.from_split(db, "test", cycle_cfg=CYCLE, cache_dir=tmp_path, workers=1, progress=False)
    entries = [p for p in tmp_path.iterdir() if p.is_dir()]
    assert len(entries) == 1 and (entries[0] / "arrays.npy").exists()

    def fail(*args, **kwargs):
        raise AssertionError("recomputed although cached")

    monkeypatch.setattr(cache_mod, "compute_cycles", fail)
    again = CycleDataset.from_split(db, "test", cycle_cfg=CYCLE, cache_dir=tmp_path, workers=1, progress=False)
    np.testing.assert_array_equal(np.asarray(first.arrays), np.asarray(again.arrays))
    # Items are copies: changing one never writes into the cache.
    item = again[0].x
    item.fill_(7.0)
    assert not np.any(np.asarray(again.arrays[0]) == 7.0)
    monkeypatch.undo()
    # A changed annotation, or another config, is a new cache entry.
    ann = db.select("test")[0].annotation
    ann.write_text(ann.read_text().replace("0.2\t1.5", "0.25\t1.5"))
    db = open_database(tiny_icbhi)
    CycleDataset.from_split(db, "test", cycle_cfg=CYCLE, cache_dir=tmp_path, workers=1, progress=False)
    CycleDataset.from_split(db, "test", cycle_cfg=CycleConfig(duration=2.0, pad="zero"), cache_dir=tmp_path,
                            workers=1, progress=False)
    assert len([p for p in tmp_path.iterdir() if p.is_dir()]) == 3


def test_cache_key_follows_torch_and_torchaudio_versions(tiny_icbhi, monkeypatch):
    import torchaudio

    db = open_database(tiny_icbhi)
    recs = db.select("test")

    def key() -> str:
        return cache_mod.cache_key(db.root, recs, CYCLE, FbankConfig(), {})

    base = key()
    assert key() == base
    monkeypatch.setattr(torch, "__version__", "0.0.1-other")
    torch_changed = key()
    monkeypatch.setattr(torchaudio, "__version__", "0.0.1-other")
    both_changed = key()
    assert len({base, torch_changed, both_changed}) == 3


def test_parallel_equals_serial(tiny_icbhi, tmp_path):
    db = open_database(tiny_icbhi)
    serial = cache_mod.compute_cycles(db.recordings, CYCLE, FbankConfig(), workers=1, progress=False)
    parallel = cache_mod.compute_cycles(db.recordings, CYCLE, FbankConfig(), workers=2, progress=False)
    np.testing.assert_array_equal(serial, parallel)


def test_missing_audio_is_refused_or_skipped_loudly(tiny_icbhi, tmp_path):
    (tiny_icbhi / "102_1b1_Ar_sc_Meditron.wav").unlink()
    db = open_database(tiny_icbhi)
    with pytest.raises(LungsoundError, match="1 of 2 recordings have no audio file"):
        CycleDataset.from_split(db, "train", cycle_cfg=CYCLE, cache_dir=tmp_path, progress=False)
    with pytest.warns(UserWarning, match="leaving out 1 recordings without audio"):
        ds = CycleDataset.from_split(db, "train", cycle_cfg=CYCLE, cache_dir=tmp_path, progress=False,
                                     allow_missing_audio=True, workers=1)
    assert len(ds) == 3


@pytest.mark.needs_shared
def test_real_recordings_dataset(icbhi_dir, tmp_path):
    db = open_database(icbhi_dir)
    recs = [r for r in db.select("train") if r.audio is not None][:3]
    ds = CycleDataset(db, recs, cache_dir=tmp_path, workers=2, progress=False)
    assert len(ds) == sum(len(r.cycles) for r in recs)
    assert ds[0].x.shape == (798, 128) and torch.isfinite(ds[0].x).all()
    assert ds.labels.tolist() == [c.label for r in recs for c in r.cycles]
