"""The registered AST method objectives on a tiny AST: losses, gradient paths, views, domains, composition."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import lungsound.methods.patchmix as patchmix_module
import lungsound.methods.sgscl as sgscl_module
from lungsound.errors import LungsoundError
from lungsound.features.specaugment import SpecAugConfig, SpecAugment
from lungsound.methods import Batch, StepContext, create_objective, list_objectives
from lungsound.models import create_model
from lungsound.models.base import FeatureClassifier

FRAMES = 98  # a 12 x 9 patch grid keeps the tiny AST fast


@pytest.fixture
def model():
    torch.manual_seed(0)
    return create_model("ast_tiny", input_frames=FRAMES)


def make_batch(frames: int = FRAMES, domain=None) -> Batch:
    gen = torch.Generator().manual_seed(1)
    return Batch(x=torch.randn(4, frames, 128, generator=gen), label=torch.tensor([0, 1, 2, 3]),
                 device=torch.tensor([0, 0, 3, 3]), domain=domain)


def spy_features(model):
    """Record (input, patch_hook given?, output) of every forward_features call; outputs keep their grad."""
    calls = []
    original = model.forward_features

    def spy(x, patch_hook=None):
        z = original(x, patch_hook=patch_hook)
        if z.requires_grad:
            z.retain_grad()
        calls.append((x.detach().clone(), patch_hook is not None, z))
        return z

    model.forward_features = spy
    return calls


class _CountingAugment:
    """Writes zeros IN PLACE into frames [10 k, 10 k + 5) on its k-th call (like the paper's per-batch SpecAugment)."""

    def __init__(self):
        self.calls = 0

    def __call__(self, x):
        x[:, 10 * self.calls : 10 * self.calls + 5] = 0.0
        self.calls += 1
        return x


def grad_of(param_owner, name_part: str) -> torch.Tensor:
    grads = [p.grad for n, p in param_owner.named_parameters() if name_part in n]
    assert grads and all(g is not None for g in grads), f"no gradient in {name_part}"
    return torch.cat([g.flatten() for g in grads])


def test_methods_are_registered():
    assert {"patchmix_ce", "patchmix_cl", "sgscl", "dat", "compose"} <= set(list_objectives())


@pytest.mark.parametrize("name, params, extra_head", [
    ("patchmix_ce", {}, None),
    ("patchmix_cl", {}, "projector"),
    ("sgscl", {}, "projector"),
    ("dat", {}, "domain_head"),
    ("compose", {"parts": ["patchmix_cl", "sgscl"]}, "projector"),
])
def test_objective_runs_forward_backward(model, name, params, extra_head):
    objective = create_objective(name, model.feature_dim, 4, **params)
    loss, logs = objective(model, make_batch(), StepContext())
    loss.backward()
    assert loss.dim() == 0 and torch.isfinite(loss)
    assert all(isinstance(v, float) for v in logs.values())
    for part in ("backbone.embeddings.patch_embeddings", "backbone.layers", "head"):
        g = grad_of(model, part)
        assert torch.isfinite(g).all() and g.abs().sum() > 0
    if extra_head:
        g = grad_of(objective, extra_head)
        assert torch.isfinite(g).all() and g.abs().sum() > 0


def test_patchmix_cl_on_the_papers_948_patch_grid():
    torch.manual_seed(0)
    model = create_model("ast_tiny")  # 798 frames -> 12 x 79 = 948 patches
    objective = create_objective("patchmix_cl", model.feature_dim, 4)
    loss, logs = objective(model, make_batch(frames=798), StepContext())
    loss.backward()
    assert torch.isfinite(loss)
    assert logs["lam"] * 948 == pytest.approx(round(logs["lam"] * 948), abs=1e-9)
    assert loss.item() == pytest.approx(logs["loss_ce"] + logs["loss_cl"], abs=1e-5)


def test_patchmix_ce_is_the_lambda_weighted_pair_of_ces(model, monkeypatch):
    draws = []
    real = patchmix_module.patch_mix

    def recording(E, *args, **kwargs):
        out = real(E, *args, **kwargs)
        draws.append(out)
        return out

    monkeypatch.setattr(patchmix_module, "patch_mix", recording)
    calls = spy_features(model)
    batch = make_batch()
    objective = create_objective("patchmix_ce", model.feature_dim, 4, class_weights=torch.tensor([1.0, 2, 3, 4]))
    loss, logs = objective(model, batch, StepContext())
    (_, lam, perm, _), = draws
    (_, hooked, z_mixed), = calls
    assert hooked and logs["lam"] == lam
    logits = model.forward_head(z_mixed)
    expected = lam * F.cross_entropy(logits, batch.label) + (1 - lam) * F.cross_entropy(logits, batch.label[perm])
    assert loss.item() == pytest.approx(expected.item(), abs=1e-6)  # unweighted by default, despite class weights


def test_patchmix_cl_target_is_stop_gradient(model):
    calls = spy_features(model)
    batch = make_batch()
    objective = create_objective("patchmix_cl", model.feature_dim, 4)
    loss, logs = objective(model, batch, StepContext(augment=_CountingAugment()))
    loss.backward(retain_graph=True)
    (x_clean, hook_clean, z), (x_mixed, hook_mixed, z_mixed) = calls
    z_grad = z.grad.clone()  # (autograd.grad below also accumulates into a retained .grad)
    assert not hook_clean and hook_mixed
    assert torch.equal(x_clean, x_mixed)  # the mixed pass reuses the clean pass's augmented input
    ce = F.cross_entropy(model.forward_head(z), batch.label)
    (d_ce,) = torch.autograd.grad(ce, z)
    # z receives the CE gradient only: nothing flows back from the contrastive target
    assert torch.allclose(z_grad, d_ce, atol=1e-7)
    assert z_mixed.grad is not None and z_mixed.grad.abs().sum() > 0
    assert loss.item() == pytest.approx(logs["loss_ce"] + logs["loss_cl"], abs=1e-5)


@pytest.mark.parametrize("view2", ["paper", "clean"])
def test_sgscl_views_and_no_gradient_through_view_two(model, view2):
    calls = spy_features(model)
    batch = make_batch()
    original = batch.x.clone()
    objective = create_objective("sgscl", model.feature_dim, 4, view2=view2)
    loss, logs = objective(model, batch, StepContext(augment=_CountingAugment()))
    loss.backward()  # in-place augmentation must not corrupt a tensor saved for backward
    assert torch.equal(batch.x, original)
    (x1, _, z1), (x2, _, z2) = calls
    zero = lambda x, a, b: bool((x[:, a:b] == 0).all())  # noqa: E731
    assert zero(x1, 0, 5) and not zero(x1, 10, 15)
    assert zero(x2, 10, 15) and zero(x2, 0, 5) == (view2 == "paper")  # paper: view 2 also carries view 1's masks
    assert z1.requires_grad and not z2.requires_grad
    bn = objective.projector.net[1]
    assert int(bn.num_batches_tracked) == 2  # the projector's BatchNorm statistics see both views
    assert grad_of(objective, "projector").abs().sum() > 0
    assert loss.item() == pytest.approx(logs["loss_ce"] + logs["loss_sg"], abs=1e-5)


def test_sgscl_with_paper_specaugment_in_place(model):
    augment = SpecAugment(SpecAugConfig(semantics="paper", per="batch", gate_threshold=100.0),
                          generator=torch.Generator().manual_seed(0))
    objective = create_objective("sgscl", model.feature_dim, 4)
    loss, _ = objective(model, make_batch(), StepContext(augment=augment))
    loss.backward()
    assert torch.isfinite(loss)


def test_sgscl_domain_labels_and_unknown_domains(model, monkeypatch):
    seen = []
    real = sgscl_module.supcon_loss
    monkeypatch.setattr(sgscl_module, "supcon_loss", lambda f, l, t: seen.append((f, l, t)) or real(f, l, t))
    batch = make_batch()
    create_objective("sgscl", model.feature_dim, 4, temperature=0.1)(model, batch, StepContext())
    assert seen[-1][1].tolist() == [0, 0, 3, 3, 0, 0, 3, 3] and seen[-1][2] == 0.1
    objective = create_objective("sgscl", model.feature_dim, 4, domain="age_group")
    with pytest.raises(LungsoundError, match="age_group"):
        objective(model, batch, StepContext())
    batch.domain = torch.tensor([1, -1, 0, 1])
    objective(model, batch, StepContext())
    features, labels, _ = seen[-1]
    assert labels.tolist() == [1, 0, 1, 1, 0, 1] and features.shape == (6, model.feature_dim)


def test_dat_backbone_gets_the_reversed_domain_gradient(model):
    calls = spy_features(model)
    batch = make_batch()
    objective = create_objective("dat", model.feature_dim, 4, alpha=0.7, grl_lambda=0.5)
    loss, logs = objective(model, batch, StepContext())
    loss.backward(retain_graph=True)
    ((_, _, z),) = calls
    z_grad = z.grad.clone()  # (autograd.grad below also accumulates into a retained .grad)
    ce = F.cross_entropy(model.forward_head(z), batch.label)
    domain_ce = F.cross_entropy(objective.domain_head(z), batch.device)
    d_ce, d_dom = torch.autograd.grad(ce, z)[0], torch.autograd.grad(domain_ce, z)[0]
    assert torch.allclose(z_grad, d_ce - 0.7 * 0.5 * d_dom, atol=1e-6)
    assert logs["loss_domain"] == pytest.approx(domain_ce.item(), abs=1e-6)
    assert loss.item() == pytest.approx(logs["loss_ce"] + 0.7 * logs["loss_domain"], abs=1e-5)
    assert logs["grl_lambda"] == 0.5 and 0.0 <= logs["domain_acc"] <= 1.0
    assert grad_of(objective, "domain_head").abs().sum() > 0


def test_dat_dann_schedule_and_domain_sources(model):
    objective = create_objective("dat", model.feature_dim, 4, grl_schedule="dann")
    _, logs = objective(model, make_batch(), StepContext(progress=0.5))
    assert logs["grl_lambda"] == pytest.approx(0.9866142981514305, abs=1e-9)
    aft = create_objective("dat", model.feature_dim, 4, alpha=0.2, n_domains=2, domain="generated")
    batch = make_batch(domain=torch.tensor([0, 1, -1, -1]))
    _, logs = aft(model, batch, StepContext())
    logits = aft.domain_head(model.forward_features(batch.x))[:2]
    assert logs["loss_domain"] == pytest.approx(F.cross_entropy(logits, torch.tensor([0, 1])).item(), abs=1e-5)
    batch.domain = torch.tensor([0, 1, 2, 0])
    with pytest.raises(LungsoundError, match="n_domains is 2"):
        aft(model, batch, StepContext())
    with pytest.raises(LungsoundError, match="grl_schedule"):
        create_objective("dat", model.feature_dim, 4, grl_schedule="linear")


def test_weighted_ce_uses_the_experiment_class_weights(model):
    weights = torch.tensor([0.1, 0.2, 0.3, 0.4])
    batch = make_batch()
    logits = model(batch.x)
    for weighted, expected in ((False, F.cross_entropy(logits, batch.label)),
                               (True, F.cross_entropy(logits, batch.label, weight=weights))):
        objective = create_objective("dat", model.feature_dim, 4, class_weights=weights, weighted_ce=weighted)
        _, logs = objective(model, batch, StepContext())
        assert logs["loss_ce"] == pytest.approx(expected.item(), abs=1e-6)


def test_compose_shares_one_clean_pass(model):
    calls = spy_features(model)
    objective = create_objective("compose", model.feature_dim, 4,
                                 parts=["patchmix_cl", {"name": "sgscl", "alpha": 0.5}])
    loss, logs = objective(model, make_batch(), StepContext())
    assert [hooked for _, hooked, _ in calls] == [False, True, False]  # clean, mixed, SG-SCL view 2
    assert objective.parts[1].alpha == 0.5
    assert set(logs) == {"loss_ce", "loss_cl", "lam", "loss_sg"}
    assert loss.item() == pytest.approx(logs["loss_ce"] + logs["loss_cl"] + 0.5 * logs["loss_sg"], abs=1e-5)
    assert len(list(objective.parameters())) == 2 * len(list(objective.parts[0].projector.parameters()))


def test_bad_configurations_fail_loudly(model):
    with pytest.raises(LungsoundError, match="does not share a clean pass"):
        create_objective("compose", model.feature_dim, 4, parts=["patchmix_ce"])
    with pytest.raises(LungsoundError, match="non-empty list"):
        create_objective("compose", model.feature_dim, 4, parts=[])
    with pytest.raises(LungsoundError, match="view2"):
        create_objective("sgscl", model.feature_dim, 4, view2="fresh")
    with pytest.raises(LungsoundError, match="bad parameters"):
        create_objective("patchmix_cl", model.feature_dim, 4, beta=2.0)


def test_patch_mix_needs_patch_tokens():
    class NoPatches(FeatureClassifier):
        def __init__(self):
            super().__init__()
            self.body = torch.nn.Linear(128, 8)
            self._build_head(8, 4)

        def forward_features(self, x, patch_hook=None):
            self._refuse_patch_hook(patch_hook)
            return self.body(x.mean(dim=1))

    net = NoPatches()
    with pytest.raises(LungsoundError, match="Patch-Mix"):
        create_objective("patchmix_cl", 8, 4)(net, make_batch(), StepContext())
