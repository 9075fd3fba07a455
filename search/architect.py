"""The architecture step of CAS: gradient of L_val + lambda * L_cost w.r.t. alpha (paper Eq. 6, 7).

First order (xi = 0, the paper's own approximation, §4.1): grad_alpha L_val(w, alpha).
Second order (DARTS unrolled, Eq. 7): with the virtual step w' = w - xi grad_w L_train(w, alpha),

    grad_alpha L_val(w', alpha) - xi * grad^2_{alpha,w} L_train(w, alpha) grad_{w'} L_val(w', alpha)

where the Hessian-vector product is a central finite difference,
``(grad_alpha L_train(w+, alpha) - grad_alpha L_train(w-, alpha)) / (2 eps)`` with
``w± = w ± eps v``, ``v = grad_{w'} L_val`` and ``eps = 0.01 / ||v||`` (DARTS).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from search.cost import CostModel
from search.settings import ArchOrder
from search.supernet import Supernet

Batch = tuple[torch.Tensor, torch.Tensor]
GradHook = Callable[[list[torch.Tensor]], None]

#: DARTS's finite-difference radius (relative to the norm of the direction).
FD_RADIUS = 0.01


@dataclass(frozen=True)
class ArchStepStats:
    val_loss: float
    cost_loss: float
    expected_cost: float


def segmentation_loss(model: nn.Module, batch: Batch, ignore_index: int = 255) -> torch.Tensor:
    images, labels = batch
    return nn.functional.cross_entropy(model(images), labels, ignore_index=ignore_index)


class Architect:
    """Computes architecture gradients and steps the architecture optimizer.

    Args:
        model: the supernet.
        cost: the cost model of the searched cells.
        optimizer: the optimizer over ``model.arch_parameters()``.
        order: first or second order.
        reduce_grads: called on the alpha gradients before the step (distributed: all-reduce).
        fd_radius: norm of the finite-difference perturbation (DARTS: 0.01; the test uses a
            much smaller one in float64 to check the second-order gradient to 1e-7).
    """

    def __init__(
        self,
        model: Supernet,
        cost: CostModel,
        optimizer: torch.optim.Optimizer,
        order: ArchOrder = ArchOrder.FIRST,
        reduce_grads: GradHook | None = None,
        fd_radius: float = FD_RADIUS,
    ) -> None:
        self.model = model
        self.cost = cost
        self.optimizer = optimizer
        self.order = ArchOrder(order)
        self.reduce_grads = reduce_grads
        self.fd_radius = fd_radius

    def gradients(self, train: Batch, val: Batch, lambda_: float, xi: float) -> tuple[list[torch.Tensor], ArchStepStats]:
        """d(L_val + lambda L_cost)/d alpha, for each of ``model.arch_parameters()``."""
        alphas = self.model.arch_parameters()
        if self.order is ArchOrder.SECOND and xi > 0:
            grads, val_loss = self._unrolled_val_grad(train, val, xi)
        else:
            loss = segmentation_loss(self.model, val)
            grads = list(torch.autograd.grad(loss, alphas))
            val_loss = float(loss.detach())
        weights = self.model.mixing_weights()
        cost_loss = self.cost.loss(weights)
        cost_grads = torch.autograd.grad(cost_loss, alphas)
        total = [g + lambda_ * cg for g, cg in zip(grads, cost_grads)]
        stats = ArchStepStats(val_loss, float(cost_loss.detach()), float(self.cost.expected_cost(weights).detach()))
        return total, stats

    def step(self, train: Batch, val: Batch, lambda_: float, xi: float = 0.0) -> ArchStepStats:
        """One architecture update; ``xi`` is the virtual step's learning rate (second order)."""
        grads, stats = self.gradients(train, val, lambda_, xi)
        if self.reduce_grads is not None:
            self.reduce_grads(grads)
        self.optimizer.zero_grad(set_to_none=True)
        for alpha, g in zip(self.model.arch_parameters(), grads):
            alpha.grad = g.detach().clone()
        self.optimizer.step()
        return stats

    def _unrolled_val_grad(self, train: Batch, val: Batch, xi: float) -> tuple[list[torch.Tensor], float]:
        weights = self.model.weight_parameters()
        alphas = self.model.arch_parameters()
        backup = [w.detach().clone() for w in weights]
        train_grads = torch.autograd.grad(segmentation_loss(self.model, train), weights, allow_unused=True)
        try:
            with torch.no_grad():
                for w, g in zip(weights, train_grads):
                    if g is not None:
                        w.sub_(xi * g)
            val_loss = segmentation_loss(self.model, val)
            grads = torch.autograd.grad(val_loss, [*alphas, *weights], allow_unused=True)
            d_alpha = [g if g is not None else torch.zeros_like(a) for g, a in zip(grads[: len(alphas)], alphas)]
            v = [g if g is not None else torch.zeros_like(w) for g, w in zip(grads[len(alphas):], weights)]
            hessian = self._hessian_vector(train, v, backup)
        finally:
            with torch.no_grad():
                for w, b in zip(weights, backup):
                    w.copy_(b)
        return [d - xi * h for d, h in zip(d_alpha, hessian)], float(val_loss.detach())

    def _hessian_vector(self, train: Batch, v: list[torch.Tensor], origin: list[torch.Tensor]) -> list[torch.Tensor]:
        """grad^2_{alpha,w} L_train(w, alpha) v at w = ``origin`` by central differences."""
        weights = self.model.weight_parameters()
        alphas = self.model.arch_parameters()
        norm = torch.sqrt(sum((x.double() ** 2).sum() for x in v))  # type: ignore[arg-type]
        eps = self.fd_radius / max(float(norm), 1e-12)
        sides = []
        for sign in (1.0, -1.0):
            with torch.no_grad():
                for w, o, d in zip(weights, origin, v):
                    w.copy_(o + sign * eps * d)
            sides.append(torch.autograd.grad(segmentation_loss(self.model, train), alphas))
        return [(p - m) / (2 * eps) for p, m in zip(*sides)]
