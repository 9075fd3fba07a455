"""Tables of profiles for people (rich) and for tools (pandas: CSV/JSON). Kept apart from the data."""

from __future__ import annotations

from typing import Any

import pandas as pd
from rich.console import Group
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from casprof.edge_model import shared_input_costs
from casprof.ops import CELL_TYPES, candidate_ops
from casprof.predict import measured_structure_correction
from casprof.profile import Method, Metric, Profile


def profile_frame(profile: Profile) -> pd.DataFrame:
    """One row per (cell type, operation): c_o of each metric with the latency's interval."""
    base_latency = profile.baseline.get(Metric.LATENCY_MS.value)
    rows: list[dict[str, Any]] = []
    for t in CELL_TYPES:
        for op in candidate_ops(t):
            row: dict[str, Any] = {"cell_type": t, "op": op}
            for metric in profile.metrics:
                cost = profile.cost(t, op, metric)
                row[metric] = cost.value
                if metric == Metric.LATENCY_MS.value:
                    lo, hi = cost.interval or (None, None)
                    row["latency_ci95_low"] = lo
                    row["latency_ci95_high"] = hi
                    row["latency_pct_of_baseline"] = (
                        100.0 * cost.value / base_latency.value if base_latency and base_latency.value else None
                    )
                    row["latency_n"] = cost.measurement.n if cost.measurement else None
                    row["interval_includes_zero"] = cost.interval_includes_zero
                    row["noisy"] = bool(cost.measurement and cost.measurement.noise_warning())
                    row["source"] = cost.source
            rows.append(row)
    return pd.DataFrame(rows)


def _hardware_line(profile: Profile) -> str:
    hw = profile.hardware
    target = hw.get("estimated_for")
    if isinstance(target, dict):
        return f"[bold red]ESTIMATED[/] for {target.get('description', profile.device)} (nothing measured)"
    gpus = hw.get("gpus") or []
    cpu = (hw.get("cpu") or {}).get("model", "unknown CPU")
    if gpus:
        return f"GPU {gpus[0].get('name')} (CPU {cpu})"
    return f"CPU {cpu}"


def _roofline_line(details: Any) -> str:
    r = (details or {}).get("roofline") or {}
    if not r:
        return "figures not recorded"
    return (f"{r.get('peak_tflops', 0):.3g} TFLOP/s, {r.get('bandwidth_gbs', 0):.4g} GB/s, "
            f"{r.get('launch_overhead_us', 0):g} us per kernel")


def _fmt(value: float | None, metric: str) -> str:
    if value is None:
        return "-"
    if metric == Metric.LATENCY_MS.value:
        return f"{value:.3f}"
    if metric == Metric.MACS.value:
        return f"{value / 1e9:.3f} G"
    return f"{value / 1e6:.3f} M"


def _shared_input_lines(profile: Profile) -> list[str]:
    """One line per cell type whose ``mixed_inputs`` probe gives the shared input cost R_k (schema 5)
    and one per cell type whose ``derived_identity`` probe anchors its structure (schema 6)."""
    lines = []
    if profile.edge_model is None or Metric.LATENCY_MS.value not in profile.metrics:
        return lines
    for t, cell in profile.edge_model.cells.items():
        for op in cell.mixed_inputs:
            r = shared_input_costs(profile, t, Metric.LATENCY_MS.value)
            lines.append(f"{t} cell: factorized reduces of one input share {r['input0']:.3f} ms per input "
                         f"(mixed_inputs probe with {op}; see casprof.edge_model)")
        if cell.derived_identity:
            lines.append(f"{t} cell: structure measured on a derived-shape identity cell, "
                         f"{measured_structure_correction(profile, t, Metric.LATENCY_MS.value):+.3f} ms "
                         "against the identity probes' model (derived_identity probe; see casprof.edge_model)")
    return lines


#: Runner details that say how the torch runner held the networks, shown on a header line of their own.
_TORCH_DETAILS = (("cpu_allocator", "CPU allocator"), ("memory_format", "memory format"))


