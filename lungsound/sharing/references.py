"""The papers a trained model owes its method to, read off its config (for the model card's citation section).

The references are those of the method specification (docs/methods.md): [PMCL] Bae et al., Interspeech 2023;
[SGSCL] Kim et al., ICASSP 2024; [REPAUG] Kim et al., EMBC 2024; [AFT] Kim et al., NeurIPS 2023 DGM4H workshop; and the
ICBHI 2017 database (Rocha et al., Physiological Measurement 2019). Which ones a model cites, read off the
registrations (`lungsound.methods.base.ObjectiveSpec`, `lungsound.models.registry.ModelSpec`), never off names:

- each objective its own paper (`ObjectiveSpec.paper`): `patchmix_ce` / `patchmix_cl` [PMCL], `sgscl` [SGSCL], `dat`
  the DAT baseline of [SGSCL], or, with the real/generated flag as its domain (`method.params.domain: generated`),
  [AFT]'s adversarial fine-tuning (the objective's `configured` hook); `compose`: each part's paper;
- plain fine-tuning (`ce`, `ObjectiveSpec.fine_tuning`): the recipe its backbone's paper (`ModelSpec.paper`) maps to
  in `RECIPES`: the AST fine-tuning baseline of [PMCL] for an AST, the speech-model recipe of [REPAUG] for a waveform
  speech model, [EFFAT]'s for EfficientAT, nothing for a CNN; a fine-tuning objective with a paper of its own
  (`mixup`) cites both;
- `augment.representation` other than none (RepAugment, Rep-Mask, Rep-Gen): [REPAUG];
- `data.generated` (diffusion-generated training clips): [AFT];
- `train.optimizer: sam`: SAM (Foret et al., ICLR 2021), or ASAM (Kwon et al., ICML 2021) with `train.sam_adaptive`;
- real (not synthetic) training data: the ICBHI 2017 database paper.
"""

from __future__ import annotations

from dataclasses import dataclass

from lungsound.config import REPRESENTATIONS, ExperimentConfig
from lungsound.methods.base import ObjectiveSpec, objective_spec
from lungsound.models.registry import model_spec


@dataclass(frozen=True)
class Reference:
    key: str  # the tag docs/methods.md uses, e.g. "PMCL"
    text: str  # authors, title, venue
    url: str


PAPERS: dict[str, Reference] = {
    "PMCL": Reference("PMCL", 'Bae et al., "Patch-Mix Contrastive Learning with Audio Spectrogram Transformer on '
                      'Respiratory Sound Classification", Interspeech 2023, arXiv 2305.14032',
                      "https://arxiv.org/abs/2305.14032"),
    "SGSCL": Reference("SGSCL", 'Kim, Bae, Cho, Lee, Jung, "Stethoscope-guided Supervised Contrastive Learning for '
                       'Cross-domain Adaptation on Respiratory Sound Classification", ICASSP 2024, arXiv 2312.09603',
                       "https://arxiv.org/abs/2312.09603"),
    "REPAUG": Reference("REPAUG", 'Kim, Toikkanen, Bae, Kim, Jung, "RepAugment: Input-Agnostic Representation-Level '
                        'Augmentation for Respiratory Sound Classification", EMBC 2024, arXiv 2405.02996',
                        "https://arxiv.org/abs/2405.02996"),
    "AFT": Reference("AFT", 'Kim et al., "Adversarial Fine-tuning using Generated Respiratory Sound to Address Class '
                     'Imbalance", NeurIPS 2023 DGM4H workshop, arXiv 2311.06480', "https://arxiv.org/abs/2311.06480"),
    # The optimiser (`train.optimizer: sam`, docs/methods.md section 14):
    "SAM": Reference("SAM", 'Foret, Kleiner, Mobahi, Neyshabur, "Sharpness-Aware Minimization for Efficiently '
                     'Improving Generalization", ICLR 2021, arXiv 2010.01412', "https://arxiv.org/abs/2010.01412"),
    "ASAM": Reference("ASAM", 'Kwon, Kim, Park, Choi, "ASAM: Adaptive Sharpness-Aware Minimization for Scale-Invariant '
                      'Learning of Deep Neural Networks", ICML 2021, arXiv 2102.11600',
                      "https://arxiv.org/abs/2102.11600"),
    "ICBHI": Reference("ICBHI", 'Rocha et al., "An open access database for the evaluation of respiratory sound '
                       'classification algorithms", Physiological Measurement 40 (2019) 035001 (ICBHI 2017)',
                       "https://doi.org/10.1088/1361-6579/ab03ea"),
    # The backbones' own papers (a model's `ModelSpec.paper`):
    "AST": Reference("AST", 'Gong, Chung, Glass, "AST: Audio Spectrogram Transformer", Interspeech 2021, '
                     'arXiv 2104.01778', "https://arxiv.org/abs/2104.01778"),
    "WAV2VEC2": Reference("WAV2VEC2", 'Baevski, Zhou, Mohamed, Auli, "wav2vec 2.0: A Framework for Self-Supervised '
                          'Learning of Speech Representations", NeurIPS 2020, arXiv 2006.11477',
                          "https://arxiv.org/abs/2006.11477"),
    "HUBERT": Reference("HUBERT", 'Hsu et al., "HuBERT: Self-Supervised Speech Representation Learning by Masked '
                        'Prediction of Hidden Units", IEEE/ACM TASLP 2021, arXiv 2106.07447',
                        "https://arxiv.org/abs/2106.07447"),
    "WAVLM": Reference("WAVLM", 'Chen et al., "WavLM: Large-Scale Self-Supervised Pre-Training for Full Stack Speech '
                       'Processing", IEEE JSTSP 2022, arXiv 2110.13900', "https://arxiv.org/abs/2110.13900"),
    "XLSR": Reference("XLSR", 'Babu et al., "XLS-R: Self-supervised Cross-lingual Speech Representation Learning at '
                      'Scale", Interspeech 2022, arXiv 2111.09296', "https://arxiv.org/abs/2111.09296"),
    "RESNET": Reference("RESNET", 'He, Zhang, Ren, Sun, "Deep Residual Learning for Image Recognition", CVPR 2016, '
                        'arXiv 1512.03385', "https://arxiv.org/abs/1512.03385"),
    "EFFICIENTNET": Reference("EFFICIENTNET", 'Tan, Le, "EfficientNet: Rethinking Model Scaling for Convolutional '
                              'Neural Networks", ICML 2019, arXiv 1905.11946', "https://arxiv.org/abs/1905.11946"),
    "BTS": Reference("BTS", 'Kim, Toikkanen, Choi, Bae, Jung, "BTS: Bridging Text and Sound Modalities for Metadata-Aided '
                     'Respiratory Sound Classification", Interspeech 2024, arXiv 2406.06786',
                     "https://arxiv.org/abs/2406.06786"),
    "CLAP": Reference("CLAP", 'Wu et al., "Large-scale Contrastive Language-Audio Pretraining with Feature Fusion and '
                      'Keyword-to-Caption Augmentation", ICASSP 2023, arXiv 2211.06687',
                      "https://arxiv.org/abs/2211.06687"),
    "EFFAT": Reference("EFFAT", 'Schmid, Koutini, Widmer, "Efficient Large-Scale Audio Tagging via Transformer-to-CNN '
                       'Knowledge Distillation", ICASSP 2023, arXiv 2211.04772', "https://arxiv.org/abs/2211.04772"),
    "MIXUP": Reference("MIXUP", 'Zhang, Cisse, Dauphin, Lopez-Paz, "mixup: Beyond Empirical Risk Minimization", '
                       'ICLR 2018, arXiv 1710.09412', "https://arxiv.org/abs/1710.09412"),
}

