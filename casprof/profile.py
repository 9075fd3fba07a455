"""Cost profiles (DESIGN §3): one versioned, fingerprinted JSON file per device and backend.

``costs[cell_type][op][metric]`` holds c_o = c'_o - c'_id. A measured latency keeps the raw
paired-difference samples (one per measurement round) and the probe's absolute samples, with
their median, spread and bootstrap interval; ``params`` and ``macs`` are exact counts. An
interval that includes zero is kept as it is, never clamped.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

from casprof import __version__
from casprof._io import atomic_write_json, check_schema_version, read_json_file
from casprof.config import NetworkConfig
from casprof.errors import UserInputError
from casprof.ops import CELL_TYPES, candidate_ops
from casprof.stats import Measurement

if TYPE_CHECKING:  # pragma: no cover
    from casprof.calibration import Calibration
    from casprof.edge_model import EdgeModel

#: 2 added the optional ``edge_model`` block (casprof.edge_model); version-1 files still load
#: (without it, every edge of a cell type costs the uniform share c_o / E).
#: 3 added the optional ``calibration`` block (casprof.calibration: a latency offset measured on
#: derived networks); version-1 and -2 files still load (no offset).
#: 4 let the calibration be affine (an offset plus a factor on the operations' part, fitted with
#: networks leaning to the cheapest and costliest operations); a version-3 block loads as an offset.
#: 5 added the reduction cell's optional ``edge_model.reduce.mixed_inputs`` probe (the cost that the
#: factorized reduces of one input share, see casprof.edge_model); older files load without it.
#: 6 added the optional ``edge_model.<cell>.derived_identity`` probes (an identity cell of a derived cell's
#: shape, measured; casprof.edge_model): older files load without them and predict as before.
PROFILE_SCHEMA_VERSION = 6


class Metric(str, enum.Enum):
    LATENCY_MS = "latency_ms"
    PARAMS = "params"
    MACS = "macs"

    @property
    def unit(self) -> str:
        return {"latency_ms": "ms", "params": "parameters", "macs": "MACs"}[self.value]


class Method(str, enum.Enum):
    MEASURED = "measured"
    ESTIMATED = "estimated"


@dataclass(frozen=True)
class CostValue:
    """One cost: its value, and for a measured latency the samples it came from.

    Args:
        value: the headline figure (the median for a measurement, the count for an exact metric).
        measurement: paired-difference samples (c_o) or raw samples (c'_id); ``None`` when exact
            or estimated.
        absolute: for c_o, the probe network's own samples c'_o.
        source: ``measured``, ``exact`` (a count), ``definition`` (identity: zero by definition)
            or ``estimated``.
    """

    value: float
    measurement: Measurement | None = None
    absolute: Measurement | None = None
    source: str = "exact"

    @classmethod
    def measured(cls, diff: Measurement, absolute: Measurement | None = None) -> CostValue:
        return cls(diff.median, diff, absolute, "measured")

    @property
    def interval(self) -> tuple[float, float] | None:
        return None if self.measurement is None else self.measurement.ci95

    @property
    def interval_includes_zero(self) -> bool:
        return self.measurement is not None and self.measurement.interval_includes_zero

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"value": self.value, "source": self.source}
        if self.measurement is not None:
            m = self.measurement.to_dict()
            d.update(
                median=m["median"],
                ci95=m["ci95"],
                iqr=m["iqr"],
                mad=m["mad"],
                n=m["n"],
                interval_includes_zero=self.measurement.interval_includes_zero,
                noise_warning=m["noise_warning"],
                samples=m["samples"],
            )
        if self.absolute is not None:
            d["absolute"] = {
                "median": self.absolute.median,
                "ci95": list(self.absolute.ci95),
                "samples": list(self.absolute.samples),
            }
        return d

    @classmethod
    def from_dict(cls, d: Any, where: str) -> CostValue:
        if not isinstance(d, Mapping) or "value" not in d:
            raise UserInputError(f"The profile entry {where} has no value.")
        value = d["value"]
        if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value):
            raise UserInputError(f"The profile entry {where} has a non-numeric value {value!r}.")
        try:
            measurement = Measurement.from_dict({"samples": d["samples"]}) if "samples" in d else None
            absolute = Measurement.from_dict(d["absolute"]) if "absolute" in d else None
        except (ValueError, TypeError, KeyError) as exc:
            raise UserInputError(f"The profile entry {where} has malformed samples ({exc}).") from None
        source = str(d.get("source", "measured" if measurement else "exact"))
        if measurement is not None and not math.isclose(measurement.median, value, rel_tol=1e-9, abs_tol=1e-12):
            raise UserInputError(f"The profile entry {where} has a value that is not the median of its samples.")
        return cls(float(value), measurement, absolute, source)


@dataclass(frozen=True)
class BackendRecord:
    """Which backend measured the latencies, and how."""

    name: str
    version: str
    precision: str
    device: str
    threads: int | None = None
    timer: str | None = None
    details: Mapping[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "version": self.version,
            "precision": self.precision,
            "device": self.device,
            "threads": self.threads,
            "timer": self.timer,
            "details": dict(self.details),
        }

    @classmethod
    def from_dict(cls, d: Any) -> BackendRecord:
        if not isinstance(d, Mapping) or not {"name", "version", "precision", "device"} <= set(d):
            raise UserInputError("The profile's backend block needs name, version, precision and device.")
        return cls(
            name=str(d["name"]),
            version=str(d["version"]),
            precision=str(d["precision"]),
            device=str(d["device"]),
            threads=d.get("threads"),
            timer=d.get("timer"),
            details=dict(d.get("details") or {}),
        )


CostTable = Mapping[str, Mapping[str, Mapping[str, CostValue]]]


@dataclass(frozen=True)
class Profile:
    """A cost profile: c'_id and c_o for every cell type, operation and metric."""

    device: str
    hardware: Mapping[str, Any]
    backend: BackendRecord
    method: Method
    network: NetworkConfig
    input_size: tuple[int, int]
    baseline: Mapping[str, CostValue]
    costs: CostTable
    settings: Mapping[str, Any] = field(default_factory=dict)
    created: str = field(default_factory=lambda: datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"))
    tool_version: str = __version__
    warnings: tuple[str, ...] = ()
    edge_model: EdgeModel | None = None
    calibration: Calibration | None = None
    #: the schema_version of the file it was read from (files are written at the current one)
    read_schema_version: int = PROFILE_SCHEMA_VERSION

    # --- queries --------------------------------------------------------------------------
    @property
    def metrics(self) -> tuple[str, ...]:
        return tuple(self.baseline)

    @property
    def fingerprint(self) -> str:
        """The network fingerprint the profile was made for."""
        return self.network.fingerprint()

    def cost(self, cell_type: str, op: str, metric: str) -> CostValue:
        return self.costs[cell_type][op][metric]

    def edge_share(self, cell_type: str, op: str, metric: str) -> float:
        """The uniform share c_o / E: c_o divided by the edges of a probe cell (schema-1 model)."""
        return self.cost(cell_type, op, metric).value / self.network.edges_per_cell(cell_type)

    def require_network(self, config: NetworkConfig) -> None:
        """Refuse a profile made for another network, saying what differs."""
        if self.fingerprint == config.fingerprint():
            return
        mine, theirs = self.network.to_dict(), config.to_dict()
        diffs = [f"{k} {mine.get(k)!r} vs {theirs.get(k)!r}" for k in sorted(set(mine) | set(theirs)) if mine.get(k) != theirs.get(k)]
        detail = "; ".join(diffs) if diffs else "another skeleton version or operation set"
        raise UserInputError(
            f"The profile was made for network {self.fingerprint}, not {config.fingerprint()} (profile vs expected: {detail})."
        )

    # --- serialisation --------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return {
            "schema_version": PROFILE_SCHEMA_VERSION,
            "tool": {"name": "casprof", "version": self.tool_version},
            "created": self.created,
            "device": self.device,
            "hardware": dict(self.hardware),
            "backend": self.backend.to_dict(),
            "method": self.method.value,
            "network": self.network.network_block(self.input_size),
            "settings": dict(self.settings),
            "warnings": list(self.warnings),
            "baseline": {m: v.to_dict() for m, v in self.baseline.items()},
            "costs": {
                t: {op: {m: v.to_dict() for m, v in metrics.items()} for op, metrics in ops.items()}
                for t, ops in self.costs.items()
            },
            **({"edge_model": self.edge_model.to_dict()} if self.edge_model is not None else {}),
            **({"calibration": self.calibration.to_dict()} if self.calibration is not None else {}),
        }

    def save(self, path: Path) -> None:
        atomic_write_json(Path(path), self.to_dict())

    @classmethod
    def from_dict(cls, d: Any) -> Profile:
        return _parse_guarded(d, "The profile")

    @classmethod
    def load(cls, path: Path) -> Profile:
        return _parse_guarded(read_json_file(Path(path), "profile"), f"The profile {path}")


def _parse_guarded(d: Any, what: str) -> Profile:
    """:func:`_parse_profile`, with a wrong type or value anywhere that it does not check by name
    (a string where a number belongs, a list where an object does) one sentence, not a traceback."""
    try:
        return _parse_profile(d)
    except (TypeError, ValueError, AttributeError, KeyError, IndexError, OverflowError) as exc:
        raise UserInputError(f"{what} is malformed ({type(exc).__name__}: {exc}); it was edited by hand or written "
                             "by another tool.") from None


def _require(d: Mapping[str, Any], keys: tuple[str, ...]) -> None:
    missing = [k for k in keys if k not in d]
    if missing:
        raise UserInputError(f"The profile is missing the field(s) {', '.join(missing)}.")


def _parse_profile(d: Any) -> Profile:
    if not isinstance(d, Mapping):
        raise UserInputError("A profile must be a JSON object.")
    version = check_schema_version(d, "profile", PROFILE_SCHEMA_VERSION)
    _require(d, ("device", "hardware", "backend", "method", "network", "baseline", "costs"))
    try:
        method = Method(d["method"])
    except ValueError:
        raise UserInputError(f"The profile's method {d['method']!r} is neither 'measured' nor 'estimated'.") from None
    network_block = d["network"]
    config = NetworkConfig.from_dict(network_block)
    recorded = network_block.get("fingerprint")
    if recorded != config.fingerprint():
        raise UserInputError(
            f"The profile's network fingerprint {recorded} does not match its configuration ({config.fingerprint()}); "
            "it was made by another skeleton version or edited by hand."
        )
    size = network_block.get("input_size")
    if not (isinstance(size, list) and len(size) == 2 and all(isinstance(v, int) and v > 0 for v in size)):
        raise UserInputError("The profile's network block has no valid input_size [H, W].")
    try:
        config.check_resolution(size[0], size[1])
    except UserInputError as exc:
        raise UserInputError(f"The profile's input_size {size[0]}x{size[1]} does not fit its network: {exc}") from None
    if not isinstance(d["baseline"], Mapping) or not d["baseline"]:
        raise UserInputError("The profile's baseline block is empty.")
    metrics = tuple(d["baseline"])
    for m in metrics:
        try:
            Metric(m)
        except ValueError:
            raise UserInputError(f"The profile names the unknown metric {m!r}.") from None
    baseline = {m: CostValue.from_dict(v, f"baseline.{m}") for m, v in d["baseline"].items()}
    costs_raw = d["costs"]
    if not isinstance(costs_raw, Mapping):
        raise UserInputError("The profile's costs block must be an object.")
    costs: dict[str, dict[str, dict[str, CostValue]]] = {}
    for t in CELL_TYPES:
        if t not in costs_raw:
            raise UserInputError(f"The profile has no costs for the {t!r} cell.")
        costs[t] = {}
        for op in candidate_ops(t):
            entry = costs_raw[t].get(op) if isinstance(costs_raw[t], Mapping) else None
            if not isinstance(entry, Mapping):
                raise UserInputError(f"The profile has no cost for the {t!r} operation {op!r}.")
            missing = [m for m in metrics if m not in entry]
            if missing:
                raise UserInputError(f"The profile's {t}/{op} entry lacks the metric(s) {', '.join(missing)}.")
            costs[t][op] = {m: CostValue.from_dict(entry[m], f"costs.{t}.{op}.{m}") for m in metrics}
        extra = sorted(set(costs_raw[t]) - set(candidate_ops(t)))
        if extra:
            raise UserInputError(f"The profile's {t!r} cell names unknown operation(s) {', '.join(extra)}.")
    edge_model = None
    if d.get("edge_model") is not None:
        from casprof.edge_model import EdgeModel

        edge_model = EdgeModel.from_dict(d["edge_model"], config, metrics)
    calibration = None
    if d.get("calibration") is not None:
        from casprof.calibration import Calibration

        if Metric.LATENCY_MS.value not in metrics:
            raise UserInputError("The profile has a calibration block but no latency_ms metric to calibrate.")
        calibration = Calibration.from_dict(d["calibration"])
    hardware = d["hardware"]
    if not isinstance(hardware, Mapping):
        raise UserInputError("The profile's hardware block must be an object.")
    _check_hardware_digest(hardware)
    tool, settings, warnings = d.get("tool") or {}, d.get("settings") or {}, d.get("warnings") or []
    if not isinstance(tool, Mapping) or not isinstance(settings, Mapping):
        raise UserInputError("The profile's tool and settings blocks must be objects.")
    if not isinstance(warnings, list):
        raise UserInputError("The profile's warnings must be a list.")
    pooled = settings.get("pooled_from")
    if pooled is not None and not (isinstance(pooled, list) and all(isinstance(s, Mapping) for s in pooled)):
        raise UserInputError("The profile's settings.pooled_from must be a list of objects, one per pooled profile.")
    details = d["backend"].get("details") if isinstance(d["backend"], Mapping) else None
    roofline = details.get("roofline") if isinstance(details, Mapping) else None
    if roofline is not None and not (isinstance(roofline, Mapping) and all(
            isinstance(roofline.get(k, 0), (int, float)) and not isinstance(roofline.get(k), bool)
            for k in ("peak_tflops", "bandwidth_gbs", "launch_overhead_us"))):
        raise UserInputError("The profile's backend.details.roofline must be an object whose peak_tflops, "
                             "bandwidth_gbs and launch_overhead_us are numbers.")
    backend = BackendRecord.from_dict(d["backend"])
    if method is Method.MEASURED:
        _check_measured_backend(backend, settings)
    return Profile(
        device=str(d["device"]),
        hardware=dict(hardware),
        backend=backend,
        method=method,
        network=config,
        input_size=(size[0], size[1]),
        baseline=baseline,
        costs=costs,
        settings=dict(settings),
        created=str(d.get("created", "")),
        tool_version=str(tool.get("version", "unknown")),
        warnings=tuple(str(w) for w in warnings),
        edge_model=edge_model,
        calibration=calibration,
        read_schema_version=version,
    )


def _check_measured_backend(backend: BackendRecord, settings: Mapping[str, Any]) -> None:
    """Refuse a measured profile whose backend block names no backend, precision or thread count
    this toolkit measures with, or disagrees with its settings (a hand edit: a check or a
    fidelity run would otherwise time another backend than the one the block names)."""
    from casprof.backends.base import Backend, Precision

    known = {b.value for b in Backend}
    if backend.name not in known:
        raise UserInputError(f"The profile's backend {backend.name!r} is none of {', '.join(sorted(known))}.")
    if backend.precision not in {p.value for p in Precision}:
        raise UserInputError(f"The profile's precision {backend.precision!r} is neither fp32 nor fp16.")
    threads = backend.threads
    if threads is not None and (not isinstance(threads, int) or isinstance(threads, bool) or threads < 1):
        raise UserInputError(f"The profile's backend threads {threads!r} is not a positive whole number.")
    for key, value in (("backend", backend.name), ("precision", backend.precision)):
        recorded = settings.get(key)
        if recorded is not None and recorded != value:
            raise UserInputError(
                f"The profile's settings.{key} {recorded!r} disagrees with its backend block ({value!r}); "
                "it was edited by hand."
            )


def _check_hardware_digest(hardware: Mapping[str, Any]) -> None:
    """A hardware block that names a CPU or GPUs must be well formed, and a recorded digest must
    match the block it summarises."""
    if "cpu" not in hardware and "gpus" not in hardware:
        return
    from casprof.hardware import HardwareFingerprint

    fingerprint = HardwareFingerprint.from_dict(hardware)
    recorded = hardware.get("digest")
    if recorded is None or "cpu" not in hardware:
        return
    actual = fingerprint.digest()
    if actual != recorded:
        raise UserInputError(
            f"The profile's hardware digest {recorded} does not match its hardware block ({actual}); it was edited by hand."
        )
