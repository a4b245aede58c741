"""The representation augmentation's words ([REPAUG], methods.md section 9), written once, without torch.

`lungsound.config` checks `augment.representation`, `augment.rep_fill` and `augment.rep_minority` when an experiment
file is read, and model cards name the mode in words; both read these tables, as does
`lungsound.methods.repaugment`, which implements them. They live in this module rather than in `repaugment.py`
because that module imports torch (2.7 s on a cold start, against 0.04 s for `lungsound.config`), which reading an
experiment file must not need; `lungsound.methods` defers its torch-backed names to first use for the same reason.
"""

from __future__ import annotations

# augment.representation -> the words a model card uses for it; RepAugment is Rep-Mask, then Rep-Gen.
REPRESENTATIONS: dict[str, str] = {
    "none": "no representation augmentation",
    "rep_mask": "Rep-Mask",
    "rep_gen": "Rep-Gen",
    "repaugment": "RepAugment",
}
MASKING = ("rep_mask", "repaugment")  # the modes that run Rep-Mask
GENERATING = ("rep_gen", "repaugment")  # the modes that run Rep-Gen
FILLS = ("code", "paper", "zero")  # augment.rep_fill: z * batch mean (the authors' code) | batch mean (paper) | 0
MINORITIES = ("abnormal", "all")  # augment.rep_minority: the rows Rep-Gen adds noise to