def profile_table(profile: Profile) -> Group:
    """A rich renderable: a header panel and the per-operation table."""
    estimated = profile.method is Method.ESTIMATED
    b = profile.backend
    h, w = profile.input_size
    header = [
        f"device [bold]{profile.device}[/] · {_hardware_line(profile)}",
        f"backend {b.name} {b.version} · {b.precision} · {b.device} · threads {b.threads} · timer {b.timer}"
        if not estimated else f"[bold red]roofline estimate[/] (casprof {b.version}) · {b.precision} · {_roofline_line(b.details)}",
        *([" · ".join(f"{label} {b.details[key]}" for key, label in _TORCH_DETAILS if key in b.details)]
          if not estimated and any(key in b.details for key, _ in _TORCH_DETAILS) else []),
        f"network {profile.fingerprint} at {h}x{w} · created {profile.created} · casprof {profile.tool_version}",
    ]
    lat = profile.baseline.get(Metric.LATENCY_MS.value)
    if lat is not None and lat.measurement is not None:
        lo, hi = lat.interval
        header.append(
            f"baseline c'_id: {lat.value:.3f} ms (95% CI {lo:.3f}–{hi:.3f}, n={lat.measurement.n}, "
            f"IQR {lat.measurement.iqr:.3f})"
        )
    elif lat is not None:
        header.append(f"baseline c'_id: {lat.value:.3f} ms (ESTIMATE, not measured)")
    pooled = profile.settings.get("pooled_from")
    if pooled:
        header.append(f"pooled (casprof pool) from {len(pooled)} profiles, {profile.settings.get('rounds')} rounds in all, "
                      f"created {', '.join(str(s.get('created')) for s in pooled)}")
    if profile.calibration is not None:
        header.append(f"calibration: {profile.calibration.summary()}")
    header += _shared_input_lines(profile)
    for m in (Metric.PARAMS.value, Metric.MACS.value):
        if m in profile.baseline:
            header.append(f"baseline {m}: {_fmt(profile.baseline[m].value, m)}")
    title = "[bold red]ESTIMATED PROFILE — not a measurement[/]" if estimated else "[bold]measured cost profile[/]"
    panel = Panel("\n".join(header), title=title, border_style="red" if estimated else "cyan")

    table = Table(show_lines=False, header_style="bold")
    table.add_column("cell")
    table.add_column("operation")
    has_latency = Metric.LATENCY_MS.value in profile.metrics
    if has_latency:
        table.add_column("c_o latency ms" + (" (ESTIMATE)" if estimated else ""), justify="right")
        table.add_column("95% CI", justify="right")
        table.add_column("% of c'_id", justify="right")
    for m in profile.metrics:
        if m != Metric.LATENCY_MS.value:
            table.add_column(f"c_o {m}", justify="right")
    table.add_column("note")
    frame = profile_frame(profile)
    for row in frame.itertuples(index=False):
        cells = [row.cell_type, row.op]
        note = ""
        if has_latency:
            lo, hi = row.latency_ci95_low, row.latency_ci95_high
            cells += [
                _fmt(row.latency_ms, Metric.LATENCY_MS.value) + (" EST" if estimated else ""),
                "-" if lo is None or pd.isna(lo) else f"{lo:.3f} … {hi:.3f}",
                "-" if row.latency_pct_of_baseline is None or pd.isna(row.latency_pct_of_baseline) else f"{row.latency_pct_of_baseline:.1f}%",
            ]
            if row.source == "definition":
                note = "baseline by definition"
            elif row.interval_includes_zero:
                note = "interval includes 0"
            if row.noisy:
                note = (note + "; " if note else "") + "noisy"
        for m in profile.metrics:
            if m != Metric.LATENCY_MS.value:
                cells.append(_fmt(getattr(row, m), m))
        cells.append(note)
        table.add_row(*cells, style="red" if estimated else None)
    parts: list[Any] = [panel, table]
    if profile.warnings:
        parts.append(Text("Warnings:\n" + "\n".join(f"  - {w}" for w in profile.warnings), style="yellow"))
    return Group(*parts)
