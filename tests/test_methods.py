"""The pure pieces of the AST methods: SupCon, the Patch-Mix contrastive loss, Patch-Mix, the GRL, the heads.

Expected values are worked out by hand from the equations in methods.md sections 7-8 (cosines written out, log-sum-exps
spelled term by term), not by a second copy of the implementation.
"""

from __future__ import annotations

import math

import pytest
import torch

from lungsound.errors import LungsoundError
from lungsound.methods.base import Batch
from lungsound.methods.dat import dann_lambda, grad_reverse
from lungsound.methods.heads import DomainHead, Projector, domain_labels
from lungsound.methods.patchmix import patch_mix, patchmix_contrastive_loss, sample_beta
from lungsound.methods.sgscl import supcon_loss

R2 = math.sqrt(2.0)


def lse(*xs: float) -> float:
    return math.log(sum(math.exp(x) for x in xs))


# Four 2-d rows, deliberately not unit length: (3,0), (1,1), (0,2), (-1,0). Their pairwise cosines:
# c01 = 1/sqrt2, c02 = 0, c03 = -1, c12 = 1/sqrt2, c13 = -1/sqrt2, c23 = 0.
FOUR = torch.tensor([[3.0, 0.0], [1.0, 1.0], [0.0, 2.0], [-1.0, 0.0]], dtype=torch.float64)
C01, C02, C03, C12, C13, C23 = 1 / R2, 0.0, -1.0, 1 / R2, -1 / R2, 0.0


def expected_two_pairs(tau: float) -> float:
    """labels [0, 0, 1, 1]: each anchor has exactly one positive; denominators over the three other rows."""
    t0 = C01 / tau - lse(C01 / tau, C02 / tau, C03 / tau)
    t1 = C01 / tau - lse(C01 / tau, C12 / tau, C13 / tau)
    t2 = C23 / tau - lse(C02 / tau, C12 / tau, C23 / tau)
    t3 = C23 / tau - lse(C03 / tau, C13 / tau, C23 / tau)
    return -(t0 + t1 + t2 + t3) / 4


def test_supcon_hand_computed_at_tau_half():
    # at tau = 0.5 the logits are 2c: sqrt2, 0, -2, sqrt2, -sqrt2, 0
    t0 = R2 - math.log(math.exp(R2) + 1 + math.exp(-2))
    t1 = R2 - math.log(math.exp(R2) + math.exp(R2) + math.exp(-R2))
    t2 = 0 - math.log(1 + math.exp(R2) + 1)
    t3 = 0 - math.log(math.exp(-2) + math.exp(-R2) + 1)
    expected = -(t0 + t1 + t2 + t3) / 4
    got = supcon_loss(FOUR, torch.tensor([0, 0, 1, 1]), temperature=0.5)
    assert got.item() == pytest.approx(expected, abs=1e-6)
    assert expected == pytest.approx(expected_two_pairs(0.5), abs=1e-12)


def test_supcon_temperature_scaling():
    labels = torch.tensor([0, 0, 1, 1])
    for tau in (0.06, 0.1, 1.0):
        assert supcon_loss(FOUR, labels, temperature=tau).item() == pytest.approx(expected_two_pairs(tau), abs=1e-6)
    assert supcon_loss(FOUR, labels, 0.1).item() != pytest.approx(supcon_loss(FOUR, labels, 1.0).item(), abs=1e-3)


def test_supcon_normalises_rows():
    labels = torch.tensor([0, 0, 1, 1])
    scaled = FOUR * torch.tensor([[0.1], [7.0], [2.0], [0.5]], dtype=torch.float64)
    assert supcon_loss(scaled, labels, 0.5).item() == pytest.approx(expected_two_pairs(0.5), abs=1e-6)


def test_supcon_averages_over_positives_and_skips_anchors_without_one():
    # labels [0, 0, 0, 1]: anchors 0-2 have two positives each, anchor 3 has none and is left out of the mean.
    lse0 = math.log(math.exp(R2) + 1 + math.exp(-2))
    lse1 = math.log(math.exp(R2) + math.exp(R2) + math.exp(-R2))
    lse2 = math.log(1 + math.exp(R2) + 1)
    a0 = ((R2 - lse0) + (0 - lse0)) / 2  # positives 1 (l = sqrt2) and 2 (l = 0)
    a1 = ((R2 - lse1) + (R2 - lse1)) / 2  # positives 0 and 2, both l = sqrt2
    a2 = ((0 - lse2) + (R2 - lse2)) / 2  # positives 0 (l = 0) and 1 (l = sqrt2)
    expected = -(a0 + a1 + a2) / 3
    got = supcon_loss(FOUR, torch.tensor([0, 0, 0, 1]), temperature=0.5)
    assert torch.isfinite(got)
    assert got.item() == pytest.approx(expected, abs=1e-6)


