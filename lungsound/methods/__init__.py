"""Training objectives, one published method per module (see each module's docstring for the paper and equations).

Each objective is registered on `lungsound.methods.base.OBJECTIVES` with what a model card says about it (its words,
its paper, whether it uses a metadata domain). The names below come from `lungsound.methods.base`, which imports torch:
they are loaded on first use (PEP 562), so that `lungsound.config` can read `lungsound.methods.vocabulary` (the
representation augmentation's words) without loading torch (2.7 s on a cold start, against 0.04 s for the config).
"""

import importlib

__all__ = ["OBJECTIVES", "Batch", "CrossEntropy", "Objective", "ObjectiveSpec", "StepContext",
           "class_weights_from_counts", "create_objective", "list_objectives", "objective_spec", "register_objective"]


def __getattr__(name: str):
    if name in __all__:
        return getattr(importlib.import_module("lungsound.methods.base"), name)
    raise AttributeError(f"module 'lungsound.methods' has no attribute {name!r}")
