"""Architecture gradients: first order (xi = 0) and the unrolled second order (Eq. 7)."""

from __future__ import annotations

import torch
from torch.func import functional_call

from _search_support import MINI19, make_profile, one_torch_thread  # noqa: F401
from search.architect import Architect, segmentation_loss
from search.cost import CostModel
from search.distributed import average_gradients_, broadcast_parameters
from search.settings import ArchOrder
from search.supernet import Supernet, default_ms_cell

SEARCHED = ("normal", "reduce")


def _setup(order: ArchOrder, fd_radius: float = 0.01) -> tuple[Supernet, Architect, tuple, tuple]:
    torch.manual_seed(0)
    model = Supernet(MINI19, SEARCHED, {"ms": default_ms_cell(MINI19)}).double()
    with torch.no_grad():
        for a in model.arch_parameters():
            a.normal_(0, 0.5)  # away from uniform, so every term of the gradient matters
    cost = CostModel.from_profile(make_profile(), "latency_ms", MINI19, SEARCHED)
    arch = Architect(model, cost, torch.optim.Adam(model.arch_parameters(), lr=0.1), order, fd_radius=fd_radius)
    g = torch.Generator().manual_seed(1)
    train = (torch.randn(2, 3, 16, 32, generator=g, dtype=torch.float64), torch.randint(0, 19, (2, 16, 32), generator=g))
    val = (torch.randn(2, 3, 16, 32, generator=g, dtype=torch.float64), torch.randint(0, 19, (2, 16, 32), generator=g))
    return model, arch, train, val


def _exact_unrolled(model: Supernet, train, val, xi: float) -> list[torch.Tensor]:
    """d/d alpha of L_val(w - xi grad_w L_train(w, alpha), alpha), by autograd through the virtual step."""
    names = [n for n, _ in model.named_parameters()]
    arch_names = [n for n in names if n.startswith("alpha_")]
    w = {n: p.detach().clone().requires_grad_(True) for n, p in model.named_parameters() if n not in arch_names}
    a = {n: p.detach().clone().requires_grad_(True) for n, p in model.named_parameters() if n in arch_names}
    buffers = {n: b.clone() for n, b in model.named_buffers()}

    def loss(params: dict, batch) -> torch.Tensor:
        logits = functional_call(model, {**params, **buffers}, (batch[0],))
        return torch.nn.functional.cross_entropy(logits, batch[1], ignore_index=255)

    g = torch.autograd.grad(loss({**w, **a}, train), list(w.values()), create_graph=True)
    w_virtual = {n: p - xi * gi for (n, p), gi in zip(w.items(), g)}
    return list(torch.autograd.grad(loss({**w_virtual, **a}, val), list(a.values())))


def test_second_order_gradient_matches_autograd_through_the_virtual_step() -> None:
    # float64 and a tiny finite-difference radius: the central difference is then exact to ~1e-10
    model, arch, train, val = _setup(ArchOrder.SECOND, fd_radius=1e-6)
    before = [p.detach().clone() for p in model.weight_parameters()]
    xi = 1e-3
    exact = _exact_unrolled(model, train, val, xi)
    grads, _ = arch.gradients(train, val, lambda_=0.0, xi=xi)
    first_order = torch.autograd.grad(segmentation_loss(model, val), model.arch_parameters())
    for got, want, fo in zip(grads, exact, first_order):
        # the Hessian term is real (second order differs from first order) and matched
        assert (want - fo).norm() > 0.1 * want.norm()
        assert (got - want).norm() < 1e-7 * want.norm()
    assert all(torch.equal(p, b) for p, b in zip(model.weight_parameters(), before))  # weights restored


def test_first_order_gradient_is_val_plus_lambda_cost() -> None:
    model, arch, train, val = _setup(ArchOrder.FIRST)
    lam = 0.7
    grads, stats = arch.gradients(train, val, lambda_=lam, xi=0.05)
    total = segmentation_loss(model, val) + lam * arch.cost.loss(model.mixing_weights())
    want = torch.autograd.grad(total, model.arch_parameters())
    for got, w in zip(grads, want):
        assert torch.allclose(got, w, rtol=1e-6, atol=1e-12)
    assert 0.0 <= stats.cost_loss <= 1.0


def test_architecture_step_with_a_large_lambda_makes_the_network_cheaper() -> None:
    model, arch, train, val = _setup(ArchOrder.FIRST)
    start = float(arch.cost.loss(model.mixing_weights()).detach())
    for _ in range(5):
        stats = arch.step(train, val, lambda_=100.0)
    assert stats.cost_loss < start


def test_distributed_helpers_are_no_ops_outside_a_process_group() -> None:
    p = torch.nn.Parameter(torch.ones(3))
    p.grad = torch.full((3,), 2.0)
    broadcast_parameters([p], None)
    average_gradients_([p], None)
    assert torch.equal(p.grad, torch.full((3,), 2.0))
