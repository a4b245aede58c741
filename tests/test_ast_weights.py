"""AST weight routes and position-embedding adaptation (methods.md section 4), on tiny checkpoints made here."""

from __future__ import annotations

import os

os.environ["HF_HUB_OFFLINE"] = "1"

import numpy as np
import pytest
import timm
import torch
import transformers

from lungsound.errors import LungsoundError
from lungsound.models import adapt_pos_embed, create_model, load_ast_weights

DIM, DEPTH, HEADS = 32, 2, 2
TINY = dict(embed_dim=DIM, depth=DEPTH, num_heads=HEADS, mlp_ratio=2)


def coordinate_grid(rows: int, cols: int) -> torch.Tensor:
    """(rows*cols, 2) tokens, freq-major, whose channels are the token's own (f, t)."""
    f, t = torch.meshgrid(torch.arange(rows), torch.arange(cols), indexing="ij")
    return torch.stack([f, t], dim=-1).reshape(rows * cols, 2).float()


def bilinear_source(i: np.ndarray, src: int, dst: int) -> np.ndarray:
    """Source coordinate read by output index ``i`` when a linear ramp is resized src -> dst (align_corners=False)."""
    return np.clip((i + 0.5) * src / dst - 0.5, 0, src - 1)


def linear_resize_matrix(src: int, dst: int) -> torch.Tensor:
    """(dst, src) weights of 1-D linear resizing with align_corners=False, written from the formula: output i reads
    s = max(0, (i + 0.5) src / dst - 0.5), i.e. (1 - w) x[floor(s)] + w x[min(floor(s) + 1, src - 1)], w = s - floor(s).
    """
    weights = torch.zeros(dst, src, dtype=torch.float64)
    for i in range(dst):
        pos = max(0.0, (i + 0.5) * src / dst - 0.5)
        lo = min(int(np.floor(pos)), src - 1)
        hi, w = min(lo + 1, src - 1), pos - lo
        weights[i, lo] += 1 - w
        weights[i, hi] += w
    return weights


def paper_layout_expected(grid_tokens: torch.Tensor, src: tuple[int, int], dst: tuple[int, int]) -> torch.Tensor:
    """The reference code's layout by explicit ops: crop the time columns of the (F0, T0) grid to the centred F1
    columns [T0 // 2 - F1 // 2, +F1), resize the F0 rows linearly to T1 rows, flatten (T1, F1) row-major."""
    (f0, t0), (f1, t1) = src, dst
    grid = grid_tokens.double().reshape(f0, t0, -1)
    start = t0 // 2 - f1 // 2
    cropped = grid[:, start:start + f1]  # (F0, F1, D)
    rows = torch.einsum("rf,fcd->rcd", linear_resize_matrix(f0, t1), cropped)  # (T1, F1, D)
    return rows.reshape(t1 * f1, -1).float()


# ---------------------------------------------------------------- position embeddings


@pytest.mark.parametrize("frames_grid, offset", [((12, 79), 11), ((12, 49), 26)])
def test_clean_layout_crops_time_around_the_centre(frames_grid, offset):
    out = adapt_pos_embed(coordinate_grid(12, 101), (12, 101), frames_grid, "clean")
    rows, cols = frames_grid
    assert offset == (101 - cols) // 2
    got = out.reshape(rows, cols, 2)
    f, t = torch.meshgrid(torch.arange(rows), torch.arange(cols), indexing="ij")
    assert torch.equal(got[..., 0], f.float())  # token (f, t) reads source (f, t + offset)
    assert torch.equal(got[..., 1], (t + offset).float())


