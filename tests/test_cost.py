"""The normalised cost loss (Eq. 5), its checks, the lambda controller and the budget derivation."""

from __future__ import annotations

import random
from dataclasses import replace

import pytest
import torch

from _search_support import BASELINE, MINI19, TINY19, known_cost, make_profile, one_torch_thread  # noqa: F401
from casprof.config import NetworkConfig
from casprof.errors import UserInputError
from casprof.genotype import random_cell
from casprof.ops import CELL_TYPES, candidate_ops
from casprof.predict import predict
from casprof.profile import CostValue, Method
from search.budget import LAMBDA_FLOOR, LambdaController, budget_derivation
from search.cost import CostModel, keep_probabilities
from search.derive import derive_genotype
from search.settings import CostSupport
from search.supernet import edge_list

ALL = ("normal", "reduce", "ms")


def _one_hot(config, cell_type: str, pick) -> torch.Tensor:
    ops = candidate_ops(cell_type, with_none=True)
    w = torch.zeros(config.edges_per_cell(cell_type), len(ops), dtype=torch.float64)
    for r, (j, i) in enumerate(edge_list(config, cell_type)):
        w[r, ops.index(pick(j, i))] = 1.0
    return w


def test_cost_loss_spans_zero_to_one_over_the_simplex() -> None:
    model = CostModel.from_profile(make_profile(), "latency_ms", MINI19, ALL, "all")
    cheapest = {t: _one_hot(MINI19, t, lambda j, i: "none") for t in ALL}
    dearest = {t: _one_hot(MINI19, t, lambda j, i, t=t: candidate_ops(t)[-1]) for t in ALL}
    assert float(model.loss(cheapest)) == pytest.approx(0.0)
    assert float(model.loss(dearest)) == pytest.approx(1.0)
    # S by hand: each edge spans 0 .. scale * (n_ops - 1)
    span = sum(MINI19.edges_per_cell(t) * known_cost(t, candidate_ops(t)[-1]) / MINI19.edges_per_cell(t) for t in ALL)
    assert model.scale == pytest.approx(span)


def test_derivable_cost_ignores_none_and_spans_the_derivable_operations() -> None:
    """Every edge over the derivable operations: cheapest to dearest is 0 to 1; weight on none changes nothing."""
    model = CostModel.from_profile(make_profile(), "latency_ms", MINI19, ALL, "derivable")
    cheapest = {t: _one_hot(MINI19, t, lambda j, i, t=t: candidate_ops(t)[0]) for t in ALL}
    dearest = {t: _one_hot(MINI19, t, lambda j, i, t=t: candidate_ops(t)[-1]) for t in ALL}
    assert float(model.loss(cheapest)) == pytest.approx(0.0)
    assert float(model.loss(dearest)) == pytest.approx(1.0)
    half_none = {t: 0.5 * w + 0.5 * _one_hot(MINI19, t, lambda j, i: "none") for t, w in dearest.items()}
    assert float(model.loss(half_none)) == pytest.approx(1.0)
    alpha = torch.zeros(MINI19.edges_per_cell("normal"), len(candidate_ops("normal", with_none=True)), dtype=torch.float64, requires_grad=True)
    only_normal = CostModel.from_profile(make_profile(), "latency_ms", MINI19, ("normal",), "derivable")
    only_normal.loss({"normal": torch.softmax(alpha, -1)}).backward()
    assert torch.allclose(alpha.grad[:, 0], torch.zeros_like(alpha.grad[:, 0]), atol=1e-12)  # none's weight is left to the validation loss
    everything = CostModel.from_profile(make_profile(), "latency_ms", MINI19, ("normal",), "all")
    alpha.grad = None
    everything.loss({"normal": torch.softmax(alpha, -1)}).backward()
    assert bool((alpha.grad[:, 0] < 0).all())  # Eq. 5 literally: none is pushed up by the cost term


@pytest.mark.parametrize("support", ["kept", "derivable"])
def test_expected_cost_of_a_one_hot_derived_architecture_is_the_prediction(support: str) -> None:
    profile = make_profile(TINY19)
    rng = random.Random(1)
    cells = {t: random_cell(t, TINY19, rng) for t in CELL_TYPES}
    weights = {}
    for t, cell in cells.items():
        chosen = {(j, i): op for j, node in enumerate(cell) for op, i in node}
        weights[t] = _one_hot(TINY19, t, lambda j, i, c=chosen: c.get((j, i), "none"))
    genotype = derive_genotype(weights, TINY19, {})
    assert genotype.cells() == cells
    model = CostModel.from_profile(profile, "macs", TINY19, ALL, support)
    assert BASELINE + float(model.expected_cost(weights)) == pytest.approx(predict(profile, genotype)["macs"].value)


