"""SpecAugment: gate rate, mask limits, fill value, in-place versus copy, determinism (methods.md section 3)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from lungsound.errors import LungsoundError
from lungsound.features.specaugment import MaskPlan, SpecAugConfig, SpecAugment

P_GATE = 0.5 * (1 + math.erf(1 / math.sqrt(2)))  # Phi(1) = 0.8413


def seeded(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def batch(b: int = 3, t: int = 200, f: int = 128, seed: int = 0) -> torch.Tensor:
    return torch.randn(b, t, f, generator=seeded(seed)) + torch.arange(b).view(b, 1, 1)


def masked_by(plan: MaskPlan, t: int, f: int) -> np.ndarray:
    """Boolean (T, F) map of the cells a plan masks."""
    cells = np.zeros((t, f), dtype=bool)
    for start, width in plan.freq:
        cells[:, start : start + width] = True
    for start, width in plan.time:
        cells[start : start + width, :] = True
    return cells


def test_fill_values_on_hand_made_spectrogram():
    spec = torch.arange(24, dtype=torch.float32).reshape(6, 4)  # value 4 r + c, mean 11.5
    plan = MaskPlan(applied=True, freq=((0, 1), (1, 1)), time=((4, 1), (0, 2)))
    SpecAugment.apply(spec, plan)
    # Columns 0 and 1 both take the first mean 11.5 (not recomputed between the frequency masks; recomputing would give
    # 11.875 for column 1). The mean is then (276 - 60 - 66 + 2 * 6 * 11.5) / 24 = 12.0, which fills rows 4, 0 and 1.
    expected = [
        [12.0, 12.0, 12.0, 12.0],
        [12.0, 12.0, 12.0, 12.0],
        [11.5, 11.5, 10.0, 11.0],
        [11.5, 11.5, 14.0, 15.0],
        [12.0, 12.0, 12.0, 12.0],
        [11.5, 11.5, 22.0, 23.0],
    ]
    assert spec.tolist() == expected


def test_batch_fill_is_the_mean_of_the_whole_batch():
    x = torch.stack([torch.arange(24, dtype=torch.float32).reshape(6, 4), torch.zeros(6, 4)])  # mean 5.75
    SpecAugment.apply(x, MaskPlan(applied=True, freq=((0, 1),), time=()))
    assert x[:, :, 0].tolist() == [[5.75] * 6, [5.75] * 6]
    assert x[1, :, 1:].abs().sum() == 0 and x[0, 2, 1] == 9.0


def test_unapplied_plan_changes_nothing():
    x = batch()
    saved = x.clone()
    SpecAugment.apply(x, MaskPlan(applied=False, freq=(), time=()))
    assert torch.equal(x, saved)


def test_clean_never_mutates_its_input():
    cached = np.random.default_rng(0).standard_normal((4, 120, 128)).astype(np.float32)
    saved = cached.copy()
    x = torch.from_numpy(cached)  # shares memory with the "cache"
    aug = SpecAugment(SpecAugConfig(semantics="clean"))
    out = aug(x, seeded(1))
    assert np.array_equal(cached, saved)
    assert out.data_ptr() != x.data_ptr()
    assert all(not torch.equal(out[b], x[b]) for b in range(4))  # p = 1: every sample masked


def test_clean_masks_every_sample_exactly_in_its_planned_bands():
    # Clean has no gate: every sample of every call is masked. Replaying the generator gives the plans; each sample
    # must differ from its input exactly on the planned bands, hold the fill values there, and be untouched elsewhere.
    aug = SpecAugment(SpecAugConfig(semantics="clean"))
    t, f, n = 120, 40, 60
    x = torch.randn(n, t, f, generator=seeded(2)) + 3.0  # no cell equals a fill value (means near 3, cells vary)
    out = aug(x, seeded(3))
    replay = seeded(3)
    widths = 0
    for b in range(n):
        plan = aug.plan(t, f, replay)
        cells = masked_by(plan, t, f)
        assert cells.any()  # never an all-zero-width draw for these seeds, so "masked" is visible
        assert torch.equal(out[b] != x[b], torch.from_numpy(cells))
        assert torch.equal(out[b][~torch.from_numpy(cells)], x[b][~torch.from_numpy(cells)])
        # the fill values, computed by hand: the input's mean for the frequency bands, then the partly masked mean
        freq_cols = np.zeros(f, dtype=bool)
        for start, width in plan.freq:
            freq_cols[start : start + width] = True
        first = x[b].mean()
        partly = x[b].clone()
        partly[:, torch.from_numpy(freq_cols)] = first
        second = partly.mean()
        time_rows = np.zeros(t, dtype=bool)
        for start, width in plan.time:
            time_rows[start : start + width] = True
        rows, cols = torch.from_numpy(time_rows), torch.from_numpy(freq_cols)
        assert torch.equal(out[b][rows], torch.full((int(rows.sum()), f), second.item()))
        assert torch.equal(out[b][~rows][:, cols], torch.full((int((~rows).sum()), int(cols.sum())), first.item()))
        widths += sum(w for _, w in plan.freq + plan.time)
    assert widths > 0


@pytest.mark.parametrize("semantics", ["paper", "clean"])
def test_mask_start_reaches_the_inclusive_upper_end(semantics):
    # The reference draws start = randint(0, D - w), both ends included: over many draws start = D - w must occur
    # (a mask ending on the last frame or bin), and nothing beyond it.
    aug = SpecAugment(SpecAugConfig(semantics=semantics, freq_width=4, time_width=4, gate_threshold=100.0))
    g = seeded(31)
    reached: dict[tuple[str, int, int], bool] = {}
    for _ in range(3000):
        plan = aug.plan(6, 5, g)
        for axis, dim, masks in (("time", 6, plan.time), ("freq", 5, plan.freq)):
            for start, width in masks:
                assert 0 <= start <= dim - width
                key = (axis, dim, width)
                reached[key] = reached.get(key, False) or start == dim - width
    for width in (1, 2, 3):
        assert reached[("time", 6, width)] and reached[("freq", 5, width)], (width, reached)


def test_paper_batch_writes_in_place_with_shared_positions():
    cfg = SpecAugConfig(semantics="paper", per="batch", gate_threshold=100.0)  # gate always open
    aug = SpecAugment(cfg)
    assert aug.in_place
    x = batch(b=3, t=200, f=128)
    saved = x.clone()
    out = aug(x, seeded(5))
    assert out is x and not torch.equal(x, saved)
    plan = SpecAugment(cfg).plan(200, 128, seeded(5))  # replay the same draws
    cells = torch.from_numpy(masked_by(plan, 200, 128))
    for b in range(3):
        changed = x[b] != saved[b]
        assert torch.equal(changed, cells)  # same positions in every sample
        assert torch.equal(x[b][~cells], saved[b][~cells])
    # A cell masked only by a frequency mask holds the mean of the whole original batch.
    freq_only = [(t, f) for t in range(200) for f in range(128) if cells[t, f] and not cells[t].all()]
    t0, f0 = freq_only[0]
    assert x[:, t0, f0].tolist() == pytest.approx([float(saved.mean())] * 3)


def test_paper_batch_second_view_carries_first_masks():
    aug = SpecAugment(SpecAugConfig(semantics="paper", per="batch", gate_threshold=100.0))
    x = batch()
    view1 = aug(x, seeded(7)).clone()
    first_cells = masked_by(aug.plan(200, 128, seeded(7)), 200, 128)
    g = seeded(8)
    second_cells = masked_by(aug.plan(200, 128, seeded(8)), 200, 128)
    view2 = aug(x, g)
    kept = torch.from_numpy(first_cells & ~second_cells)
    assert kept.any()
    assert torch.equal(view2[:, kept], view1[:, kept])  # the first view's fill values are still there


def test_paper_sample_draws_per_sample_on_a_copy():
    aug = SpecAugment(SpecAugConfig(semantics="paper", per="sample", gate_threshold=100.0))
    assert not aug.in_place
    x = batch(b=4)
    saved = x.clone()
    out = aug(x, seeded(3))
    assert torch.equal(x, saved)
    replay = seeded(3)
    plans = [aug.plan(200, 128, replay) for _ in range(4)]
    for b, plan in enumerate(plans):
        assert torch.equal(out[b] != saved[b], torch.from_numpy(masked_by(plan, 200, 128)))
    assert len({plan for plan in plans}) == 4  # different masks for different samples


def test_gate_probability_of_plans():
    aug = SpecAugment(SpecAugConfig(semantics="paper"))
    g, n = seeded(11), 20000
    hits = sum(aug.plan(798, 128, g).applied for _ in range(n))
    sigma = math.sqrt(n * P_GATE * (1 - P_GATE))
    assert abs(hits - n * P_GATE) < 5 * sigma


def test_gate_probability_through_calls_per_sample():
    aug = SpecAugment(SpecAugConfig(semantics="paper", per="sample"))
    n = 3000
    x = torch.randn(n, 20, 12, generator=seeded(12))
    out = aug(x, seeded(13))
    changed = (out != x).flatten(1).any(dim=1).sum().item()
    sigma = math.sqrt(n * P_GATE * (1 - P_GATE))
    assert abs(changed - n * P_GATE) < 5 * sigma


def test_gate_probability_per_batch():
    aug = SpecAugment(SpecAugConfig(semantics="paper", per="batch"))
    g, n = seeded(14), 2000
    hits = 0
    for _ in range(n):
        x = torch.randn(2, 16, 8)
        saved = x.clone()
        hits += not torch.equal(aug(x, g), saved)
    sigma = math.sqrt(n * P_GATE * (1 - P_GATE))
    assert abs(hits - n * P_GATE) < 5 * sigma


def test_mask_widths_and_starts_stay_in_limits():
    aug = SpecAugment(SpecAugConfig(semantics="clean"))
    g = seeded(21)
    freq_widths, time_widths = [], []
    for _ in range(3000):
        plan = aug.plan(498, 128, g)
        assert len(plan.freq) == 2 and len(plan.time) == 2
        for start, width in plan.freq:
            assert 0 <= width <= 47 and 0 <= start <= 128 - width
            freq_widths.append(width)
        for start, width in plan.time:
            assert 0 <= width <= 159 and 0 <= start <= 498 - width
            time_widths.append(width)
    # int(U(0, W)) covers 0 .. W-1 with mean about (W - 1) / 2
    assert min(freq_widths) == 0 and max(freq_widths) == 47 and max(time_widths) == 159
    assert np.mean(freq_widths) == pytest.approx(23.5, abs=1.0)
    assert np.mean(time_widths) == pytest.approx(79.5, abs=3.0)


def test_masks_wider_than_the_axis_are_clipped():
    aug = SpecAugment(SpecAugConfig(semantics="clean", time_width=160))
    g = seeded(22)
    for _ in range(200):
        for start, width in aug.plan(10, 128, g).time:
            assert width <= 10 and (start == 0 if width == 10 else start <= 10 - width)


def test_determinism_with_seeded_generator():
    for cfg in (SpecAugConfig(), SpecAugConfig(semantics="clean"), SpecAugConfig(per="batch", gate_threshold=100.0)):
        x = batch(b=4)
        a = SpecAugment(cfg)(x.clone(), seeded(99))
        b = SpecAugment(cfg, generator=seeded(99))(x.clone())  # generator given at construction
        c = SpecAugment(cfg)(x.clone(), seeded(100))
        assert torch.equal(a, b)
        assert not torch.equal(a, c)


def test_single_spectrogram_is_accepted():
    aug = SpecAugment(SpecAugConfig(semantics="clean"))
    x = torch.randn(100, 128, generator=seeded(4))
    out = aug(x, seeded(5))
    assert out.shape == (100, 128)
    assert torch.equal(out != x, torch.from_numpy(masked_by(aug.plan(100, 128, seeded(5)), 100, 128)))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"semantics": "official"}, "semantics must be one of"),
        ({"per": "item"}, "per must be one of"),
        ({"semantics": "clean", "per": "batch"}, "per='batch' is a paper quirk"),
        ({"time_width": -1}, "time_width must be >= 0"),
    ],
)
def test_config_validation(kwargs, message):
    with pytest.raises(LungsoundError, match=message):
        SpecAugConfig(**kwargs)


@pytest.mark.parametrize("bad", [torch.zeros(2, 1, 10, 8), torch.zeros(10, 8, dtype=torch.long), np.zeros((10, 8))])
def test_bad_inputs(bad):
    with pytest.raises(LungsoundError, match="expects a float tensor"):
        SpecAugment()(bad)
