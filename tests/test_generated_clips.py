"""Generated clips on disk: 32-bit float as the reference writes them, older 16-bit sets still read, and the fbank
frame count of a vocoded 4-s clip (methods.md section 10)."""

from __future__ import annotations

import shutil

import numpy as np
import soundfile as sf

from lungsound.data.cycles import CycleConfig
from lungsound.data.generated import GeneratedCycles, clip_input, read_manifest
from lungsound.features.fbank import FbankConfig, compute_features
from lungsound.generation.synth import _write_wav
from tests.conftest import write_generated_set


def test_float_clips_keep_what_16_bit_rounds_and_both_sets_read(small_icbhi, tmp_path):
    pcm = write_generated_set(small_icbhi, tmp_path / "pcm16", per_recording=1)  # an older set: 1.5-s clips
    items = read_manifest(pcm)
    assert {sf.info(pcm / it.file).subtype for it in items} == {"PCM_16"}
    floats = tmp_path / "float"
    floats.mkdir()
    shutil.copy(pcm / "manifest.csv", floats / "manifest.csv")
    rng = np.random.default_rng(1)
    clips = [(1e-5 * rng.standard_normal(24000)).astype(np.float32) for _ in items]  # below 16-bit's 1/32768 step
    for it, clip in zip(items, clips):
        _write_wav(floats / it.file, clip)
        assert sf.info(floats / it.file).subtype == "FLOAT"
    cfg = CycleConfig(duration=1.0)  # the 1.5-s clips are cut to their first 16,000 samples, nothing else changes
    read = GeneratedCycles(floats, cfg, fbank_cfg=None, progress=False, use_cache=False)
    assert all(np.array_equal(read.item(i)[0].numpy(), clip[:16000]) for i, clip in enumerate(clips))  # bit for bit
    old = GeneratedCycles(pcm, cfg, fbank_cfg=None, progress=False, use_cache=False)
    assert len(old) == len(items) and old.labels.tolist() == read.labels.tolist()
    for i, it in enumerate(items):
        assert np.array_equal(old.item(i)[0].numpy(), sf.read(pcm / it.file, dtype="float32")[0][:16000])


def test_a_vocoded_4s_clip_has_400_fbank_frames_stretched_to_498():
    clip = (0.1 * np.random.default_rng(0).standard_normal(251 * 256)).astype(np.float32)  # 64,256 samples
    assert compute_features(clip, FbankConfig()).shape == (400, 128)  # (64256 - 400) // 160 + 1 = 400
    assert clip_input(clip, CycleConfig(duration=5.0), FbankConfig(), stretch=True).shape == (498, 128)