@pytest.mark.parametrize("support", ["all", "derivable", "kept"])
def test_cost_loss_gradient_pushes_towards_cheap_operations(support: str) -> None:
    model = CostModel.from_profile(make_profile(), "latency_ms", MINI19, ("normal",), support)
    alpha = torch.zeros(MINI19.edges_per_cell("normal"), 12, requires_grad=True)
    model.loss({"normal": torch.softmax(alpha, -1)}).backward()
    costs = model.tables["normal"][0]
    # d/d alpha_o of sum_o c_o softmax_o at uniform = (c_o - mean c) / n / S: ordered like the costs
    first = 0 if support == "all" else 1  # derivable, kept: none (column 0) gets no cost gradient here
    assert torch.argsort(alpha.grad[0, first:]).tolist() == torch.argsort(costs[first:], stable=True).tolist()


def _ordered_pair_inclusion(p: list[float]) -> list[float]:
    """P(edge among 2 draws without replacement), by enumerating every ordered pair."""
    return [sum(p[a] * p[b] / (1 - p[a]) for a in range(len(p)) for b in range(len(p)) if a != b and e in (a, b))
            for e in range(len(p))]


def test_keep_probabilities_are_the_top_two_inclusion_probabilities() -> None:
    strength = torch.tensor([0.3, 0.7, 0.1, 0.2, 0.6, 0.05, 0.4, 0.4, 0.4], dtype=torch.float64)
    nodes = torch.tensor([0, 0, 1, 1, 1, 2, 2, 2, 2])
    prob = keep_probabilities(strength, nodes)
    assert prob[:2].tolist() == [1.0, 1.0]  # a node with two edges keeps both
    for j in (1, 2):
        rows = nodes == j
        s = strength[rows]
        assert prob[rows].tolist() == pytest.approx(_ordered_pair_inclusion((s / s.sum()).tolist()))
        assert float(prob[rows].sum()) == pytest.approx(2.0)
    assert float(prob[5]) < float(prob[6])  # weaker edge, less likely kept
    equal = keep_probabilities(torch.full((4,), 0.25, dtype=torch.float64), torch.zeros(4, dtype=torch.long))
    assert equal.tolist() == pytest.approx([0.5] * 4)


def _kept_model(edge_costs: list[float]) -> CostModel:
    """A normal-cell model of MINI19 whose rows cost ``edge_costs`` on every derivable operation."""
    n_ops = len(candidate_ops("normal", with_none=True))
    table = torch.tensor(edge_costs, dtype=torch.float64)[:, None].repeat(1, n_ops)
    table[:, 0] = 0.0
    nodes = torch.tensor([j for j, _ in edge_list(MINI19, "normal")])
    return CostModel("latency_ms", "ms", {"normal": table}, 1.0, 0.0, support=CostSupport.KEPT, nodes={"normal": nodes})


def test_kept_cost_prices_which_edges_a_node_keeps() -> None:
    """Node 1 of a MINI19 cell has three edges; the operations cost the same, the edges do not."""
    model = _kept_model([5.0, 5.0, 1.0, 4.0, 9.0])
    alpha = torch.zeros(5, len(candidate_ops("normal", with_none=True)), dtype=torch.float64, requires_grad=True)
    expected = model.expected_cost({"normal": torch.softmax(alpha, -1)})
    assert float(expected.detach()) == pytest.approx(10.0 + 2 / 3 * (1.0 + 4.0 + 9.0))
    expected.backward()
    grad = alpha.grad[:, 1]  # ties: the strength is the first derivable operation's weight
    assert float(grad[4]) > 0 > float(grad[2])  # the dear edge's strength falls, the cheap one's rises
    assert torch.allclose(alpha.grad[:2], torch.zeros_like(alpha.grad[:2]))  # node 0 keeps both edges anyway
    derivable = replace(model, support=CostSupport.DERIVABLE)
    alpha.grad = None
    derivable.expected_cost({"normal": torch.softmax(alpha, -1)}).backward()
    assert torch.allclose(alpha.grad, torch.zeros_like(alpha.grad))  # blind to which edges are kept


