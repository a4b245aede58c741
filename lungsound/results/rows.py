"""The rows of the comparison table: which figures each run contributes (`METRICS`), how a row is named (`row_name`)
and how its seeds are ordered (`seed_order`).

`lungsound.results.compare` builds the table from these; `lungsound.results.paired` reads two of its rows seed by
seed; both import this module, and neither the other's internals.
"""

from __future__ import annotations

from lungsound.data.labels import CLASSES

METRICS = ["sp", "se", "score"] + [f"acc_{c}" for c in CLASSES]  # each run's final test figures, a column each
# The two-class evaluation's Se and Score (Sp is the 4-class Sp): the two-class table of `compare --published` only.
TWO_CLASS_METRICS = ["se_2class", "score_2class"]


def seed_order(seed: str) -> tuple:
    """Sort key for seed tags: numbers in numeric order, then anything else."""
    return (0, int(seed), "") if str(seed).isdigit() else (1, 0, str(seed))


def row_name(row: dict) -> str:
    """A row's experiment as the table shows it: the experiment file, then `[variant]` when it has siblings."""
    return row["experiment"] + (f" [{row['variant']}]" if row.get("variant") else "")
