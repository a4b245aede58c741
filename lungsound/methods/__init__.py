"""Training objectives, one published method per module (see each module's docstring for the paper and equations).

Each objective is registered on `OBJECTIVES` with what a model card says about it (`ObjectiveSpec`: its words, its
paper, whether it uses a metadata domain).
"""

from lungsound.methods.base import (OBJECTIVES, Batch, CrossEntropy, Objective, ObjectiveSpec, StepContext,
                                    class_weights_from_counts, create_objective, list_objectives, objective_spec,
                                    register_objective)

__all__ = ["OBJECTIVES", "Batch", "CrossEntropy", "Objective", "ObjectiveSpec", "StepContext",
           "class_weights_from_counts", "create_objective", "list_objectives", "objective_spec", "register_objective"]
