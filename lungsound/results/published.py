"""The published ICBHI numbers the benchmarks are compared with (docs/methods.md sections 7 to 10 and 14), in one table.

Official 60/40 split, 4-class, mean over seeds, best-test-epoch selection (the papers' protocol). Keys are the experiment
names in `experiments/`; `std` is the published std of the Score where the paper gives one; `note` says when the
published number was measured under another recipe than the experiment file's, so the two are not like for like
(`lungsound compare --published` lists it under the table wherever that row is shown); `released` what the authors'
released checkpoint scores, where it differs from the paper's mean.
"""

from __future__ import annotations

PUBLISHED: dict[str, dict[str, float | str]] = {
    "icbhi_ast_ce": {"sp": 77.14, "se": 41.97, "score": 59.55, "std": 0.88, "source": "[PMCL] AST fine-tuning"},
    "icbhi_patchmix_cl": {"sp": 81.66, "se": 43.07, "score": 62.37, "std": 0.61, "source": "[PMCL] Patch-Mix CL"},
    "icbhi_dat_device": {"sp": 77.11, "se": 42.50, "score": 59.81, "source": "[SGSCL] DAT"},
    "icbhi_sgscl": {"sp": 79.87, "se": 43.55, "score": 61.71, "std": 1.61, "source": "[SGSCL] SG-SCL"},
    "icbhi_ast_repaugment": {"sp": 82.47, "se": 40.55, "score": 61.51, "source": "[REPAUG] AST + RepAugment"},
    "icbhi_aft_mixed500": {"sp": 80.72, "se": 42.86, "score": 61.79, "source": "[AFT] AFT on Mixed-500"},
    "icbhi_aft_ce_real": {"sp": 77.14, "se": 41.97, "score": 59.55, "source": "[AFT] baseline (the [PMCL] AST number)",
                          "note": "not like for like: it is the [PMCL] AST baseline on 8-s cycles (batch 8, "
                                  "class-weighted CE) that [AFT] quotes, while this row trains the [AFT] recipe on "
                                  "5-s cycles with batch 32; no 5-s baseline number is published"},
    # [BTS] (docs/methods.md section 13): the paper gives the Score of 5 seeds; its Sp and Se are not restated here.
    "icbhi_bts": {"score": 63.54, "source": "[BTS] CLAP with the metadata sentence",
                  "released": "the authors' released checkpoint: Sp 82.58 / Se 45.11 / Score 63.85 (one run)"},
}

# Two-class evaluation (normal vs abnormal, Sp unchanged) where the papers report it. A row here and not in PUBLISHED
# has only a two-class figure: `compare --published` shows it beside the runs' two-class Se and Score, in the two-class
# table, never beside the 4-class Score (`source` and `note` say whose it is and what it is).
PUBLISHED_TWO_CLASS: dict[str, dict[str, float | str]] = {
    "icbhi_patchmix_cl": {"sp": 81.66, "se": 55.77, "score": 68.71},
    "icbhi_sgscl": {"sp": 79.87, "se": 57.97, "score": 68.93},
    "icbhi_ast_sam": {"sp": 67.89, "se": 68.31, "score": 68.10, "source": "[SAM] AST + SAM",
                      "note": "the authors call it a Score, but their Se counts an abnormal cycle predicted as any "
                              "abnormal class as correct (the two-class Se), and it is the best test epoch of one run, "
                              "not a mean over seeds"},
}


def published_for(experiment_name: str) -> dict | None:
    """The published row for an experiment file name; `*_clean` variants map to their paper row."""
    base = experiment_name.removesuffix("_clean")
    return PUBLISHED.get(base)


def two_class_published_for(experiment_name: str) -> dict | None:
    """The published two-class row for an experiment file name (`*_clean` variants map to their paper row)."""
    return PUBLISHED_TWO_CLASS.get(experiment_name.removesuffix("_clean"))


# Rows this toolkit adds that no paper reports (tables mark them; there is no published number to compare with).
# The per-backbone speech-model numbers of [REPAUG] are not public, so those rows have no published number either.
EXTENSIONS: dict[str, str] = {
    "icbhi_repaug_wavlm": "WavLM base+ is in no table of [REPAUG] and not in the authors' code (docs/methods.md section 9)",
}


def extension_for(experiment_name: str) -> str | None:
    """Why a row is an extension of ours (not a paper row), or None; `*_clean` variants map to their paper file."""
    return EXTENSIONS.get(experiment_name.removesuffix("_clean"))
