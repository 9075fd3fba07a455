"""Pool the raw samples of several measured profiles of one network, machine and backend.

A profile keeps every sample it was computed from: per probe the paired differences
(probe time - mean of the two baseline runs around it) and the probe's own times, and every
baseline run. Profiles measured under the same conditions (device, hardware, backend and its
version, precision, threads, input size, exporter, thread pool, allocator) at different times can
therefore be pooled: each cost becomes the median of all the profiles' paired differences, with
its bootstrap interval, exactly as if the rounds had been measured in one run. Pooling runs made
at different hours of the day averages the machine's slow changes of speed into the costs instead
of freezing one hour's state into them, and narrows every interval by about the square root of the
number of runs.

What may differ between the sources: the number of rounds, sweeps and instances, the seeds and the
warm-up (how much was measured, not what). A calibration is not carried over: it was fitted to one
source's predictions, which pooling changes; ``casprof calibrate`` fits one for the pooled profile.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime, timezone
from typing import Any

from casprof import __version__
from casprof.compare import condition_differences
from casprof.edge_model import CellEdgeModel, EdgeModel
from casprof.errors import UserInputError
from casprof.probes import Probe, Variant
from casprof.profile import CostValue, Method, Metric, Profile
from casprof.stats import Measurement

#: Settings that say how much was measured, not under which conditions; sources may differ in them.
AMOUNT_SETTINGS = ("rounds", "sweeps", "instances", "baseline_instances", "warmup_iters", "warmup_passes", "seed")


def _pooled(values: Sequence[CostValue], where: str) -> CostValue:
    """One cost from the same cost of every source: samples concatenated, or the shared exact value."""
    first = values[0]
    if first.measurement is None:
        if any(v.measurement is not None or v.value != first.value for v in values[1:]):
            raise UserInputError(f"The profiles disagree on the exact value of {where}, so they are not of one network.")
        return first
    if any(v.measurement is None for v in values[1:]):
        raise UserInputError(f"{where} is measured in one profile and not in another.")
    diff = Measurement(tuple(s for v in values for s in v.measurement.samples), first.measurement.unit)  # type: ignore[union-attr]
    absolute = None
    if all(v.absolute is not None for v in values):
        absolute = Measurement(tuple(s for v in values for s in v.absolute.samples), first.absolute.unit)  # type: ignore[union-attr]
    return CostValue.measured(diff, absolute)


#: Pools one probe's costs from every source (all its metrics), keyed like ``casprof measure``'s probes.
PoolProbe = Callable[[Sequence[Mapping[str, CostValue]], str], dict[str, CostValue]]


def _pooled_edge_model(profiles: Sequence[Profile], pool: PoolProbe) -> EdgeModel | None:
    models = [p.edge_model for p in profiles]
    if all(m is None for m in models):
        return None
    if any(m is None for m in models) or len({tuple(sorted(m.cells)) for m in models}) != 1:  # type: ignore[union-attr]
        raise UserInputError("The profiles do not all measure the same per-edge model (one is an older schema-1 profile).")
    cells = {}
    for t, first in models[0].cells.items():  # type: ignore[union-attr]
        same = [m.cells[t] for m in models]  # type: ignore[union-attr]
        if len({tuple(sorted(c.input_edges)) for c in same}) != 1:
            raise UserInputError(f"The profiles' edge models of the {t} cell measure different input-edge probes.")
        if len({tuple(sorted(c.mixed_inputs)) for c in same}) != 1:
            raise UserInputError(f"The profiles' edge models of the {t} cell differ in the mixed_inputs probe "
                                 "(an older profile has none): pool profiles of one schema.")
        if len({bool(c.derived_identity) for c in same}) != 1:
            raise UserInputError(f"The profiles' edge models of the {t} cell differ in the derived_identity probe "
                                 "(an older profile has none): pool profiles of one schema.")
        cells[t] = CellEdgeModel(
            inputs_only=pool([c.inputs_only for c in same], Probe(t, "identity", Variant.INPUTS_ONLY).key),
            rest_on_input0=pool([c.rest_on_input0 for c in same], Probe(t, "identity", Variant.REST_ON_INPUT0).key),
            rest_on_input1=pool([c.rest_on_input1 for c in same], Probe(t, "identity", Variant.REST_ON_INPUT1).key),
            input_edges={op: pool([c.input_edges[op] for c in same], Probe(t, op, Variant.INPUT_EDGES).key)
                         for op in first.input_edges},
            mixed_inputs={op: pool([c.mixed_inputs[op] for c in same], Probe(t, op, Variant.MIXED_INPUTS).key)
                          for op in first.mixed_inputs},
            derived_identity=pool([c.derived_identity for c in same], Probe(t, "identity", Variant.DERIVED_IDENTITY).key)
            if first.derived_identity else {},
        )
    return EdgeModel(cells)


def _source_record(p: Profile) -> dict[str, Any]:
    return {"created": p.created, "tool_version": p.tool_version, **{k: p.settings.get(k) for k in AMOUNT_SETTINGS},
            "baseline_latency_ms": p.baseline["latency_ms"].value, "calibrated": p.calibration is not None,
            **({"pooled_from": p.settings["pooled_from"]} if "pooled_from" in p.settings else {})}


def merge_profiles(profiles: Sequence[Profile]) -> Profile:
    """The profile of all ``profiles``' samples pooled (see the module docstring).

    Raises:
        UserInputError: fewer than two profiles, an estimated one, or sources that differ in a
            measurement condition, the network or the metrics (the sentence names what differs).
    """
    if len(profiles) < 2:
        raise UserInputError(f"Pooling needs at least two profiles, got {len(profiles)}.")
    estimated = [i + 1 for i, p in enumerate(profiles) if p.method is not Method.MEASURED]
    if estimated:
        raise UserInputError(f"Profile {estimated[0]} is an estimate; only measured profiles have samples to pool.")
    for i, p in enumerate(profiles, start=1):
        if Metric.LATENCY_MS.value not in p.metrics:
            raise UserInputError(f"Profile {i} has no latency_ms metric; pooling pools measured latencies.")
        rounds = p.settings.get("rounds")
        if not isinstance(rounds, int) or isinstance(rounds, bool) or rounds < 1:
            raise UserInputError(f"Profile {i} records {rounds!r} rounds in its settings, not a positive whole number.")
    first = profiles[0]
    amount = set(AMOUNT_SETTINGS)
    for i, p in enumerate(profiles[1:], start=2):
        differences = [d for d in condition_differences(first, p) if d.split(":", 1)[0] not in amount]
        if first.fingerprint != p.fingerprint:
            differences.insert(0, f"network: {first.fingerprint} → {p.fingerprint}")
        if differences:
            raise UserInputError(f"Profile {i} was not measured under the conditions of profile 1 ({'; '.join(differences)}).")
        for j, q in enumerate(profiles[: i - 1], start=1):
            if q.baseline["latency_ms"].measurement == p.baseline["latency_ms"].measurement:
                raise UserInputError(f"Profiles {j} and {i} are the same measurement (created {p.created}); pooling it twice "
                                     "would count its samples twice.")
        if p.metrics != first.metrics:
            raise UserInputError(f"Profile {i} has the metrics {', '.join(p.metrics)}, profile 1 {', '.join(first.metrics)}.")
    warnings: list[str] = []

    def pool(sources: Sequence[Mapping[str, CostValue]], key: str) -> dict[str, CostValue]:
        """One probe's metrics pooled; its noise warning recorded as ``casprof measure`` records it."""
        pooled = {m: _pooled([s[m] for s in sources], f"{key} ({m})") for m in sources[0]}
        latency = pooled[Metric.LATENCY_MS.value].measurement
        note = latency.noise_warning() if latency is not None else None
        if note:
            warnings.append(f"{key}: {note}")
        return pooled

    baseline = {m: _pooled([p.baseline[m] for p in profiles], f"the baseline c'_id ({m})") for m in first.metrics}
    costs = {t: {op: pool([p.costs[t][op] for p in profiles], Probe(t, op).key) for op in ops} for t, ops in first.costs.items()}
    edge_model = _pooled_edge_model(profiles, pool)
    # Profile 1's settings, with the rounds of all sources; each source's own amounts in pooled_from.
    settings = {k: v for k, v in first.settings.items() if k not in ("phase_seconds", "build_cache", "build_workers")}
    settings["rounds"] = sum(p.settings["rounds"] for p in profiles)  # whole numbers, checked above
    settings["pooled_from"] = [_source_record(p) for p in profiles]
    return dataclasses.replace(
        first,
        baseline=baseline,
        costs=costs,
        edge_model=edge_model,
        calibration=None,
        settings=settings,
        created=datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        tool_version=__version__,
        warnings=tuple(warnings),
    )
