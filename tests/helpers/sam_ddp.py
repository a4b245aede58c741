"""Run by tests/test_sam.py, alone or under torchrun: one SAM step of a small linear model on this process's share of a
fixed batch of 8; rank 0 saves the weights after it."""

import sys

import torch
import torch.nn.functional as F

from lungsound.training import distributed as dist_utils
from lungsound.training.sam import SAM, sam_update

out, base, adaptive = sys.argv[1], sys.argv[2], sys.argv[3] == "adaptive"
torch.set_num_threads(1)
dist_utils.init_from_env()
rank, size = dist_utils.rank(), dist_utils.world_size()
torch.manual_seed(0)
model = torch.nn.Linear(3, 4)
x, y = torch.randn(8, 3), torch.tensor([0, 1, 2, 3, 0, 1, 2, 3])
x, y = x[rank::size], y[rank::size]  # this process's disjoint share, equal in size
optimizer = {"sgd": torch.optim.SGD, "adamw": torch.optim.AdamW}[base](model.parameters(), lr=0.1)
sam = SAM(optimizer, rho=0.5, adaptive=adaptive)
sam_update(sam, lambda chunk: (F.cross_entropy(model(chunk[0]), chunk[1]), {}), [(x, y)],
           sync=lambda: dist_utils.average_gradients(sam))
if rank == 0:
    torch.save({"world_size": size, "state": model.state_dict()}, out)
dist_utils.shutdown()