def test_paper_layout_reproduces_the_swapped_dims_quirk():
    out = adapt_pos_embed(coordinate_grid(12, 101), (12, 101), (12, 79), "paper")
    assert out.shape == (948, 2)
    # Hand-computed: token k reads row r = k // 12 of the 79 x 12 grid (interpolated from the 12 frequency rows),
    # column c = k % 12 of the cropped time columns 44..55.
    # k=0: r=0 -> (0.5*12/79 - 0.5) < 0 -> clamped to row 0; c=0 -> column 44.
    assert out[0].tolist() == pytest.approx([0.0, 44.0])
    # k=13: r=1 -> 1.5*12/79 - 0.5 = -0.2722 -> row 0; c=1 -> column 45.
    assert out[13].tolist() == pytest.approx([0.0, 45.0])
    # k=500: r=41 -> 41.5*12/79 - 0.5 = 5.80380; c=8 -> column 52.
    assert out[500].tolist() == pytest.approx([5.803797, 52.0], abs=1e-5)
    # k=947: r=78 -> 78.5*12/79 - 0.5 = 11.4241 -> clamped to row 11; c=11 -> column 55.
    assert out[947].tolist() == pytest.approx([11.0, 55.0])
    k = np.arange(948)
    np.testing.assert_allclose(out[:, 0].numpy(), bilinear_source(k // 12, 12, 79), atol=1e-5)
    np.testing.assert_allclose(out[:, 1].numpy(), 44 + k % 12, atol=1e-5)


def test_tiny_grid_by_hand_in_both_layouts():
    # Source 2 x 5 grid, value 10 f + t (channel 0) and its negative (channel 1):
    #   f=0:  0  1  2  3  4
    #   f=1: 10 11 12 13 14
    src = torch.tensor([[10.0 * f + t, -(10.0 * f + t)] for f in range(2) for t in range(5)])
    # clean, to 2 x 3: crop time columns from 5 // 2 - 3 // 2 = 1: columns 1..3 of each row.
    clean = adapt_pos_embed(src, (2, 5), (2, 3), "clean")
    assert clean[:, 0].tolist() == [1, 2, 3, 11, 12, 13] and clean[:, 1].tolist() == [-1, -2, -3, -11, -12, -13]
    # paper, to 2 x 3: the swapped grid is 3 x 2. Crop columns from 5 // 2 - 2 // 2 = 1: [[1, 2], [11, 12]]; resize the
    # 2 rows to 3 (source rows max(0, (r + 0.5) * 2/3 - 0.5) = 0, 0.5, 7/6 -> clamped to 1): [1, 2], [6, 7], [11, 12];
    # flattened row-major and given to the tokens of the freq-major 2 x 3 grid in that order.
    paper = adapt_pos_embed(src, (2, 5), (2, 3), "paper")
    assert paper[:, 0].tolist() == pytest.approx([1, 2, 6, 7, 11, 12])
    assert paper[:, 1].tolist() == pytest.approx([-1, -2, -6, -7, -11, -12])


def test_paper_layout_of_audioset_grid_by_explicit_ops():
    torch.manual_seed(3)
    src = torch.randn(12 * 101, 5)
    for dst in ((12, 79), (12, 49)):
        expected = paper_layout_expected(src, (12, 101), dst)
        torch.testing.assert_close(adapt_pos_embed(src, (12, 101), dst, "paper"), expected, rtol=1e-5, atol=1e-5)


def test_imagenet_grid_interpolates_time_and_crops_frequency():
    out = adapt_pos_embed(coordinate_grid(24, 24), (24, 24), (12, 79), "clean").reshape(12, 79, 2)
    np.testing.assert_array_equal(out[:, 0, 0].numpy(), np.arange(6, 18))  # rows 6..17 of 24
    np.testing.assert_allclose(out[0, :, 1].numpy(), bilinear_source(np.arange(79), 24, 79), atol=1e-5)


def test_equal_grids_are_copied_in_both_layouts_and_batches_are_kept():
    grid = torch.randn(1, 948, 8)
    for layout in ("clean", "paper"):
        assert torch.equal(adapt_pos_embed(grid, (12, 79), (12, 79), layout), grid)
    assert adapt_pos_embed(grid[0], (12, 79), (12, 49)).shape == (588, 8)


def test_bad_layout_and_bad_grid_raise():
    with pytest.raises(LungsoundError, match="'clean' or 'paper'"):
        adapt_pos_embed(torch.zeros(12, 2), (3, 4), (3, 4), "swapped")
    with pytest.raises(LungsoundError, match="12 position embeddings do not form a 3 x 5 grid"):
        adapt_pos_embed(torch.zeros(12, 2), (3, 5), (3, 4))


# ---------------------------------------------------------------- route (a): Hugging Face folder


def save_hf(tmp_path, name="hf", depth=DEPTH, dim=DIM, classifier=True, frames=1024):
    config = transformers.ASTConfig(hidden_size=dim, num_hidden_layers=depth, num_attention_heads=HEADS,
                                    intermediate_size=2 * dim, max_length=frames, num_labels=527)
    cls = transformers.ASTForAudioClassification if classifier else transformers.ASTModel
    torch.manual_seed(0)
    model = cls(config)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p))
    folder = tmp_path / name
    model.save_pretrained(folder)
    return folder


