"""torchrun data parallelism on CPU (gloo, 2 processes) equals one process with the doubled batch."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

HELPER = Path(__file__).parent / "helpers" / "ddp_train.py"


def _run(cmd: list[str], env: dict) -> None:
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]


def test_two_process_gloo_matches_single_process(small_icbhi, tmp_path):
    # No SpecAugment and no class weights: the per-rank loss means then average to the big-batch mean exactly.
    common = [f"data.root={small_icbhi}", "data.duration=2.0", "model.name=ast_tiny", "train.epochs=1",
              "augment.specaug=false", "train.ma_beta=0.5", "train.eval_batch_size=64"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    env.pop("WORLD_SIZE", None)
    _run([sys.executable, str(HELPER), str(tmp_path / "single.pt"), *common, "train.batch_size=4",
          f"tracking.output_dir={tmp_path}/single"], env)
    _run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", str(HELPER),
          str(tmp_path / "ddp.pt"), *common, "train.batch_size=2", f"tracking.output_dir={tmp_path}/ddp"], env)
    single, ddp = torch.load(tmp_path / "single.pt"), torch.load(tmp_path / "ddp.pt")
    assert single["world_size"] == 1 and ddp["world_size"] == 2
    assert single["state"].keys() == ddp["state"].keys()
    for key, value in single["state"].items():
        torch.testing.assert_close(ddp["state"][key], value, rtol=1e-4, atol=1e-5, msg=key)
    first = single["history"][0]
    assert ddp["history"][0]["test_score"] == pytest.approx(first["test_score"])
