"""Run by tests/test_distributed.py under torchrun: train a tiny AST and save rank 0's final weights."""

import sys

import torch

from lungsound.config import load_config
from lungsound.training import distributed as dist_utils
from lungsound.training.run import fit

out, *overrides = sys.argv[1:]
torch.set_num_threads(1)
cfg = load_config(None, overrides)
result = fit(cfg, progress=False, track=False)
if dist_utils.rank() == 0:
    from lungsound.models.folder import load_model

    model, _, _ = load_model(result.checkpoint)
    torch.save({"world_size": dist_utils.world_size(), "state": model.state_dict(), "history": result.history}, out)
dist_utils.shutdown()