def test_supcon_without_any_positive_is_zero_with_zero_gradient():
    feats = FOUR.clone().requires_grad_(True)
    loss = supcon_loss(feats, torch.tensor([0, 1, 2, 3]), temperature=0.5)
    loss.backward()
    assert loss.item() == 0.0
    assert torch.equal(feats.grad, torch.zeros_like(feats))


def test_supcon_rejects_bad_shapes():
    with pytest.raises(LungsoundError, match="labels"):
        supcon_loss(FOUR, torch.tensor([0, 1]))
    with pytest.raises(LungsoundError, match="temperature"):
        supcon_loss(FOUR, torch.tensor([0, 0, 1, 1]), temperature=0.0)


# Patch-Mix contrastive loss: u = (1,0), (0,2), (1,1); v = (2,0), (1,1), (0,-1); perm [1, 0, 2] (2 is a fixed point).
U = torch.tensor([[1.0, 0.0], [0.0, 2.0], [1.0, 1.0]], dtype=torch.float64)
V = torch.tensor([[2.0, 0.0], [1.0, 1.0], [0.0, -1.0]], dtype=torch.float64)
PERM = torch.tensor([1, 0, 2])


def test_patchmix_contrastive_loss_hand_computed_with_fixed_point():
    lam = 0.25
    # cos(u_i, v_j) / 0.5: row 0 [2, sqrt2, 0], row 1 [0, sqrt2, -2], row 2 [sqrt2, 2, -sqrt2]
    lse0, lse1, lse2 = lse(2, R2, 0), lse(0, R2, -2), lse(R2, 2, -R2)
    row0 = 0.25 * (2 - lse0) + 0.75 * (R2 - lse0)  # M[0,0] = lam, M[0,1] = 1 - lam
    row1 = 0.25 * (R2 - lse1) + 0.75 * (0 - lse1)  # M[1,1] = lam, M[1,0] = 1 - lam
    row2 = 1.0 * (-R2 - lse2)  # fixed point: M[2,2] = lam + (1 - lam) = 1
    expected = -(row0 + row1 + row2) / 3
    got = patchmix_contrastive_loss(U, V, lam, PERM, temperature=0.5)
    assert got.item() == pytest.approx(expected, abs=1e-6)


def test_patchmix_contrastive_loss_temperature_and_identity_perm():
    # lam = 1 (or the identity perm) leaves only the diagonal: a plain InfoNCE against the clean features.
    tau = 0.06
    # (s_i0, s_i1, s_i2, i) per row: the cosines of the previous test divided by tau
    rows = [(1 / tau, 1 / R2 / tau, 0.0, 0), (0.0, 1 / R2 / tau, -1 / tau, 1),
            (1 / R2 / tau, 1 / tau, -1 / R2 / tau, 2)]
    expected = -sum(r[r[3]] - lse(*r[:3]) for r in rows) / 3
    assert patchmix_contrastive_loss(U, V, 1.0, PERM, tau).item() == pytest.approx(expected, abs=1e-6)
    assert patchmix_contrastive_loss(U, V, 0.3, torch.arange(3), tau).item() == pytest.approx(expected, abs=1e-6)


def test_patchmix_contrastive_loss_stops_gradient_at_the_clean_features():
    u, v = U.clone().requires_grad_(True), V.clone().requires_grad_(True)
    patchmix_contrastive_loss(u, v, 0.4, PERM, 0.06).backward()
    assert v.grad is None
    assert u.grad is not None and u.grad.abs().sum() > 0


def test_patch_mix_lambda_prime_and_shared_mask():
    gen = torch.Generator().manual_seed(3)
    E = torch.randn(4, 948, 5, generator=gen)
    before = E.clone()
    mixed, lam, perm, mask = patch_mix(E, lam=0.3, generator=gen)
    assert int(948 * 0.7) == 663 and mask.numel() == 663 and mask.unique().numel() == 663
    assert lam == pytest.approx(1 - 663 / 948, abs=1e-12)
    assert torch.equal(E, before)  # the caller's tensor is untouched
    assert sorted(perm.tolist()) == [0, 1, 2, 3]
    replaced = torch.zeros(948, dtype=torch.bool)
    replaced[mask] = True
    assert torch.equal(mixed[:, replaced], E[perm][:, replaced])
    assert torch.equal(mixed[:, ~replaced], E[:, ~replaced])
    for i in range(4):  # every row whose partner is another sample changes at exactly the shared positions
        if perm[i] != i:
            assert torch.equal((mixed[i] != E[i]).any(dim=1), replaced)


