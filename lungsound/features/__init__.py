"""Features and spectrogram augmentation: Kaldi fbank with AST normalisation, and SpecAugment (docs/methods.md section 3)."""

from lungsound.features.fbank import (
    FbankConfig,
    ast_normalize,
    compute_features,
    compute_features_batch,
    frames_for_duration,
    kaldi_fbank,
    num_frames,
    patch_grid,
)
from lungsound.features.specaugment import MaskPlan, SpecAugConfig, SpecAugment

__all__ = [
    "FbankConfig",
    "MaskPlan",
    "SpecAugConfig",
    "SpecAugment",
    "ast_normalize",
    "compute_features",
    "compute_features_batch",
    "frames_for_duration",
    "kaldi_fbank",
    "num_frames",
    "patch_grid",
]
