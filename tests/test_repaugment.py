"""RepAugment of [REPAUG] (methods.md section 9): Rep-Mask, Rep-Gen and the module combining them."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from lungsound.config import load_config
from lungsound.errors import LungsoundError
from lungsound.methods.repaugment import RepAugment, mask_positions, rep_gen, rep_mask

Z = torch.tensor([[1.0, 2.0, 3.0, 4.0], [5.0, 6.0, 7.0, 8.0]])  # mean 4.5


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def exact_mask_fraction(dim: int, max_width: int, blocks: int = 2) -> float:
    """E[fraction of dims masked] given that the mask is applied, by exact enumeration.

    One block: width w in {0..F-1} with probability 1/F, start s in {0..D-w} with probability 1/(D-w+1); dim d is covered
    by (D-w+1)^-1 * #{s : s <= d < s + w}. Blocks are independent, so P(d masked) = 1 - (1 - p_d)^blocks.
    """
    d = np.arange(dim)
    p = np.zeros(dim)
    for w in range(max_width):
        starts = np.clip(np.minimum(d, dim - w) - np.maximum(0, d - w + 1) + 1, 0, None)
        p += starts / (dim - w + 1) / max_width
    return float(np.mean(1 - (1 - p) ** blocks))


def masked_fractions(draws: int, gate: bool, seed: int) -> np.ndarray:
    g, ones = gen(seed), torch.ones(1, 768)
    return np.array([(rep_mask(ones, fill="zero", gate=gate, generator=g) == 0).float().mean().item()
                     for _ in range(draws)])


def test_gate_rate_and_masked_fraction_match_the_official_policy():
    # F = 288 (the absolute default). Given the mask is applied: E[fraction] = 0.3331 (enumeration below; two blocks of mean
    # width 143.5 would give 0.3737 without overlap). The gate fires with P(N(0,1) <= 1) = Phi(1) = 0.841345, so
    # overall 0.841345 * 0.3331 = 0.2803: the "about 28%" of the paper's code.
    conditional = exact_mask_fraction(768, 288)
    assert conditional == pytest.approx(0.33310, abs=1e-4)
    phi1 = 0.5 * (1 + math.erf(1 / math.sqrt(2)))
    n = 12000
    gated = masked_fractions(n, gate=True, seed=0)
    # Gate: "anything masked" = fired and not both widths 0 (prob (1/288)^2, negligible). Binomial std of the rate
    # sqrt(0.841 * 0.159 / 12000) = 0.0033; tolerance 0.015 is 4.5 std.
    fired = (gated > 0).mean()
    assert abs(fired - phi1) < 0.015
    # Fractions lie in [0, 0.75] (two blocks of < 288 dims), so std <= 0.375 (Popoviciu) and the mean's standard
    # error <= 0.375 / sqrt(12000) = 0.0034; tolerance 0.015 is 4.4 of that bound.
    assert gated.max() <= 0.75
    assert abs(gated.mean() - phi1 * conditional) < 0.015
    always = masked_fractions(n, gate=False, seed=1)
    assert (always > 0).mean() > 0.99  # gate=False always applies
    assert abs(always.mean() - conditional) < 0.015


def test_masks_are_contiguous_blocks_within_the_width_bound():
    g = gen(3)
    for _ in range(200):
        mask = mask_positions(20, max_width=5, blocks=1, generator=g)
        where = torch.nonzero(mask).flatten()
        assert where.numel() <= 4  # int(U(0, 5)) <= 4
        if where.numel():
            assert (where[-1] - where[0] + 1).item() == where.numel()  # one contiguous block
    # Start uniform over 0..D-w inclusive: with D=20, F=20 the last dimension must be reachable.
    g = gen(4)
    last = sum(bool(mask_positions(20, max_width=20, blocks=1, generator=g)[-1]) for _ in range(300))
    assert last > 0


def test_every_row_gets_the_same_positions_and_z_is_not_modified():
    torch.manual_seed(0)
    z = torch.randn(5, 32) + 10  # no zeros
    before = z.clone()
    out = rep_mask(z, fill="zero", max_width=12, gate=False, generator=gen(7))
    assert torch.equal(z, before)
    zeros = out == 0
    assert zeros.any()
    assert torch.equal(zeros, zeros[:1].expand_as(zeros))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_each_fill_gives_the_stated_values(seed):
    mask = rep_mask(Z, fill="zero", max_width=4, gate=False, generator=gen(seed)) == 0  # same draws for each fill
    code = rep_mask(Z, fill="code", max_width=4, gate=False, generator=gen(seed))
    paper = rep_mask(Z, fill="paper", max_width=4, gate=False, generator=gen(seed))
    torch.testing.assert_close(code, torch.where(mask, Z * 4.5, Z))  # mean of Z = 36 / 8 = 4.5
    torch.testing.assert_close(paper, torch.where(mask, torch.full_like(Z, 4.5), Z))
    if seed == 0:
        assert mask.any()


def test_gate_off_returns_z_unchanged():
    g = gen(0)
    results = [rep_mask(Z, max_width=2, generator=g) for _ in range(50)]
    untouched = [r for r in results if torch.equal(r, Z)]
    assert 0 < len(untouched) < 50  # some calls gated off (prob 0.159 each), most not


def test_gradients_flow_to_unmasked_entries_and_through_the_mean():
    z = (Z + 0.0).requires_grad_()
    mask = rep_mask(Z, fill="zero", max_width=4, gate=False, generator=gen(0)) == 0
    m = mask[0].float()
    n_masked = m.sum()
    rep_mask(z, fill="zero", max_width=4, gate=False, generator=gen(0)).sum().backward()
    torch.testing.assert_close(z.grad, (1 - m).expand(2, 4))
    z.grad = None
    # paper: sum = sum(z (1-M)) + mu * B |M|, d mu / dz = 1 / (B D), so grad = (1 - M_j) + |M| / D
    rep_mask(z, fill="paper", max_width=4, gate=False, generator=gen(0)).sum().backward()
    torch.testing.assert_close(z.grad, (1 - m + n_masked / 4).expand(2, 4))
    z.grad = None
    # code: sum = sum(z (1-M)) + mu sum(z M), grad = (1 - M_j) + mu M_j + sum(z M) / (B D)
    rep_mask(z, fill="code", max_width=4, gate=False, generator=gen(0)).sum().backward()
    expected = 1 - m + 4.5 * m + (Z * m).sum() / 8
    torch.testing.assert_close(z.grad, expected.expand(2, 4))


def test_rep_gen_noises_only_abnormal_rows_with_the_stated_std():
    torch.manual_seed(0)
    z = torch.randn(8, 4000)
    labels = torch.tensor([0, 1, 2, 3, 0, 1, 0, 3])
    out = rep_gen(z, labels, std=0.2, generator=gen(5))
    normal = labels == 0
    assert torch.equal(out[normal], z[normal])
    noise = (out - z)[~normal]
    # 5 rows x 4000 = 20000 draws: the sample std of N(0, 0.04) has standard error 0.2 / sqrt(40000) = 0.001.
    assert noise.std().item() == pytest.approx(0.2, abs=0.005)
    assert abs(noise.mean().item()) < 0.006  # standard error 0.2 / sqrt(20000) = 0.0014
    assert (noise != 0).all()
    every = rep_gen(z, labels, std=0.5, minority="all", generator=gen(5)) - z
    assert (every != 0).all(dim=1).all()
    assert every.std().item() == pytest.approx(0.5, abs=0.01)
    assert rep_gen(z, labels, std=0.0, minority="all").equal(z)


def test_rep_gen_is_reproducible_with_a_generator():
    labels = torch.tensor([1, 0])
    assert torch.equal(rep_gen(Z, labels, generator=gen(1)), rep_gen(Z, labels, generator=gen(1)))
    assert not torch.equal(rep_gen(Z, labels, generator=gen(1)), rep_gen(Z, labels, generator=gen(2)))


def test_module_modes_and_eval_is_identity():
    labels = torch.tensor([0, 2])
    z = torch.randn(2, 16) + 5
    full = RepAugment("repaugment", gate=False, fill="zero", max_width_ratio=0.375)
    out = full(z, labels, generator=gen(0))
    # The same draws by hand: Rep-Mask first, then Rep-Gen with the generator's continuing stream.
    g = gen(0)
    expected = rep_gen(rep_mask(z, fill="zero", max_width=6.0, gate=False, generator=g), labels, generator=g)
    torch.testing.assert_close(out, expected)
    assert (out[0] == 0).any() and not (out[1] == 0).any()  # normal row 0 masked only; row 1 masked, then noised
    only_gen = RepAugment("rep_gen")(z, labels, generator=gen(0))
    assert torch.equal(only_gen[0], z[0]) and not torch.equal(only_gen[1], z[1])
    only_mask = RepAugment("rep_mask", gate=False, max_width=10)(z, labels, generator=gen(0))
    assert torch.equal(only_mask, rep_mask(z, max_width=10, gate=False, generator=gen(0)))
    assert RepAugment("none")(z, labels) is z
    full.eval()
    assert full(z, labels) is z
    assert full.params()["mode"] == "repaugment"


@pytest.mark.parametrize("kwargs, message", [
    (dict(mode="specaugment"), "mode must be one of"),
    (dict(fill="mean"), "fill must be one of"),
    (dict(max_width_ratio=0.0), "max_width_ratio must be null or in"),
    (dict(max_width_ratio=1.5), "max_width_ratio must be null or in"),
    (dict(max_width=0), "max_width must be an integer >= 1"),
    (dict(max_width=0.375), "max_width must be an integer >= 1"),
    (dict(blocks=-1), "blocks must be"),
    (dict(std=-0.1), "std must be"),
    (dict(minority="crackle"), "minority must be one of"),
])
def test_bad_parameters_raise(kwargs, message):
    with pytest.raises(LungsoundError, match=message):
        RepAugment(**kwargs)


def test_zero_rep_mask_blocks_are_refused_by_the_config_and_the_module_alike():
    # Zero blocks would mask nothing (Rep-Mask off under its own name): augment.rep_blocks >= 1 and the module agree.
    with pytest.raises(LungsoundError, match="augment.rep_blocks must be an integer >= 1, got 0"):
        load_config(None, ["augment.representation=rep_mask", "augment.rep_blocks=0"])
    with pytest.raises(LungsoundError, match=r"RepAugment blocks must be an integer >= 1 \(0 blocks mask nothing\)"):
        RepAugment("rep_mask", blocks=0)
    with pytest.raises(LungsoundError, match=r"Rep-Mask blocks must be >= 1 \(0 blocks mask nothing\), got 0"):
        mask_positions(8, max_width=4, blocks=0)
    assert RepAugment("rep_mask", blocks=1).blocks == 1 and load_config(None, ["augment.rep_blocks=1"])


def test_bad_inputs_raise():
    with pytest.raises(LungsoundError, match=r"shape \(B, D\)"):
        rep_mask(torch.zeros(2, 3, 4))
    with pytest.raises(LungsoundError, match="max_width must be in"):
        rep_mask(Z, max_width=5, gate=False)
    with pytest.raises(LungsoundError, match=r"max_width must be in \(0, D=4\], got 288"):
        rep_mask(Z)  # the absolute default on a 4-d z: refused even when the gate would not fire
    with pytest.raises(LungsoundError, match=r"max_width must be in \(0, D=4\], got 288"):
        RepAugment("rep_mask")(Z)
    with pytest.raises(LungsoundError, match="one label per row"):
        rep_gen(Z, torch.tensor([0, 1, 2]))
    with pytest.raises(LungsoundError, match="needs the batch labels"):
        RepAugment("rep_gen")(Z)


def block_widths(module: RepAugment, dim: int, draws: int, seed: int) -> list[int]:
    """Widths of single Rep-Mask blocks drawn through the module (gate off, one block, zero fill)."""
    g, ones = gen(seed), torch.ones(1, dim)
    return [int((module(ones, generator=g) == 0).sum()) for _ in range(draws)]


def test_absolute_width_bound_on_a_large_model_and_the_ratio_option():
    # D = 1,024 (the large speech models). The authors' absolute F = 288: w = int(U(0, 288)) <= 287, never more, whatever
    # D. The ratio option 0.375 gives F = 0.375 * 1024 = 384: P(w >= 288) = (384 - 288) / 384 = 0.25 per draw, so
    # over 400 draws the chance of none at >= 288 is 0.75^400 (about 1e-50); the mean width is 191.5 (288 bound: 143.5).
    absolute = RepAugment("rep_mask", gate=False, fill="zero", blocks=1)
    ratio = RepAugment("rep_mask", gate=False, fill="zero", blocks=1, max_width_ratio=0.375)
    assert absolute.width(1024) == 288 and absolute.width(768) == 288
    assert ratio.width(1024) == pytest.approx(384.0) and ratio.width(768) == pytest.approx(288.0)
    wide = block_widths(absolute, 1024, 400, seed=0)
    assert max(wide) <= 287 and max(wide) > 250  # uniform up to 287: the top 37 values unseen in 400 has prob 1e-24
    scaled = block_widths(ratio, 1024, 400, seed=0)
    assert max(scaled) <= 383 and sum(w >= 288 for w in scaled) > 50  # binomial(400, 0.25): mean 100, std 8.7
    # Means: standard error of a uniform width's mean over 400 draws is 288 / sqrt(12 * 400) = 4.2 (5.5 for 384).
    assert np.mean(wide) == pytest.approx(143.5, abs=20) and np.mean(scaled) == pytest.approx(191.5, abs=25)
    assert absolute.params()["max_width"] == 288 and ratio.params()["max_width_ratio"] == 0.375
