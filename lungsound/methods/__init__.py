"""Training objectives, one published method per module (see each module's docstring for the paper and equations)."""

from lungsound.methods.base import (Batch, CrossEntropy, Objective, StepContext, class_weights_from_counts,
                                    create_objective, list_objectives, register_objective)

__all__ = ["Batch", "CrossEntropy", "Objective", "StepContext", "class_weights_from_counts", "create_objective",
           "list_objectives", "register_objective"]