def test_patch_mix_extremes_and_gradient():
    E = torch.randn(3, 10, 2, requires_grad=True)
    same, lam1, _, mask1 = patch_mix(E, lam=1.0)
    assert lam1 == 1.0 and mask1.numel() == 0 and torch.equal(same, E)
    swapped, lam0, perm, mask0 = patch_mix(E, lam=0.0)
    assert lam0 == 0.0 and mask0.numel() == 10 and torch.equal(swapped, E[perm])
    swapped.sum().backward()
    assert torch.equal(E.grad, torch.ones_like(E))  # every token feeds exactly one output token
    with pytest.raises(LungsoundError, match=r"\[0, 1\]"):
        patch_mix(E, lam=1.5)
    with pytest.raises(LungsoundError, match="shape"):
        patch_mix(torch.zeros(3, 4))


def test_patch_mix_draws_reproducibly_from_the_generator():
    E = torch.randn(4, 50, 3)
    a = patch_mix(E, generator=torch.Generator().manual_seed(7))
    b = patch_mix(E, generator=torch.Generator().manual_seed(7))
    assert a[1] == b[1] and torch.equal(a[0], b[0]) and torch.equal(a[2], b[2]) and torch.equal(a[3], b[3])
    assert a[1] == pytest.approx(1 - a[3].numel() / 50, abs=1e-12)


def test_beta_one_is_uniform_and_zero_means_no_mix():
    gen = torch.Generator().manual_seed(0)
    draws = torch.tensor([sample_beta(1.0, gen) for _ in range(4000)])
    assert 0.0 <= draws.min() and draws.max() <= 1.0
    assert draws.mean().item() == pytest.approx(0.5, abs=0.03)
    assert (draws < 0.25).float().mean().item() == pytest.approx(0.25, abs=0.03)
    assert sample_beta(0.0, gen) == 1.0


def test_gradient_reversal_is_identity_forward_and_negated_backward():
    x = torch.randn(3, 4, requires_grad=True)
    upstream = torch.randn(3, 4)
    y = grad_reverse(x, 0.3)
    assert torch.equal(y, x)
    y.backward(upstream)
    assert torch.allclose(x.grad, -0.3 * upstream, atol=1e-7)
    x.grad = None
    grad_reverse(x, 1.0).backward(upstream)
    assert torch.allclose(x.grad, -upstream, atol=1e-7)


def test_dann_schedule_values():
    assert dann_lambda(0.0) == 0.0
    assert dann_lambda(0.5) == pytest.approx(2 / (1 + math.exp(-5)) - 1, abs=1e-12)
    assert dann_lambda(0.5) == pytest.approx(0.9866142981514305, abs=1e-9)
    assert dann_lambda(1.0) == pytest.approx(0.9999092042625951, abs=1e-9)
    assert dann_lambda(1.0, gamma=1.0) == pytest.approx(2 / (1 + math.exp(-1)) - 1, abs=1e-12)


def test_heads_layout():
    proj = Projector(6)
    kinds = [type(m).__name__ for m in proj.net]
    assert kinds == ["Linear", "BatchNorm1d", "ReLU", "Linear"]
    assert proj(torch.randn(5, 6)).shape == (5, 6) and Projector(6, out_dim=3)(torch.randn(5, 6)).shape == (5, 3)
    head = DomainHead(6, 4)
    assert isinstance(head.norm, torch.nn.LayerNorm) and head.fc.out_features == 4
    with pytest.raises(LungsoundError, match="at least 2 domains"):
        DomainHead(6, 1)


def test_domain_labels_source():
    batch = Batch(x=torch.zeros(2, 3), label=torch.tensor([0, 1]), device=torch.tensor([3, 1]))
    assert domain_labels(batch).tolist() == [3, 1]
    with pytest.raises(LungsoundError, match="'sex'.*batch.domain is None"):
        domain_labels(batch, "sex", "dat")
    batch.domain = torch.tensor([0, 1])
    assert domain_labels(batch, "sex").tolist() == [0, 1]


def test_objective_internal_type_error_is_not_reported_as_bad_parameters(monkeypatch):
    import lungsound.methods.base as base

    class Broken(base.Objective):
        def __init__(self, feature_dim, num_classes, class_weights=None, alpha: float = 1.0):
            super().__init__(feature_dim, num_classes, class_weights)
            self.alpha = alpha + "a bug inside the constructor"  # TypeError: float + str

    base._import_methods()
    monkeypatch.setitem(base.OBJECTIVES._items, "broken", base.ObjectiveSpec("broken", Broken, card="a broken method"))
    with pytest.raises(TypeError, match="unsupported operand"):
        base.create_objective("broken", 8, 4, alpha=2.0)  # a good keyword: the real error surfaces as itself
    with pytest.raises(LungsoundError, match=r"method 'broken': bad parameters \{'beta': 2.0\}: .*beta"):
        base.create_objective("broken", 8, 4, beta=2.0)  # a keyword the constructor does not take
