"""The range rules of experiment configs: what each field's value must be (`lungsound.config.validate` runs them).

A rule takes a field's value and returns what the value must be when it is out of range, None when it is fine. NaN
and infinity are refused in every float field before these run (`lungsound.config._check_numbers`), so the float
rules may compare freely. Names that become folder or MLflow experiment names are names, not paths.
"""

from __future__ import annotations

import re
from typing import Any, Callable

from lungsound.data.formats import FORMATS

MAX_DESCRIPTION = 10_000  # characters of an experiment's description
DEVICE_PATTERN = re.compile(r"auto|cpu|cuda|cuda:\d+|mps")

Rule = Callable[[Any], "str | None"]


def _at_least(low: int, optional: bool = False) -> Rule:
    def rule(value):
        if optional and value is None:
            return None
        return None if value >= low else f"must be {'null or ' if optional else ''}an integer >= {low}"
    return rule


def _in_range(low: float, high: float, low_open: bool = False, high_open: bool = False, optional: bool = False) -> Rule:
    text = f"{'(' if low_open else '['}{low:g}, {high:g}{')' if high_open else ']'}"

    def rule(value):
        if optional and value is None:
            return None
        above = value > low if low_open else value >= low
        below = value < high if high_open else value <= high
        return None if above and below else f"must be {'null or ' if optional else ''}in {text}"
    return rule


def _positive(value) -> str | None:
    return None if value > 0 else "must be > 0"


def _non_negative(value) -> str | None:
    return None if value >= 0 else "must be >= 0"


def _non_empty(value) -> str | None:
    return None if value.strip() else "must not be empty"


def _device(value) -> str | None:
    return None if DEVICE_PATTERN.fullmatch(value) else "must be auto, cpu, cuda, cuda:N or mps"


def _format(value) -> str | None:
    return None if value in FORMATS else f"must be one of {', '.join(FORMATS.names())}"


def _at_most_chars(limit: int) -> Rule:
    def rule(value):
        if len(value) <= limit:
            return None
        return f"must be at most {limit:,} characters (it is copied into config.yaml, last.pt and MLflow)"
    return rule


# Names that become folder names (outputs/<experiment>/<run name>-<id>, the MLflow artifact root artifacts/<experiment>)
# are names, not paths: letters, digits, spaces and -_.+=@,() (grid and sweep run names are made of these), no '/' or
# '\\', not starting with '.' or a space (so never '.' or '..'), and short enough for a folder name (a run's folder
# adds 13 characters to its run name; 255 bytes is the usual limit).
NAME_PATTERN = re.compile(r"[\w+=@,()-][\w .+=@,()-]*")


def _name(max_bytes: int, optional: bool = False) -> Rule:
    def rule(value):
        if optional and value is None:
            return None
        if NAME_PATTERN.fullmatch(value) and value == value.rstrip() and len(value.encode()) <= max_bytes:
            return None
        return (f"must be {'null or ' if optional else ''}a name, not a path (letters, digits, spaces and -_.+=@,() "
                f"only, not starting with '.' or a space, at most {max_bytes} bytes)")
    return rule


def _string_keys(value) -> str | None:
    bad = [k for k in value if not isinstance(k, str)]
    return None if not bad else f"must have string keys (got key {bad[0]!r})"


RULES: dict[str, Rule] = {
    "name": _name(100),
    "description": _at_most_chars(MAX_DESCRIPTION),
    "data.format": _format,
    "data.duration": _positive,
    "data.val_fraction": _in_range(0, 1, low_open=True, high_open=True),
    "data.val_seed": _at_least(0),
    "data.loader_workers": _at_least(0),
    "data.balance_per_class": _at_least(1, optional=True),
    "augment.rep_max_width": _at_least(1),
    "augment.rep_max_width_ratio": _in_range(0, 1, low_open=True, optional=True),
    "augment.rep_blocks": _at_least(1),
    "augment.rep_std": _non_negative,
    "augment.wave_gain": _in_range(0, 1, high_open=True),
    "augment.wave_gain_p": _in_range(0, 1),
    "augment.wave_noise": _non_negative,
    "augment.wave_noise_p": _in_range(0, 1),
    "model.params": _string_keys,
    "method.params": _string_keys,
    "train.epochs": _at_least(1),
    "train.batch_size": _at_least(1),
    "train.eval_batch_size": _at_least(1),
    "train.lr": _positive,
    "train.weight_decay": _non_negative,
    "train.eta_min_ratio": _in_range(0, 1),
    "train.sam_rho": _positive,
    "train.momentum": _in_range(0, 1, high_open=True),
    "train.grad_accum": _at_least(1),
    "train.warmup_epochs": _at_least(1),
    "train.rampdown_epochs": _at_least(1),
    "train.ma_beta": _in_range(0, 1, high_open=True, optional=True),
    "train.seed": _at_least(0),
    "train.device": _device,
    "train.max_steps_per_epoch": _at_least(1, optional=True),
    "train.threads": _at_least(1, optional=True),
    "tracking.experiment": _name(100),
    "tracking.run_name": _name(242, optional=True),
    "tracking.output_dir": _non_empty,
}
