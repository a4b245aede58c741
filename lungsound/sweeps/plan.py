"""The plan of a sweep: experiment files x augmentation cells x class weightings x grid axes, as cells, each one
multi-seed group of runs.

`plan` expands `--grid section.key=v1,v2` axes (their cartesian product) over one or more experiment files, and, when
asked, over the augmentation cells of the RepAugment ablation (`AUGMENTATIONS`, `lungsound grid --cells`) and the
class weightings (`WEIGHTINGS`, `lungsound grid --weighting`), and loads and validates every cell's config before
anything runs. A `Cell` is what one multi-seed group trains: its parent run's name, its config, and how the config was
made (the experiment file and the overrides: `load_config(cell.experiment, cell.overrides)` is `cell.cfg`).

Names: a cell's run name is its base name and its multi-valued grid settings
(`quickstart-train.lr=0.001-data.duration=2.0`); the base is the experiment's run name (or file name), or for an
augmentation cell `<experiment file>-<cell>` with `-weighted` when its CE is class-weighted (`cell_name`), so a
`--grid method.class_weighted=false,true` axis names its cells as `--weighting unweighted,weighted` does.
"""

from __future__ import annotations

import itertools
import re
from dataclasses import dataclass, field
from pathlib import Path

from lungsound.config import ExperimentConfig, load_config
from lungsound.errors import LungsoundError

# The RepAugment ablation's cells [REPAUG] (docs/methods.md section 9): each cell's `augment.*` overrides.
AUGMENTATIONS: dict[str, list[str]] = {
    "none": ["augment.specaug=false", "augment.representation=none"],
    "specaugment": ["augment.specaug=true", "augment.representation=none"],
    "rep_mask": ["augment.specaug=false", "augment.representation=rep_mask"],
    "rep_gen": ["augment.specaug=false", "augment.representation=rep_gen"],
    "repaugment": ["augment.specaug=false", "augment.representation=repaugment"],
}
WEIGHTINGS: dict[str, str] = {"unweighted": "method.class_weighted=false", "weighted": "method.class_weighted=true"}
WEIGHTING_KEY = "method.class_weighted"


@dataclass
class Cell:
    name: str  # the parent run's name: the experiment's (or augmentation cell's) name and the multi-valued settings
    cfg: ExperimentConfig  # the cell's config; each seed's child is `training.seeds.child_config(cfg, seed)`
    values: dict[str, str] = field(default_factory=dict)  # this cell's grid values
    experiment: Path | None = None  # the experiment file
    overrides: list[str] = field(default_factory=list)  # what makes `cfg` of the file, the run name included
    augmentation: str | None = None  # the augmentation cell (AUGMENTATIONS), if any


def cell_name(experiment: str | Path, augmentation: str, weighted: bool) -> str:
    """An augmentation cell's group name: `<experiment file stem>-<cell>`, with `-weighted` for class-weighted CE."""
    return f"{Path(experiment).stem}-{augmentation}{'-weighted' if weighted else ''}"


def split_values(text: str) -> list[str]:
    """'1e-3,5e-4' -> ['1e-3', '5e-4']; commas inside [] or {} belong to the value ('{a: 1, b: 2},{a: 3}')."""
    parts, depth, current = [], 0, ""
    for ch in text:
        depth += (ch in "[{(") - (ch in "]})")
        if ch == "," and depth == 0:
            parts.append(current.strip())
            current = ""
        else:
            current += ch
    return parts + [current.strip()]


def parse_grid(items: list[str] | tuple[str, ...]) -> list[tuple[str, list[str]]]:
    """`['train.lr=1e-3,5e-4', 'data.duration=2,4']` -> the grid's axes, in order, each key once."""
    axes: list[tuple[str, list[str]]] = []
    for text in items:
        key, sep, raw = text.partition("=")
        key = key.strip()
        if not sep or not key:
            raise LungsoundError(f"--grid {text!r} must look like section.key=value1,value2")
        if key == "train.seed":
            raise LungsoundError("--grid train.seed: give seeds with --seeds (e.g. --seeds 1-5)")
        if key == "tracking.run_name":
            raise LungsoundError("--grid tracking.run_name: a sweep names its cells after their grid values")
        if any(key == k for k, _ in axes):
            raise LungsoundError(f"--grid {key} is given twice; list all its values once: {key}=v1,v2")
        values = split_values(raw)
        if any(not v for v in values):
            raise LungsoundError(f"--grid {text!r} has an empty value")
        if len(set(values)) < len(values):
            raise LungsoundError(f"--grid {text!r} repeats a value")
        axes.append((key, values))
    return axes


