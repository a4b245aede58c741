"""Spectrogram grid of one respiratory cycle per class (rows) and per device (columns), for the data card.

Works on any folder in the flat ICBHI 2017 layout (a synthetic set or the real archive): for every (class, device)
pair it takes the first recording, in name order, that has audio and a cycle of that class, and shows that cycle's
log-magnitude STFT (Hann window of 20 ms, hop 4 ms, 0-2 kHz, dB relative to the cycle's peak, 60 dB range). The short
window keeps crackles as vertical lines; wheezes show as horizontal lines with harmonics above them.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import scipy.signal
import soundfile as sf
from matplotlib.figure import Figure

from lungsound.data.formats.icbhi import DEVICES
from lungsound.data.labels import CLASSES, class_from_flags
from lungsound.data.synthetic.like import parse_annotation
from lungsound.data.synthetic.spec import Cycle, split_stem
from lungsound.errors import LungsoundError

MAX_HZ = 2000.0
DYNAMIC_RANGE_DB = 60.0


def _pick_examples(data_dir: Path) -> dict[tuple[str, str], tuple[Path, Cycle]]:
    """(class, device) -> (wav path, cycle), the first match in name order (the cycle nearest 2.5 s long)."""
    picks: dict[tuple[str, str], tuple[Path, Cycle]] = {}
    for txt in sorted(data_dir.glob("*.txt")):
        parts = split_stem(txt.stem)
        wav = txt.with_suffix(".wav")
        if parts is None or parts[4] not in DEVICES or not wav.is_file():
            continue
        by_class: dict[str, list[Cycle]] = {}
        for cycle in parse_annotation(txt):
            by_class.setdefault(CLASSES[class_from_flags(cycle.crackles, cycle.wheezes)], []).append(cycle)
        for name, cycles in by_class.items():
            if (name, parts[4]) not in picks:
                picks[(name, parts[4])] = (wav, min(cycles, key=lambda c: abs((c.end - c.start) - 2.5)))
    return picks


def _spectrogram(wav: Path, cycle: Cycle) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    info = sf.info(str(wav))
    sr = info.samplerate
    start, stop = int(cycle.start * sr), min(int(cycle.end * sr), info.frames)
    audio, _ = sf.read(str(wav), start=start, stop=max(stop, start + 1), dtype="float64", always_2d=True)
    audio = audio.mean(axis=1)
    window = max(16, int(0.02 * sr))
    hop = max(1, int(0.004 * sr))
    freqs, times, z = scipy.signal.stft(audio, sr, window="hann", nperseg=window, noverlap=window - hop,
                                        boundary=None, padded=True)
    keep = freqs <= MAX_HZ
    power_db = 20.0 * np.log10(np.abs(z[keep]) + 1e-12)
    return times, freqs[keep], power_db - power_db.max()


def plot_examples(data_dir: str | Path, out_png: str | Path) -> Path:
    """Save the class x device spectrogram grid of the dataset in `data_dir` to `out_png`; returns the path."""
    data_dir, out_png = Path(data_dir), Path(out_png)
    if not data_dir.is_dir():
        raise LungsoundError("dataset folder not found", data_dir)
    picks = _pick_examples(data_dir)
    if not picks:
        raise LungsoundError("no recordings with audio and annotations to plot", data_dir)
    fig = Figure(figsize=(4.0 * len(DEVICES), 2.6 * len(CLASSES)), constrained_layout=True)
    axes = fig.subplots(len(CLASSES), len(DEVICES), squeeze=False)
    image = None
    for row, name in enumerate(CLASSES):
        for col, device in enumerate(DEVICES):
            ax = axes[row][col]
            if (name, device) not in picks:
                ax.text(0.5, 0.5, "no example", ha="center", va="center", transform=ax.transAxes)
                ax.set_xticks([])
                ax.set_yticks([])
            else:
                wav, cycle = picks[(name, device)]
                times, freqs, power = _spectrogram(wav, cycle)
                image = ax.pcolormesh(times, freqs, power, shading="auto", cmap="magma",
                                      vmin=-DYNAMIC_RANGE_DB, vmax=0.0)
                ax.set_title(f"{wav.stem}\n{cycle.start:.2f}-{cycle.end:.2f} s", fontsize=8)
            if col == 0:
                ax.set_ylabel(f"{name}\nHz")
            if row == len(CLASSES) - 1:
                ax.set_xlabel(f"{device}: seconds")
    if image is not None:
        fig.colorbar(image, ax=axes, shrink=0.6, label="dB re. cycle peak")
    out_png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(str(out_png), dpi=80)
    return out_png