def test_hf_route_matches_transformers_own_loader_and_crops_pos(tmp_path):
    folder = save_hf(tmp_path)
    model = create_model("ast_tiny", **TINY)
    report = load_ast_weights(model, folder)
    assert report.route == "hf" and report.ok
    assert report.dropped == sorted(f"classifier.{m}.{p}" for m in ("dense", "layernorm") for p in ("bias", "weight"))
    assert report.notes == ["position embeddings 12x101 -> 12x79 (clean layout)"]
    reference = transformers.ASTModel.from_pretrained(folder).state_dict()  # transformers' own key conversion
    ours = model.backbone.state_dict()
    assert set(ours) == set(reference)
    for key, value in reference.items():
        if key != "embeddings.position_embeddings":
            assert torch.equal(ours[key], value), key
    src = reference["embeddings.position_embeddings"]
    pos = ours["embeddings.position_embeddings"]
    assert torch.equal(pos[:, :2], src[:, :2])
    assert torch.equal(pos[0, 2:].reshape(12, 79, DIM), src[0, 2:].reshape(12, 101, DIM)[:, 11:90])


def test_hf_route_through_create_model_with_paper_layout(tmp_path):
    folder = save_hf(tmp_path, classifier=False)
    model = create_model("ast_tiny", **TINY, weights=str(folder), pos_embed="paper")
    src = transformers.ASTModel.from_pretrained(folder).embeddings.position_embeddings.detach()
    pos = model.backbone.embeddings.position_embeddings.detach()
    assert torch.equal(pos[0, :2], src[0, :2])  # cls and dist positions copied
    # Token k = 79 i + j of our 12 x 79 grid holds row r = k // 12, column c = k % 12 of the 79 x 12 grid made from
    # time columns 44..55 of the 12 x 101 source, its 12 rows resized linearly to 79.
    torch.testing.assert_close(pos[0, 2:], paper_layout_expected(src[0, 2:], (12, 101), (12, 79)),
                               rtol=1e-5, atol=1e-5)
    k = 500  # r = 41: source row 41.5 * 12 / 79 - 0.5 = 5.803797, c = 8: source column 52
    grid = src[0, 2:].reshape(12, 101, DIM)
    w = 41.5 * 12 / 79 - 0.5 - 5
    torch.testing.assert_close(pos[0, 2 + k], (1 - w) * grid[5, 52] + w * grid[6, 52], rtol=1e-5, atol=1e-5)


def test_hf_route_missing_block_raises_with_keys_and_loads_with_strict_false(tmp_path):
    folder = save_hf(tmp_path, depth=1)
    model = create_model("ast_tiny", **TINY)
    with pytest.raises(LungsoundError) as err:
        load_ast_weights(model, folder)
    message = str(err.value)
    assert str(folder) in message and "missing keys" in message
    assert "layers.1.attention.q_proj.weight" in message and "layers.1.mlp.fc2.bias" in message
    with pytest.warns(UserWarning, match="missing keys: layers.1"):
        report = load_ast_weights(model, folder, strict=False)
    assert len(report.missing) == 16 and not report.unexpected
    reference = transformers.ASTModel.from_pretrained(folder).state_dict()
    assert torch.equal(model.backbone.state_dict()["layers.0.attention.q_proj.weight"],
                       reference["layers.0.attention.q_proj.weight"])


def test_hf_route_wrong_embed_dim_raises(tmp_path):
    folder = save_hf(tmp_path, dim=48)
    with pytest.raises(LungsoundError, match=r"shape-mismatched keys: .*embeddings.cls_token \(checkpoint \(1, 1, 48\), "
                                             r"model \(1, 1, 32\)\)"):
        load_ast_weights(create_model("ast_tiny", **TINY), folder)


def test_unknown_hub_id_fails_offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(LungsoundError, match="cannot fetch Hugging Face model 'no-such-org/no-such-ast'"):
        load_ast_weights(create_model("ast_tiny", **TINY), "no-such-org/no-such-ast")


