"""Synthetic cycle sets for [AFT] (docs/methods.md section 10): `lungsound generate synth`.

For each class c: draw `per_class` training cycles of class c at random with replacement (a NumPy generator seeded by
`seed`), vocode each one's mel from fresh noise with the vocoder (the 6-step fast schedule by default), and label the clip c.
The cycles are the vocoder's own training cycles (same data, split, 4-s cutting and, under the clean protocol, without
the validation patients), so a generated clip never comes from a test or validation recording.

Output folder: `<class>_<i>.wav` (16 kHz, 32-bit float WAV, as the reference writes its clips: no 16-bit rounding),
`manifest.csv` (file, class, source recording, source cycle, patient, device, seed, vocoder checkpoint SHA-256),
`set.json` (the vocoder and how it was trained) and `README.md` (a short data card). Sets written as 16-bit PCM by
earlier versions read as before (`lungsound.data.generated` decodes any WAV encoding). The folder must be new, empty
or a set made before (`GENERATED_SET`); anything else is refused before work starts.
The work is cut into fixed batches whose noise depends only on (seed, batch number), and every file and the manifest
are written atomically, so an interrupted run continues where it stopped and gives the same bytes as an uninterrupted one.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from scipy.io import wavfile
from tqdm.auto import tqdm

from lungsound.data.generated import COLUMNS, MANIFEST, SET_FILE
from lungsound.data.labels import CLASSES
from lungsound.errors import LungsoundError
from lungsound.generation.diffusion import sample
from lungsound.generation.mel import SAMPLE_RATE, vocoder_mel
from lungsound.generation.train import training_clips
from lungsound.generation.vocoder_io import load_vocoder, vocoder_sha256
from lungsound.limits import MAX_BATCH, MAX_PER_CLASS, MAX_SEED, check_int
from lungsound.storage import FolderKind, atomic_write, atomic_write_json, atomic_write_text, claim_output_dir

RATE = SAMPLE_RATE  # the clips are the vocoder's output
# --out must be new, empty or a set written before (an interrupted run continues there): its manifest (written first,
# before any clip), its clips and its two other files, nothing else
GENERATED_SET = FolderKind("a generated set", (MANIFEST,),
                           tuple(f"{name}_*.wav" for name in CLASSES) + (MANIFEST, SET_FILE, "README.md"))


@dataclass(frozen=True)
class Planned:
    file: str
    label: int
    clip: int  # index into the vocoder's training clips


def plan(labels: np.ndarray, per_class: int, seed: int, classes: list[str] | None = None) -> list[Planned]:
    """The clips to make, class by class: draws with replacement from each class's training cycles."""
    rng = np.random.default_rng(seed)
    out = []
    for c, name in enumerate(CLASSES):
        pool = np.flatnonzero(labels == c)
        draws = rng.choice(pool, size=per_class, replace=True) if len(pool) else None
        if classes is not None and name not in classes:
            continue
        if draws is None:
            raise LungsoundError(f"no training cycle of class {name!r} to vocode")
        out += [Planned(f"{name}_{i:05d}.wav", c, int(k)) for i, k in enumerate(draws)]
    return out


def _read_done(out: Path, seed: int, sha: str) -> dict[str, dict]:
    path = out / MANIFEST
    if not path.is_file():
        return {}
    with open(path, newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    for row in rows[:1]:
        if row.get("seed") != str(seed) or row.get("vocoder_sha256") != sha:
            raise LungsoundError(f"{MANIFEST} holds clips of another seed or vocoder (seed {row.get('seed')}); "
                                 "choose another --out folder", out)
    return {row["file"]: row for row in rows if (out / row["file"]).is_file()}


def _write_manifest(out: Path, rows: list[dict]) -> None:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(COLUMNS), lineterminator="\n")
    writer.writeheader()
    writer.writerows(sorted(rows, key=lambda r: (CLASSES.index(r["class"]), r["file"])))
    atomic_write_text(out / MANIFEST, buf.getvalue())


def _write_wav(path: Path, audio: np.ndarray) -> None:
    """A 32-bit float WAV (format 3, no PEAK chunk). scipy rather than soundfile: libsndfile adds a PEAK chunk with the
    time of writing to float WAVs, so a resumed set would not give the same bytes as an uninterrupted one."""
    with atomic_write(path) as tmp:
        wavfile.write(str(tmp), RATE, np.clip(audio, -1.0, 1.0).astype(np.float32))