def test_kept_cost_spans_the_cheapest_to_the_dearest_derivable_network() -> None:
    profile = make_profile(TINY19)
    model = CostModel.from_profile(profile, "latency_ms", TINY19, ALL)
    assert model.support.value == "kept"
    for extreme, target in ((torch.argmin, 0.0), (torch.argmax, 1.0)):
        weights = {}
        for t, tab in model.tables.items():
            w = torch.zeros_like(tab)
            best = tab[:, 1:].min(dim=1).values if target == 0.0 else tab[:, 1:].max(dim=1).values
            for j in model.nodes[t].unique().tolist():
                rows = (model.nodes[t] == j).nonzero().flatten()
                order = best[rows].argsort(descending=target == 1.0)[:2]
                for r in rows[order].tolist():
                    w[r, 1 + int(extreme(tab[r, 1:]))] = 1.0
            weights[t] = w
        assert float(model.loss(weights)) == pytest.approx(target)


def test_profile_for_another_network_is_refused_saying_what_differs() -> None:
    with pytest.raises(UserInputError, match="channels"):
        CostModel.from_profile(make_profile(MINI19), "latency_ms", NetworkConfig(num_classes=19), ALL)


def test_unknown_or_missing_metric_is_refused() -> None:
    with pytest.raises(UserInputError, match="Unknown metric"):
        CostModel.from_profile(make_profile(), "fps", MINI19, ALL)
    with pytest.raises(UserInputError, match="no 'params' costs"):
        CostModel.from_profile(make_profile(), "params", MINI19, ALL)


def test_estimated_profile_is_accepted_with_a_warning() -> None:
    model = CostModel.from_profile(make_profile(method=Method.ESTIMATED), "latency_ms", MINI19, ALL)
    assert any("estimated" in w for w in model.warnings)
    assert not CostModel.from_profile(make_profile(), "latency_ms", MINI19, ALL).warnings


def test_negative_measured_costs_are_used_as_they_are() -> None:
    profile = make_profile()
    costs = {t: dict(ops) for t, ops in profile.costs.items()}
    costs["normal"]["max_pool_3x3"] = {m: CostValue(-0.9, source="exact") for m in profile.metrics}
    model = CostModel.from_profile(replace(profile, costs=costs), "latency_ms", MINI19, ("normal",))
    col = candidate_ops("normal", with_none=True).index("max_pool_3x3")
    assert float(model.tables["normal"][0, col]) == pytest.approx(-0.9 / MINI19.edges_per_cell("normal"))
    assert model.offset < 0


def test_lambda_controller_moves_lambda_multiplicatively_and_round_trips() -> None:
    c = LambdaController(target=10.0, lambda_=0.0, factor=2.0)
    assert c.update(1, 12.0) == LAMBDA_FLOOR  # over budget from lambda 0: start at the floor
    assert c.update(2, 12.0) == pytest.approx(2 * LAMBDA_FLOOR)
    assert c.update(3, 9.5) == pytest.approx(2 * LAMBDA_FLOOR)  # inside the band: kept
    assert c.update(4, 5.0) == pytest.approx(LAMBDA_FLOOR)  # far under: lowered
    clone = LambdaController(target=1.0, lambda_=1.0)
    clone.load_state_dict(c.state_dict())
    assert clone == c


def test_budget_derivation_lands_under_the_target_by_cheaper_operations() -> None:
    profile = make_profile()
    dearest = {t: _one_hot(MINI19, t, lambda j, i, t=t: candidate_ops(t)[-1]).float() * 0.5 + 0.5 / 12 for t in ALL}
    free = derive_genotype(dearest, MINI19, {})
    top = predict(profile, free)["latency_ms"].value
    target = BASELINE + 0.6 * (top - BASELINE)
    result = budget_derivation(dearest, MINI19, {}, profile, "latency_ms", target)
    assert result.within_budget and result.swaps
    assert result.cost == pytest.approx(predict(profile, result.genotype)["latency_ms"].value)
    assert result.cost <= target
    # the last switch lands closest under the target: no single cheaper switch of it would be closer
    assert target - result.cost < max(s.saved for s in result.swaps)


def test_budget_derivation_reports_an_unreachable_target() -> None:
    profile = make_profile()
    weights = {t: _one_hot(MINI19, t, lambda j, i, t=t: candidate_ops(t)[-1]) for t in ALL}
    result = budget_derivation(weights, MINI19, {}, profile, "latency_ms", BASELINE - 1)
    assert not result.within_budget
    assert all(op == candidate_ops(t)[0] for t in ALL for node in result.genotype.cell(t) for op, _ in node)