# ---------------------------------------------------------------- routes (b) and (c): timm layout


def tiny_deit(in_chans=1, img_size=(128, 1024), dim=DIM, seed=0) -> torch.nn.Module:
    torch.manual_seed(seed)
    model = timm.create_model("deit_tiny_distilled_patch16_224", pretrained=False, img_size=img_size,
                              in_chans=in_chans, embed_dim=dim, depth=DEPTH, num_heads=HEADS, mlp_ratio=2,
                              num_classes=5)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return model.eval()


def audioset_style_pth(tmp_path, deit: torch.nn.Module, grid_tokens: int | None = None):
    """An ``audioset_10_10_0.4593.pth``-like file: keys under ``module.v.``, an ``mlp_head``, optional 12 x 101 grid."""
    state = {f"module.v.{k}": v.clone() for k, v in deit.state_dict().items()}
    if grid_tokens is not None:
        state["module.v.pos_embed"] = torch.randn(1, grid_tokens + 2, DIM)
    state["module.mlp_head.0.weight"], state["module.mlp_head.0.bias"] = torch.ones(DIM), torch.zeros(DIM)
    state["module.mlp_head.1.weight"], state["module.mlp_head.1.bias"] = torch.randn(527, DIM), torch.zeros(527)
    path = tmp_path / "audioset_tiny.pth"
    torch.save(state, path)
    return path, state


def test_ast_pth_route_splits_qkv_and_renames(tmp_path):
    path, state = audioset_style_pth(tmp_path, tiny_deit(), grid_tokens=12 * 101)
    model = create_model("ast_tiny", **TINY)
    report = load_ast_weights(model, path)
    assert report.route == "ast_timm" and report.ok
    assert report.dropped == sorted(k for k in state if k.startswith(("module.v.head", "module.mlp_head.")))
    assert len(report.dropped) == 8  # head, head_dist, mlp_head.0, mlp_head.1: weight and bias each
    ours = model.backbone.state_dict()
    for i in range(DEPTH):
        qkv_w, qkv_b = state[f"module.v.blocks.{i}.attn.qkv.weight"], state[f"module.v.blocks.{i}.attn.qkv.bias"]
        for j, name in enumerate(("q_proj", "k_proj", "v_proj")):
            assert torch.equal(ours[f"layers.{i}.attention.{name}.weight"], qkv_w[j * DIM:(j + 1) * DIM])
            assert torch.equal(ours[f"layers.{i}.attention.{name}.bias"], qkv_b[j * DIM:(j + 1) * DIM])
        assert torch.equal(ours[f"layers.{i}.attention.o_proj.weight"], state[f"module.v.blocks.{i}.attn.proj.weight"])
        assert torch.equal(ours[f"layers.{i}.layernorm_before.bias"], state[f"module.v.blocks.{i}.norm1.bias"])
        assert torch.equal(ours[f"layers.{i}.layernorm_after.weight"], state[f"module.v.blocks.{i}.norm2.weight"])
        assert torch.equal(ours[f"layers.{i}.mlp.fc1.weight"], state[f"module.v.blocks.{i}.mlp.fc1.weight"])
        assert torch.equal(ours[f"layers.{i}.mlp.fc2.bias"], state[f"module.v.blocks.{i}.mlp.fc2.bias"])
    assert torch.equal(ours["embeddings.distillation_token"], state["module.v.dist_token"])
    assert torch.equal(ours["embeddings.patch_embeddings.projection.weight"], state["module.v.patch_embed.proj.weight"])
    assert torch.equal(ours["layernorm.weight"], state["module.v.norm.weight"])
    src = state["module.v.pos_embed"]
    assert torch.equal(ours["embeddings.position_embeddings"][0, 2:].reshape(12, 79, DIM),
                       src[0, 2:].reshape(12, 101, DIM)[:, 11:90])