def synthesize(vocoder: str | Path, per_class: int, out: str | Path, *, root: str | None = None, seed: int = 0,
               schedule: str = "fast", batch_size: int = 16, classes: list[str] | None = None,
               device: str | None = None, progress: bool = True) -> dict:
    """Make (or finish) a generated set; returns {"out", "made", "kept", "counts"}."""
    per_class = check_int("--per-class", per_class, 1, MAX_PER_CLASS)
    batch_size = check_int("--batch-size", batch_size, 1, MAX_BATCH)
    seed = check_int("--seed", seed, 0, MAX_SEED)
    if classes is not None and (bad := [c for c in classes if c not in CLASSES]):
        raise LungsoundError(f"unknown class(es) {', '.join(bad)}; classes are {', '.join(CLASSES)}")
    out = claim_output_dir(out, GENERATED_SET, vocoder)
    dev = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    model, config, meta = load_vocoder(vocoder, device=dev)
    sha = vocoder_sha256(vocoder)
    clips = training_clips(root or meta.get("data_root"), meta.get("split", "official"), meta.get("duration", 4.0),
                           meta.get("protocol", "paper"), meta.get("val_fraction", 0.2), meta.get("val_seed", 0),
                           progress=progress)
    todo = plan(clips.labels, per_class, seed, classes)
    out.mkdir(parents=True, exist_ok=True)
    done = _read_done(out, seed, sha)
    kept, rows = len(done), list(done.values())
    _write_manifest(out, rows)  # first: it marks the folder as this set's (lungsound.storage.claim_output_dir)
    batches = [todo[i:i + batch_size] for i in range(0, len(todo), batch_size)]
    bar = tqdm(total=len(todo), initial=kept, desc="vocoding", unit="clip", disable=not progress, dynamic_ncols=True)
    for b, batch in enumerate(batches):
        if all(p.file in done for p in batch):
            continue
        waves = torch.stack([torch.from_numpy(np.array(clips.waves[clips.rows[p.clip]], dtype=np.float32))
                             for p in batch])
        generator = torch.Generator().manual_seed(seed * 1_000_003 + b)
        labels = torch.tensor([p.label for p in batch], device=dev) if config.num_classes else None
        audio = sample(model, vocoder_mel(waves).to(dev), schedule=schedule, generator=generator,
                       class_label=labels).cpu().numpy()
        for p, clip in zip(batch, audio):
            if p.file in done:
                continue
            _write_wav(out / p.file, clip)
            stem, cycle, device = clips.source[p.clip]
            row = {"file": p.file, "class": CLASSES[p.label], "source_recording": stem, "source_cycle": cycle,
                   "patient": int(clips.patients[p.clip]), "device": device, "seed": seed,
                   "vocoder_sha256": sha}
            rows.append(row)
            done[p.file] = row
            bar.update()
        _write_manifest(out, rows)
    bar.close()
    counts = {name: sum(r["class"] == name for r in rows) for name in CLASSES}
    atomic_write_json(out / SET_FILE, {"vocoder": str(Path(vocoder).resolve()), "vocoder_sha256": sha,
                                      "vocoder_meta": {**meta, "data_root": clips.root}, "seed": seed,
                                      "schedule": schedule, "per_class": per_class, "counts": counts})
    _data_card(out, vocoder, sha, meta, seed, schedule, counts, clips.root)
    return {"out": out, "made": len(rows) - kept, "kept": kept, "counts": counts}


def _data_card(out: Path, vocoder, sha: str, meta: dict, seed: int, schedule: str, counts: dict, root: str) -> None:
    lines = ["# Generated respiratory cycles", "",
             "Made by `lungsound generate synth` with a DiffWave vocoder ([AFT], docs/methods.md section 10): each clip is a "
             "real training cycle's mel vocoded from fresh noise, labelled with that cycle's class. **Synthetic "
             "audio: for data augmentation research only, never for clinical use or evaluation.**", "",
             f"- vocoder: `{vocoder}` (model.safetensors SHA-256 `{sha}`), trained {meta.get('step', '?')} steps, "
             f"{meta.get('protocol', '?')} protocol",
             f"- source data: `{root}`, training split only" + (" without the validation patients"
                                                                if meta.get("protocol") == "clean" else ""),
             f"- sampling: {schedule} schedule, seed {seed}; 16 kHz, 32-bit float, "
             f"{meta.get('duration', 4.0):g}-s clips",
             "- clips per class: " + ", ".join(f"{k} {v}" for k, v in counts.items()),
             "", "`manifest.csv` lists each clip's source recording, cycle, patient and device."]
    atomic_write_text(out / "README.md", "\n".join(lines) + "\n")
