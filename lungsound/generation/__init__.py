"""Generation: the [AFT] DiffWave vocoder that synthesises respiratory sounds from mels (docs/methods.md section 10).

Kong et al., "DiffWave: A Versatile Diffusion Model for Audio Synthesis", ICLR 2021.
[AFT] Kim et al., "Adversarial Fine-tuning using Generated Respiratory Sound to Address Class Imbalance", NeurIPS 2023
DGM4H workshop, arXiv 2311.06480.

- :func:`vocoder_mel`: the vocoder's normalised log-mel (80 bins, hop 256) of 16-kHz audio.
- :class:`DiffWave` / :class:`DiffWaveConfig`: the noise-prediction network, in the reference parameter layout.
- :func:`training_loss`, :func:`fast_steps`, :func:`sample`, :func:`random_crop`, :data:`TRAIN_BETAS`,
  :data:`FAST_BETAS`: the diffusion (50 training steps, 6-step fast sampling).
- :func:`save_vocoder`, :func:`load_vocoder`, :func:`vocoder_sha256`, :func:`import_reference`: vocoder folders.
"""

from lungsound.generation.mel import vocoder_mel
from lungsound.generation.diffwave import DiffWave, DiffWaveConfig, count_parameters, step_table
from lungsound.generation.diffusion import (
    FAST_BETAS, TRAIN_BETAS, fast_steps, noise_levels, random_crop, reverse_process, sample, training_loss,
)
from lungsound.generation.vocoder_io import import_reference, load_vocoder, save_vocoder, vocoder_sha256

__all__ = [
    "DiffWave", "DiffWaveConfig", "FAST_BETAS", "TRAIN_BETAS", "count_parameters", "fast_steps", "import_reference",
    "load_vocoder", "noise_levels", "random_crop", "reverse_process", "sample", "save_vocoder", "step_table",
    "training_loss", "vocoder_mel", "vocoder_sha256",
]