# Plain fine-tuning (an objective with `fine_tuning`) follows a published recipe for some backbones: the backbone's
# own paper (`ModelSpec.paper`) -> (the paper whose recipe it is, what it is cited for). A backbone not here (a CNN)
# cites none.
RECIPES: dict[str, tuple[str, str]] = {
    "AST": ("PMCL", "the AST fine-tuning recipe"),
    **{paper: ("REPAUG", "fine-tuning waveform speech models") for paper in ("WAV2VEC2", "HUBERT", "WAVLM", "XLSR")},
    "CLAP": ("BTS", "the CLAP fine-tuning recipe"),
    "EFFAT": ("EFFAT", "the EfficientAT fine-tuning recipe"),
}


def method_words(cfg: ExperimentConfig) -> str:
    """The training method in words, e.g. 'Patch-Mix contrastive learning (`patchmix_cl`) + RepAugment'."""
    name = cfg.method.name
    words = " + ".join(spec.card for spec, _ in _objectives(cfg)) or objective_spec(name).card
    text = f"{words} (`{name}`" + (", class-weighted CE" if cfg.method.class_weighted else "") + ")"
    if cfg.augment.representation != "none":
        text += f" + {REPRESENTATIONS[cfg.augment.representation]} on the representation"
    if cfg.data.generated:
        text += " + diffusion-generated training clips"
    if cfg.train.optimizer == "sam":
        text += f", trained with {'ASAM' if cfg.train.sam_adaptive else 'SAM'} (rho {cfg.train.sam_rho:g})"
    return text


def references_for(cfg: ExperimentConfig, synthetic: bool) -> list[tuple[Reference, str]]:
    """(paper, what it is cited for) for a model's config, each paper once, methods first and the data set last."""
    cited: dict[str, str] = {}

    def cite(key: str, why: str) -> None:
        cited[key] = f"{cited[key]}; {why}" if key in cited and why not in cited[key] else why

    backbone = model_spec(cfg.model.name).paper  # an unknown model is an error, never a guess
    for spec, _ in _objectives(cfg):
        if spec.paper is not None:
            cite(spec.paper, spec.reason)
        if spec.fine_tuning and backbone in RECIPES:  # a fine-tuning objective with a paper of its own (mixup) too
            cite(*RECIPES[backbone])
    if cfg.augment.representation != "none":
        cite("REPAUG", REPRESENTATIONS[cfg.augment.representation])
    if cfg.data.generated:
        cite("AFT", "diffusion-generated training clips")
    if cfg.train.optimizer == "sam":
        cite("ASAM" if cfg.train.sam_adaptive else "SAM", "the sharpness-aware optimiser")
    if not synthetic:
        cite("ICBHI", "the training and test data")
    return [(PAPERS[key], why) for key, why in cited.items()]


def _objectives(cfg: ExperimentConfig) -> list[tuple[ObjectiveSpec, dict]]:
    """(objective spec as its params make it, its params): the method itself, or each part of a composition."""
    spec = objective_spec(cfg.method.name)
    if spec.parts is None:
        return [(spec.as_configured(cfg.method.params), cfg.method.params)]
    parts = [(objective_spec(name), params) for name, params in spec.parts(cfg.method.params)]
    return [(part.as_configured(params), params) for part, params in parts]
