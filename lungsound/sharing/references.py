"""The papers a trained model owes its method to, read off its config (for the model card's citation section).

The references are those of the method specification (../shared/docs/methods.md): [PMCL] Bae et al., Interspeech 2023;
[SGSCL] Kim et al., ICASSP 2024; [REPAUG] Kim et al., EMBC 2024; [AFT] Kim et al., NeurIPS 2023 DGM4H workshop; and the
ICBHI 2017 database (Rocha et al., Physiological Measurement 2019). Which ones a model cites:

- objective `patchmix_ce` / `patchmix_cl`: [PMCL]; `sgscl`: [SGSCL]; `dat` with the real/generated flag as its
  domain (`method.params.domain: generated`): [AFT]'s adversarial fine-tuning, any other domain: the DAT baseline of
  [SGSCL]; `compose`: each part's paper;
- plain cross-entropy (`ce`): the AST fine-tuning baseline of [PMCL] for an AST, the speech-model recipe of [REPAUG] for
  a waveform speech model, nothing for a CNN;
- `augment.representation` other than none (RepAugment, Rep-Mask, Rep-Gen): [REPAUG];
- `data.generated` (diffusion-generated training clips): [AFT];
- real (not synthetic) training data: the ICBHI 2017 database paper.
"""

from __future__ import annotations

from dataclasses import dataclass

from lungsound.config import ExperimentConfig


@dataclass(frozen=True)
class Reference:
    key: str  # the tag methods.md uses, e.g. "PMCL"
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
}

OBJECTIVES = {
    "ce": "cross-entropy fine-tuning",
    "patchmix_ce": "Patch-Mix with mixed-label cross-entropy",
    "patchmix_cl": "Patch-Mix contrastive learning",
    "sgscl": "stethoscope-guided supervised contrastive learning, SG-SCL",
    "dat": "domain-adversarial training, DAT",
    "compose": "a sum of several methods' auxiliary terms",
}
REPRESENTATIONS = {"rep_mask": "Rep-Mask", "rep_gen": "Rep-Gen", "repaugment": "RepAugment"}


def method_words(cfg: ExperimentConfig) -> str:
    """The training method in words, e.g. 'Patch-Mix contrastive learning (`patchmix_cl`) + RepAugment'."""
    name = cfg.method.name
    words = OBJECTIVES.get(name, name)
    if name == "dat" and _adversarial_fine_tuning(cfg.method.params):
        words = "adversarial fine-tuning on real and generated sounds, AFT"
    if name == "compose":
        words = " + ".join(OBJECTIVES.get(part, part) for part in _parts(cfg.method.params))
    text = f"{words} (`{name}`" + (", class-weighted CE" if cfg.method.class_weighted else "") + ")"
    if cfg.augment.representation != "none":
        text += f" + {REPRESENTATIONS[cfg.augment.representation]} on the representation"
    if cfg.data.generated:
        text += " + diffusion-generated training clips"
    return text


def references_for(cfg: ExperimentConfig, synthetic: bool) -> list[tuple[Reference, str]]:
    """(paper, what it is cited for) for a model's config, each paper once, methods first and the data set last."""
    from lungsound.models import SPEECH_MODELS

    cited: dict[str, str] = {}

    def cite(key: str, why: str) -> None:
        cited[key] = f"{cited[key]}; {why}" if key in cited and why not in cited[key] else why

    for name, params in _objectives(cfg):
        if name in ("patchmix_ce", "patchmix_cl"):
            cite("PMCL", OBJECTIVES[name])
        elif name == "sgscl":
            cite("SGSCL", OBJECTIVES[name])
        elif name == "dat" and _adversarial_fine_tuning(params):
            cite("AFT", "adversarial fine-tuning with generated sounds")
        elif name == "dat":
            cite("SGSCL", "the device-adversarial (DAT) baseline")
        elif name == "ce" and cfg.model.name.startswith("ast"):
            cite("PMCL", "the AST fine-tuning recipe")
        elif name == "ce" and cfg.model.name in SPEECH_MODELS:
            cite("REPAUG", "fine-tuning waveform speech models")
    if cfg.augment.representation != "none":
        cite("REPAUG", REPRESENTATIONS[cfg.augment.representation])
    if cfg.data.generated:
        cite("AFT", "diffusion-generated training clips")
    if not synthetic:
        cite("ICBHI", "the training and test data")
    return [(PAPERS[key], why) for key, why in cited.items()]


def _objectives(cfg: ExperimentConfig) -> list[tuple[str, dict]]:
    """(objective name, its params): the method itself, or each part of a `compose` method."""
    if cfg.method.name != "compose":
        return [(cfg.method.name, cfg.method.params)]
    out = []
    for spec in cfg.method.params.get("parts") or []:
        if isinstance(spec, str):
            out.append((spec, {}))
        elif isinstance(spec, dict) and isinstance(spec.get("name"), str):
            out.append((spec["name"], spec))
    return out


def _parts(params: dict) -> list[str]:
    return [spec if isinstance(spec, str) else str(spec.get("name")) for spec in params.get("parts") or []
            if isinstance(spec, (str, dict))]


def _adversarial_fine_tuning(params: dict) -> bool:
    """A `dat` objective whose domain is the real/generated flag (it defaults to the device): [AFT]'s adversarial
    fine-tuning."""
    return params.get("domain", "device") == "generated"
