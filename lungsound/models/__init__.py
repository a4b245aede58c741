"""Models behind one contract (:mod:`lungsound.models.base`), built by name.

``create_model("ast", num_classes=4)`` builds the AST of [PMCL]/[SGSCL]/[AFT] (docs/methods.md section 4); ``ast_tiny`` is a
small AST for tests; ``cnn`` / ``resnet18`` / ``efficientnet_b0`` are timm CNN baselines; ``wav2vec2_base``,
``hubert_base``, ``wavlm_base_plus`` (and large and tiny variants) are waveform speech models ([REPAUG], section 9);
``efficientat_mn04`` .. ``efficientat_mn20`` are the AudioSet-pretrained EfficientAT CNNs on their own 32-kHz front end
([EFFAT], section 12); ``clap_bts`` / ``clap_audio`` are LAION-CLAP with and without the metadata sentence ([BTS],
section 13). Pretrained AST weights load through :func:`load_ast_weights` (Hugging Face, the original AudioSet ``.pth``, or ImageNet DeiT).
"""

from lungsound.features.fbank import frames_for_duration, patch_grid  # fbank facts, importable here too
from lungsound.models.registry import (ModelSpec, check_model_params, create_model, list_models, model_config_keys,
                                       model_spec, register_model)
from lungsound.models.base import ClassifierHead, FeatureClassifier, PatchHook
from lungsound.models.ast import AST, ASTConfig
from lungsound.models.cnn import CNNConfig, TimmCNN
from lungsound.models.ast_weights import LoadReport, adapt_pos_embed, load_ast_weights
from lungsound.models.speech import SPEECH_MODELS, SpeechClassifier, SpeechConfig
from lungsound.models.clap import ClapClassifier, ClapSettings, metadata_prompt
from lungsound.models.efficientat import EfficientAT, EfficientATConfig, audioset_tagger

__all__ = [
    "AST", "ASTConfig", "ModelSpec", "check_model_params", "model_spec",
    "CNNConfig", "ClassifierHead", "FeatureClassifier", "LoadReport", "PatchHook", "TimmCNN",
    "adapt_pos_embed", "create_model", "frames_for_duration", "list_models", "load_ast_weights", "model_config_keys", "patch_grid",
    "register_model", "SPEECH_MODELS", "SpeechClassifier", "SpeechConfig", "ClapClassifier", "ClapSettings",
    "metadata_prompt",
    "EfficientAT", "EfficientATConfig", "audioset_tagger",
]
