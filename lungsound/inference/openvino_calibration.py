"""The cycles an OpenVINO export is calibrated and checked on: a seeded draw from the model's own training data.

NNCF's post-training quantisation (Nagel et al. 2021, "A White Paper on Neural Network Quantization", section 3)
sets each activation's static int8 scale from the range it takes on calibration inputs, so those inputs must look
like what the model will see: the annotated cycles of the data the checkpoint records (`cfg.data.root`, in its own
format), or `--calibration DIR` (an ICBHI-format folder) or `--calibration builtin` (the built-in synthetic set),
cut, padded and featurised exactly as the predictor does (`lungsound.inference.onnx_export.as_model_inputs`).

`draw_cycles` draws `n_calibration + n_check` distinct cycles at random (numpy's default generator, `seed`) from all
the annotated cycles of the folder's recordings; the first `n_calibration` calibrate, the others are held out for the
export's self-check (so the check never scores a cycle the scales were fitted on). A folder with fewer cycles than
asked gives what it has, a quarter of it (at least one cycle) held out for the check.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from lungsound.data.cycles import load_cycles
from lungsound.errors import LungsoundError
from lungsound.inference.onnx_export import as_model_inputs, cycle_config, cycle_recordings

CALIBRATION_CYCLES = 300
SEED = 0


@dataclass
class Draw:
    calibration: torch.Tensor  # (n_calibration, ...) model inputs
    check: torch.Tensor  # (n_check, ...) held-out model inputs
    root: Path
    recordings: int  # how many recordings the drawn cycles come from

    @property
    def described(self) -> str:
        cycles = (f"{len(self.calibration)} calibration + {len(self.check)} held-out check cycles"
                  if len(self.calibration) else f"{len(self.check)} check cycles")
        return f"{cycles} drawn from {self.recordings} recordings in {self.root}"


def draw_cycles(cfg, data: str | Path | None, n_calibration: int, n_check: int, seed: int = SEED) -> Draw:
    """The seeded draw of the module docstring; `n_calibration` 0 draws check cycles only."""
    if n_calibration < 0 or n_check < 1:
        raise LungsoundError(f"the export needs at least one check cycle and no negative number of calibration "
                             f"cycles, got {n_check} and {n_calibration}")
    root, recordings = cycle_recordings(cfg, data)
    pairs = [(r, c) for r, rec in enumerate(recordings) for c in range(len(rec.cycles))]
    total = min(len(pairs), n_calibration + n_check)
    held = n_check if total == n_calibration + n_check else max(1, total // 4) if n_calibration else total
    if n_calibration and total - held < 1:
        raise LungsoundError(f"only {len(pairs)} annotated cycle(s): too few to calibrate and check an int8 model",
                             root)
    order = np.random.default_rng(seed).permutation(len(pairs))[:total]
    wanted: dict[int, list[int]] = {}
    for k in order:
        r, c = pairs[k]
        wanted.setdefault(r, []).append(c)
    cycle_cfg, waves = cycle_config(cfg), {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # cycles running past the audio's end are cut, as in training
        for r, cycles in wanted.items():
            rec = recordings[r]
            for c, wave in zip(cycles, load_cycles(rec.audio, [rec.cycles[c] for c in cycles], cycle_cfg)):
                waves[(r, c)] = wave
    inputs = as_model_inputs(cfg, np.stack([waves[pairs[k]] for k in order]))
    return Draw(inputs[:total - held], inputs[total - held:], root, len(wanted))
