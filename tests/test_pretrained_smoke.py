"""End to end: train from an AudioSet-style AST checkpoint in the paper position-embedding layout.

The test writes an ``audioset_10_10_0.4593.pth``-like file (timm DeiT keys under ``module.v.``, a 12 x 101 position
grid, an ``mlp_head``) for a tiny AST, then runs `fit` with ``model.pretrained=<file>`` and ``model.pos_embed=paper``
for 2 steps. The weights the trainer starts from are compared with the file, tensor by tensor, before any step.
"""

from __future__ import annotations

import json

import pytest
import timm
import torch
from safetensors.torch import load_file

from lungsound.config import load_config
from lungsound.training import run as run_module
from lungsound.training.run import fit

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")

DIM = 64  # ast_tiny: 64-dim, 2 blocks, 2 heads, MLP ratio 4


def audioset_style_checkpoint(path):
    torch.manual_seed(7)
    deit = timm.create_model("deit_tiny_distilled_patch16_224", pretrained=False, img_size=(128, 1024), in_chans=1,
                             embed_dim=DIM, depth=2, num_heads=2, mlp_ratio=4, num_classes=5)
    state = {f"module.v.{k}": v.detach().clone() for k, v in deit.state_dict().items()}
    for v in state.values():
        v.add_(0.1 * torch.randn_like(v))  # nothing left at timm's init values (zeros, ones)
    state["module.v.pos_embed"] = torch.randn(1, 2 + 12 * 101, DIM)  # the AudioSet 12 x 101 grid, plus cls and dist
    state["module.mlp_head.0.weight"], state["module.mlp_head.0.bias"] = torch.ones(DIM), torch.zeros(DIM)
    state["module.mlp_head.1.weight"], state["module.mlp_head.1.bias"] = torch.randn(527, DIM), torch.zeros(527)
    torch.save(state, path)
    return state


def paper_grid(pos: torch.Tensor, t1: int) -> torch.Tensor:
    """12 x 101 grid -> our 12 x t1 tokens, paper layout, by hand: time columns 44..55 (the 12 centred ones), the 12
    frequency rows resized linearly to t1 rows (align_corners=False: row r reads max(0, (r + 0.5) * 12 / t1 - 0.5)),
    the (t1, 12) result flattened row-major."""
    grid = pos.double().reshape(12, 101, DIM)[:, 44:56]
    rows = []
    for r in range(t1):
        s = max(0.0, (r + 0.5) * 12 / t1 - 0.5)
        lo = min(int(s), 11)
        hi, w = min(lo + 1, 11), s - lo
        rows.append((1 - w) * grid[lo] + w * grid[hi])
    return torch.stack(rows).reshape(t1 * 12, DIM).float()


def test_fit_starts_from_an_audioset_pth_in_the_paper_layout(small_icbhi, tmp_path, monkeypatch):
    pth = tmp_path / "audioset_tiny.pth"
    src = audioset_style_checkpoint(pth)
    cfg = load_config(None, [f"data.root={small_icbhi}", "data.duration=2.0", "model.name=ast_tiny",
                             f"model.pretrained={pth}", "model.pos_embed=paper", "train.epochs=1",
                             "train.batch_size=4", "train.max_steps_per_epoch=2", "train.device=cpu",
                             f"tracking.output_dir={tmp_path}/out", "tracking.experiment=smoke"])
    started = {}

    class RecordingTrainer(run_module.Trainer):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            started.update({k: v.detach().clone() for k, v in self.model.backbone.state_dict().items()})

    monkeypatch.setattr(run_module, "Trainer", RecordingTrainer)
    result = fit(cfg, progress=False, track=False)
    assert result.finished and result.selected_epoch == 1

    # 2 s at 16 kHz: 1 + (32000 - 400) // 160 = 198 frames -> a 12 x ((198 - 16) // 10 + 1) = 12 x 19 patch grid.
    pos = started["embeddings.position_embeddings"]
    assert pos.shape == (1, 2 + 12 * 19, DIM)
    file_pos = src["module.v.pos_embed"][0]
    assert torch.equal(pos[0, :2], file_pos[:2])  # cls and dist positions
    torch.testing.assert_close(pos[0, 2:], paper_grid(file_pos[2:], 19), rtol=1e-5, atol=1e-5)
    # ... and not the clean layout (time columns 41..59 of each frequency row).
    clean = file_pos[2:].reshape(12, 101, DIM)[:, 41:60].reshape(12 * 19, DIM)
    assert not torch.allclose(pos[0, 2:], clean, atol=1e-3)

    # Every other tensor is the file's, the fused qkv split row-wise into q, k, v.
    for i in range(2):
        qkv_w, qkv_b = src[f"module.v.blocks.{i}.attn.qkv.weight"], src[f"module.v.blocks.{i}.attn.qkv.bias"]
        for j, name in enumerate(("q_proj", "k_proj", "v_proj")):
            assert torch.equal(started[f"layers.{i}.attention.{name}.weight"], qkv_w[j * DIM:(j + 1) * DIM])
            assert torch.equal(started[f"layers.{i}.attention.{name}.bias"], qkv_b[j * DIM:(j + 1) * DIM])
        for ours, theirs in (("attention.o_proj", "attn.proj"), ("layernorm_before", "norm1"),
                             ("layernorm_after", "norm2"), ("mlp.fc1", "mlp.fc1"), ("mlp.fc2", "mlp.fc2")):
            for kind in ("weight", "bias"):
                assert torch.equal(started[f"layers.{i}.{ours}.{kind}"], src[f"module.v.blocks.{i}.{theirs}.{kind}"])
    for ours, theirs in (("embeddings.cls_token", "cls_token"), ("embeddings.distillation_token", "dist_token"),
                         ("embeddings.patch_embeddings.projection.weight", "patch_embed.proj.weight"),
                         ("embeddings.patch_embeddings.projection.bias", "patch_embed.proj.bias"),
                         ("layernorm.weight", "norm.weight"), ("layernorm.bias", "norm.bias")):
        assert torch.equal(started[ours], src[f"module.v.{theirs}"]), ours
    assert len(started) == 5 + 2 * 16 + 2  # cls, dist, positions, patch conv (2); 16 per block; final norm (2)

    # The two steps trained from there: the selected model differs from the start, the config names the weights.
    saved = load_file(str(result.checkpoint / "model.safetensors"))
    q = "backbone.layers.0.attention.q_proj.weight"
    assert saved[q].shape == started["layers.0.attention.q_proj.weight"].shape
    assert not torch.equal(saved[q], started["layers.0.attention.q_proj.weight"])
    assert (saved[q] - started["layers.0.attention.q_proj.weight"]).abs().max() < 1e-3  # small steps, lr 5e-5
    meta = json.loads((result.checkpoint / "meta.json").read_text())
    assert meta["selected_epoch"] == 1
    text = (result.checkpoint / "config.yaml").read_text()
    assert f"pretrained: {pth}" in text and "pos_embed: paper" in text
