"""Pictures of generated sound: real and vocoded mels side by side, the way a user checks a vocoder by eye."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from lungsound.generation.mel import HOP_LENGTH, SAMPLE_RATE


def mel_comparison(real: np.ndarray, generated: np.ndarray, path: str | Path, titles: list[str] | None = None) -> Path:
    """A grid with one row per example: the real cycle's vocoder mel (left) and the vocoded clip's mel (right).

    `real` and `generated` are (n, 80, F) arrays of `vocoder_mel` values in [0, 1] (frames 16 ms apart)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    real, generated = np.asarray(real), np.asarray(generated)
    n = len(real)
    fig, axes = plt.subplots(n, 2, figsize=(9, 1.9 * n + 0.6), squeeze=False, sharex=True)
    for i in range(n):
        for j, (mel, kind) in enumerate(((real[i], "real"), (generated[i], "generated"))):
            ax = axes[i, j]
            seconds = mel.shape[-1] * HOP_LENGTH / SAMPLE_RATE
            ax.imshow(mel, origin="lower", aspect="auto", vmin=0, vmax=1, cmap="magma", extent=(0, seconds, 0, 80))
            label = f"{titles[i]}: {kind}" if titles else kind
            ax.set_title(label, fontsize=8, loc="left")
            ax.set_yticks([0, 40, 80])
            if i == n - 1:
                ax.set_xlabel("seconds")
        axes[i, 0].set_ylabel("mel bin")
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=100, format="png")
    plt.close(fig)
    return path
