"""Is a vocoder any good? `lungsound generate evaluate --set DIR [--classifier CKPT]`.

No published number exists for these; they tell a user whether generated cycles resemble real ones of their class:
- per class, the Frechet distance between real and generated cycles, FD = |mu_r - mu_g|^2 + Tr(S_r + S_g - 2 (S_r S_g)^(1/2))
  of Gaussians fitted to per-clip features: the time-pooled vocoder log-mel (80-d mean over frames), and, when a
  classifier is given, its pooled representation z (`forward_features`); the real cycles are the training cycles of the
  set's source data, cut like the vocoder's (4 s);
- with a classifier trained on real data: its accuracy on the generated clips of each class (does a generated wheeze get
  called a wheeze?), next to its accuracy on the same number of real training cycles of that class.
Results go to stdout and to an MLflow run (experiment `generation-quality`) with a few clips and a mel picture.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import numpy as np
import torch

from lungsound.audio import resample
from lungsound.data.generated import clip_input, load_clip, read_manifest, read_set_card
from lungsound.data.labels import CLASSES
from lungsound.errors import LungsoundError
from lungsound.generation.mel import SAMPLE_RATE, vocoder_mel
from lungsound.generation.train import training_clips
from lungsound.models.build import input_configs
from lungsound.models.folder import load_model
from lungsound.tracking import RunLogger


def frechet_distance(a: np.ndarray, b: np.ndarray) -> float:
    """FD between Gaussians fitted to the rows of `a` (n, d) and `b` (m, d); needs at least 2 rows each."""
    from scipy import linalg

    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if len(a) < 2 or len(b) < 2:
        return float("nan")
    mu_a, mu_b = a.mean(axis=0), b.mean(axis=0)
    cov_a, cov_b = np.atleast_2d(np.cov(a, rowvar=False)), np.atleast_2d(np.cov(b, rowvar=False))
    root, _ = linalg.sqrtm(cov_a @ cov_b, disp=False)
    if not np.isfinite(root).all():  # nearly singular product: regularise as is customary
        eye = np.eye(len(cov_a)) * 1e-6
        root = linalg.sqrtm((cov_a + eye) @ (cov_b + eye))
    return float(((mu_a - mu_b) ** 2).sum() + np.trace(cov_a + cov_b - 2 * np.real(root)))


def _logmel_features(waves: list[np.ndarray]) -> np.ndarray:
    return np.stack([vocoder_mel(torch.from_numpy(np.array(w, dtype=np.float32))).mean(dim=1).numpy()
                     for w in waves])


@torch.no_grad()
def _classifier_outputs(model, cfg, waves: list[np.ndarray], batch: int = 32) -> tuple[np.ndarray, np.ndarray]:
    """(z (n, D), predicted class (n,)) of a classifier on clips at the vocoder's rate, fed as its training fed
    generated clips (resampled to the classifier's own rate when it takes another)."""
    cycle_cfg, fbank_cfg = input_configs(cfg)
    waves = [resample(w, SAMPLE_RATE, cycle_cfg.sample_rate) for w in waves]  # the same arrays at equal rates
    device = next(model.parameters()).device
    zs, preds = [], []
    for i in range(0, len(waves), batch):
        x = torch.from_numpy(np.stack([clip_input(w, cycle_cfg, fbank_cfg, cfg.train.protocol == "paper")
                                       for w in waves[i:i + batch]])).to(device)
        z = model.forward_features(x)
        zs.append(z.float().cpu().numpy())
        preds.append(model.forward_head(z).argmax(dim=1).cpu().numpy())
    return np.concatenate(zs), np.concatenate(preds)


def evaluate_set(folder: str | Path, classifier: str | Path | None = None, root: str | None = None,
                 max_real: int = 1000, track: bool = True, progress: bool = True) -> dict:
    """Per-class quality numbers of a generated set (see the module docstring); returns {"rows", "text", "run_id"}."""
    folder = Path(folder)
    items = read_manifest(folder)
    card = _vocoder_meta(folder)
    clips = training_clips(root or card.get("data_root"), card.get("split", "official"), card.get("duration", 4.0),
                           "paper", progress=progress)
    model = cfg = None
    if classifier is not None:
        model, cfg, _ = load_model(classifier, device="cuda" if torch.cuda.is_available() else "cpu")
    rng = np.random.default_rng(0)
    rows = []
    for c, name in enumerate(CLASSES):
        gen_files = [it.file for it in items if it.label == c]
        real_idx = np.flatnonzero(clips.labels == c)
        if not gen_files or not len(real_idx):
            continue
        real_idx = rng.choice(real_idx, size=min(max_real, len(real_idx)), replace=False)
        real = [np.asarray(clips.waves[clips.rows[i]]) for i in real_idx]
        gen = [load_clip(folder, f, SAMPLE_RATE) for f in gen_files]  # at the vocoder mel's rate
        row = {"class": name, "generated": len(gen), "real": len(real),
               "fd_logmel": frechet_distance(_logmel_features(real), _logmel_features(gen))}
        if model is not None:
            z_real, p_real = _classifier_outputs(model, cfg, real)
            z_gen, p_gen = _classifier_outputs(model, cfg, gen)
            row |= {"fd_embedding": frechet_distance(z_real, z_gen), "acc_generated": 100 * float((p_gen == c).mean()),
                    "acc_real": 100 * float((p_real == c).mean())}
        rows.append(row)
    if not rows:
        raise LungsoundError("no class has both generated clips and real training cycles", folder)
    text = _table(rows)
    run_id = _log(folder, rows, items, classifier) if track else None
    return {"rows": rows, "text": text, "run_id": run_id}


def _vocoder_meta(folder: Path) -> dict:
    """The vocoder's training data (root, split, cycle length) as `synth` recorded it in the set's set.json, typed and
    range-checked (`read_set_card`)."""
    return read_set_card(folder).get("vocoder_meta", {})


def _table(rows: list[dict]) -> str:
    cols = [k for k in ("class", "generated", "real", "fd_logmel", "fd_embedding", "acc_generated", "acc_real")
            if k in rows[0]]
    fmt = lambda v: f"{v:.3f}" if isinstance(v, float) else str(v)  # noqa: E731
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(fmt(r[c]) for c in cols) + " |" for r in rows]
    return "\n".join(lines)


def _log(folder: Path, rows: list[dict], items, classifier) -> str:
    logger = RunLogger.start("generation-quality", folder.name, {"generated_set": str(folder.resolve()),
                                                                 "classifier": str(classifier or "")})
    logger.log_metrics({f"{k}_{r['class']}": v for r in rows for k, v in r.items()
                        if isinstance(v, float)})
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "quality.md").write_text(_table(rows) + "\n")
        for name in CLASSES:
            first = next((it.file for it in items if CLASSES[it.label] == name), None)
            if first:
                shutil.copy(folder / first, Path(tmp) / first)
        logger.log_artifact(tmp, "quality")
    logger.end("FINISHED")
    return logger.run_id