def _label(value: str) -> str:
    return re.sub(r"[^\w.+-]+", "_", value).strip("_") or "_"


def _bases(experiments: list[Path], overrides: list[str], augmentations: list[str] | None,
           weightings: list[str] | None) -> list[tuple[Path, str | None, list[str]]]:
    """(file, augmentation cell, overrides) for each file x weighting x augmentation cell, in that order; SpecAugment
    is left out for waveform models (it masks spectrograms)."""
    if augmentations is not None:
        unknown = [a for a in augmentations if a not in AUGMENTATIONS]
        if unknown:
            raise LungsoundError(f"unknown grid cell(s) {', '.join(unknown)}; known: {', '.join(AUGMENTATIONS)}")
    bad = [w for w in weightings or () if w not in WEIGHTINGS]
    if bad:
        raise LungsoundError(f"unknown weighting(s) {', '.join(bad)}; known: {', '.join(WEIGHTINGS)}")
    bases = []
    for path in experiments:
        for weighting in weightings or [None]:
            base = [*overrides, *([WEIGHTINGS[weighting]] if weighting else [])]
            if augmentations is None:
                bases.append((path, None, base))
                continue
            waveform = load_config(path, base).data.input == "waveform"
            bases += [(path, aug, [*AUGMENTATIONS[aug], *base]) for aug in augmentations or AUGMENTATIONS
                      if not (aug == "specaugment" and waveform)]
    return bases


def plan(experiments: list[str | Path], grid: list[str] | tuple[str, ...] = (),
         overrides: list[str] | tuple[str, ...] = (), augmentations: list[str] | None = None,
         weightings: list[str] | None = None) -> list[Cell]:
    """The cells: every experiment file x (`weightings` from WEIGHTINGS; None = the file's own method.class_weighted)
    x (when `augmentations` is not None: those cells of AUGMENTATIONS, [] = all) x the cartesian product of the
    grid's axes, each config loaded and validated now."""
    if not experiments:
        raise LungsoundError("lungsound sweep needs at least one -c EXPERIMENT file")
    axes = parse_grid(grid)
    named = [key for key, values in axes if len(values) > 1
             and not (augmentations is not None and key == WEIGHTING_KEY)]  # the cell name says -weighted
    cells: list[Cell] = []
    for path, augmentation, base_overrides in _bases([Path(p) for p in experiments], list(overrides), augmentations,
                                                     weightings):
        for combo in itertools.product(*(values for _, values in axes)):
            values = dict(zip((key for key, _ in axes), combo))
            assign = [f"{k}={v}" for k, v in values.items()]
            try:
                cfg = load_config(path, [*base_overrides, *assign])
            except LungsoundError as exc:
                if not assign:
                    raise
                raise LungsoundError(f"grid cell {' '.join(assign)}: {exc.problem}", exc.path) from None
            if augmentation is not None:
                base = cell_name(path, augmentation, cfg.method.class_weighted)
            else:
                base = cfg.tracking.run_name or cfg.name
            suffix = "-".join(f"{k}={_label(values[k])}" for k in named)
            cfg.tracking.run_name = f"{base}-{suffix}" if suffix else base
            cells.append(Cell(cfg.tracking.run_name, cfg, values, path,
                              [*base_overrides, *assign, f"tracking.run_name={cfg.tracking.run_name}"], augmentation))
    seen: set[tuple[str, str]] = set()
    for cell in cells:
        key = (cell.cfg.tracking.experiment, cell.name)
        if key in seen:
            raise LungsoundError(f"two cells of the sweep are both named {cell.name!r} in MLflow experiment {key[0]!r}; "
                                 "give each experiment file once (file names must differ)")
        seen.add(key)
    return cells