@pytest.mark.parametrize("in_chans", [1, 3])
def test_timm_routes_reproduce_the_timm_forward(tmp_path, in_chans):
    """Same geometry (stride 16, 8 x 10 grid): our converted AST must compute timm's pooled feature."""
    deit = tiny_deit(in_chans=in_chans, img_size=(128, 160))
    model = create_model("ast_tiny", **TINY, input_frames=160, fstride=16, tstride=16).eval()
    if in_chans == 1:
        report = load_ast_weights(model, audioset_style_pth(tmp_path, deit)[0])  # route (b)
    else:
        report = load_ast_weights(model, deit)  # route (c), from the nn.Module
        assert report.notes == ["patch projection 3 -> 1 input channel (sum)"]
    assert report.ok and report.route == ("ast_timm" if in_chans == 1 else "deit")
    x = torch.randn(2, 160, 128)
    image = x.transpose(1, 2).unsqueeze(1).expand(-1, in_chans, -1, -1)  # (B, C, freq, time)
    with torch.no_grad():
        tokens = deit.forward_features(image)
        ours = model.forward_features(x)
    torch.testing.assert_close(ours, (tokens[:, 0] + tokens[:, 1]) / 2, atol=2e-5, rtol=1e-4)


def test_deit_file_route_mean_reduction_and_square_grid(tmp_path):
    deit = tiny_deit(in_chans=3, img_size=64)  # ImageNet-like square 4 x 4 grid
    path = tmp_path / "deit.pth"
    torch.save(deit.state_dict(), path)
    model = create_model("ast_tiny", **TINY)
    report = load_ast_weights(model, path, patch_reduce="mean")
    assert report.route == "deit" and report.ok
    assert report.notes == ["position embeddings 4x4 -> 12x79 (clean layout)", "patch projection 3 -> 1 input channel (mean)"]
    ours = model.backbone.state_dict()
    src_w = deit.state_dict()["patch_embed.proj.weight"]
    torch.testing.assert_close(ours["embeddings.patch_embeddings.projection.weight"][:, 0], src_w.mean(dim=1))
    # clean layout from a 4 x 4 grid: both axes grow, so both are resized linearly (time 4 -> 79, frequency 4 -> 12).
    src_pos = deit.state_dict()["pos_embed"][0, 2:].double().reshape(4, 4, DIM)
    expected = torch.einsum("fa,atd,ut->fud", linear_resize_matrix(4, 12), src_pos, linear_resize_matrix(4, 79))
    torch.testing.assert_close(ours["embeddings.position_embeddings"][0, 2:], expected.reshape(12 * 79, DIM).float(),
                               rtol=1e-5, atol=1e-5)


def test_timm_route_mismatch_lists_keys(tmp_path):
    deit = tiny_deit()
    state = {k: v for k, v in deit.state_dict().items() if not k.startswith("blocks.1.")}
    state["blocks.0.ls1.gamma"] = torch.ones(DIM)
    path = tmp_path / "broken.pth"
    torch.save(state, path)
    with pytest.raises(LungsoundError) as err:
        load_ast_weights(create_model("ast_tiny", **TINY), path, src_grid=(8, 64))
    message = str(err.value)
    assert str(path) in message and "layers.1.attention.k_proj.bias" in message
    assert "unexpected keys: blocks.0.ls1.gamma" in message


def test_bad_sources_raise(tmp_path, monkeypatch):
    model = create_model("ast_tiny", **TINY)
    with pytest.raises(LungsoundError, match="no such weights file or folder"):
        load_ast_weights(model, tmp_path / "nope.pth")
    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(b"not a checkpoint")
    with pytest.raises(LungsoundError, match="garbage.pth: cannot read weights"):
        load_ast_weights(model, garbage)
    foreign = tmp_path / "foreign.pth"
    torch.save({"encoder.weight": torch.zeros(2)}, foreign)
    with pytest.raises(LungsoundError, match="unrecognised weight layout"):
        load_ast_weights(model, foreign)
    with pytest.raises(LungsoundError, match="folder has no model.safetensors"):
        load_ast_weights(model, tmp_path)
    odd = tmp_path / "odd.pth"
    torch.save({"module.v.pos_embed": torch.zeros(1, 2 + 7 * 11, DIM)}, odd)
    with pytest.raises(LungsoundError, match=r"odd.pth: cannot tell the patch grid of 77 position embeddings"):
        load_ast_weights(model, odd)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(LungsoundError, match="cannot create pretrained timm model 'deit_tiny_distilled_patch16_224'"):
        load_ast_weights(model, "timm:deit_tiny_distilled_patch16_224")
