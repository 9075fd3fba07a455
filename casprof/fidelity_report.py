"""Writing a fidelity report: JSON, a Markdown table and a scatter plot, each written atomically."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

from casprof._io import atomic_write_bytes, atomic_write_json, atomic_write_text
from casprof.errors import UserInputError
from casprof.fidelity import BLOCK_TIMING, FidelityReport
from casprof.fidelity_metrics import Agreement


def _calibration_text(p: dict[str, Any]) -> str:
    """The profile line's calibration part (reports of schema-3 profiles name no form or factor)."""
    if p.get("calibration_offset_ms") is None:
        return "; not calibrated"
    factor = p.get("calibration_factor")
    if p.get("calibration_form") == "affine" and factor is not None:
        return (f"; affine calibration: offset {p['calibration_offset_ms']:+.2f} ms, factor {factor:.4f} on the "
                f"operations' part, from {p['calibration_networks']} networks")
    return f"; calibration offset {p['calibration_offset_ms']:+.2f} ms from {p['calibration_networks']} networks"


def _corr(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def _row(name: str, a: Agreement) -> str:
    return (f"| {name} | {a.mape:.2f}% | {a.worst:.2f}% | {a.within_5:.0%} | {a.within_10:.0%} | "
            f"{_corr(a.kendall_tau)} | {_corr(a.spearman_rho)} | {a.bias:+.2f}% | {a.spread:.2f}% |")


_HEAD = "| predictor | MAPE | worst | within ±5% | within ±10% | Kendall τ | Spearman ρ | mean error | SD of errors |"
_RULE = "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"


def _interval(ci: tuple[float, float] | None) -> str:
    return "-" if ci is None else f"[{ci[0]:+.2f}, {ci[1]:+.2f}]"


def _structure_lines(report: FidelityReport) -> list[str]:
    """The structure terms of the per-edge model in the profile and timed now, with their effect."""
    if not report.structure:
        return []
    shift = report.structure_shift_pct
    lines = [
        "",
        "Structure terms of the per-edge model (identity probes, c'(probe) − c'_id), timed again in this check's "
        "rounds beside the networks. Every prediction depends on them, so a change here moves all predictions "
        "together. The diagnostic row above predicts with these terms as timed now: where it agrees and the profile "
        "does not, the profile's level is stale (measure the profile again); where both disagree, the model is off."
        + ("" if shift is None else f" Mean change of the predictions with the terms timed now: {shift:+.2f} %."),
        "",
        "| probe | profile ms | 95% interval | now ms | 95% interval | change ms |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for t in report.structure:
        lines.append(f"| {t.probe.key} | {t.profile.value:+.2f} | {_interval(t.profile.interval)} | {t.now.value:+.2f} | "
                     f"{_interval(t.now.interval)} | {t.change_ms:+.2f} |")
    return lines


def report_markdown(report: FidelityReport) -> str:
    """The summary table and the per-network table, in Markdown."""
    p, s = report.profile, report.settings
    h, w = p["resolution"]
    where = f"GPU {p['gpus'][0]}" if p["gpus"] else f"CPU {p['cpu']}"
    ratio = report.mape_to_retest
    lines = [
        f"# casprof fidelity: {p['device']} / {p['backend']} {p['backend_version']} / {p['precision']} at {h}x{w}",
        "",
        f"- profile: `{report.profile_path}` (network {p['network']}, hardware {p['hardware_digest']}, {where}, "
        f"{p['threads']} threads"
        + (f"; CPU allocator {p['cpu_allocator']}, memory format {p['memory_format']}" if "memory_format" in p else "")
        + f"; per-edge model: {p['schema_edge_model']}"
        + _calibration_text(p) + ")",
        f"- networks: {s['samples']} random genotypes (seed {s['seed']})"
        + (" + all-cheapest + all-most-expensive" if s["extremes"] else "")
        + f"; each timed {s['rounds']} times in interleaved rounds"
        + (f" spread over {s['sweeps']} sweeps over all blocks (new instances in each)" if s.get("sweeps", 1) > 1 else "")
        + f", alternating between {s['instances']} instances, "
        f"every run bracketed by runs of the profile's baseline network ({s.get('baseline_instances', 1)} instances, rotated"
        + (", opened once per sweep" if s.get("baseline_instances_opened") == BLOCK_TIMING["baseline_instances_opened"]
           else "") + ")"
        + ("; the blocks in a seeded order, reversed in every other sweep" if "block_order" in s else ""),
        "- measured = anchored, as the profile measures c_o: c'_id of the profile + median over rounds of (network time − "
        "mean of the two baseline runs around it); m1, m2 = the same per instance (two independent measurements)",
        *([f"- baseline network now {report.baseline_now_ms:.2f} ms vs c'_id {report.baseline_profile_ms:.2f} ms in the "
           f"profile ({report.baseline_drift_pct:+.1f} %: the machine's speed change since the profile; anchoring removes it from "
           f"the baseline's part, not from the operations' costs, whose level shift shows as the mean error)"]
          if report.baseline_drift_pct is not None else []),
        f"- wall time {report.seconds:.0f} s · {report.created}"
        + (f" (resumed after an interruption: {s['resumed_block_sweeps']} block sweep(s) timed before it, with their own "
           "instances)" if s.get("resumed_block_sweeps") else ""),
        *(f"- **Warning:** {w}" for w in report.warnings),
        "",
        _HEAD,
        _RULE,
        _row("profile (c'_id + Σ edge costs)", report.profile_agreement),
        *([_row("same profile, uniform share c_o / E (schema-1 model)", report.uniform_agreement)]
          if report.uniform_agreement is not None else []),
        *([_row("same profile without its calibration", report.uncalibrated_agreement)]
          if report.uncalibrated_agreement is not None else []),
        *([_row("diagnostic: same profile, structure terms timed now", report.structure_agreement)]
          if report.structure_agreement is not None else []),
        _row("MACs, linear fit", report.macs_agreement),
        _row("parameters, linear fit", report.params_agreement),
        "",
        f"Test-retest error (mean |m1 − m2| / mean(m1, m2)): {report.retest_pct:.2f}%; "
        f"MAPE / test-retest: {'-' if ratio is None else f'{ratio:.2f}'}.",
        *([f"Test-retest Kendall τ (m1 against m2, each from half the runs): {report.retest_tau:.3f}, beside the profile's "
           f"{_corr(report.profile_agreement.kendall_tau)}: a profile cannot rank the networks much better than the measurement "
           "ranks them against itself."] if report.retest_tau is not None else []),
        *(["",
           "Raw, for comparison (median of the absolute times, not anchored; includes the machine's speed changes):",
           "",
           _HEAD,
           _RULE,
           _row("profile vs raw times", report.raw_agreement),
           *([_row("profile vs ratio-anchored times", report.ratio_agreement)] if report.ratio_agreement is not None else []),
           "",
           f"Raw test-retest error: {report.raw_retest_pct:.2f}%."
           + (" Ratio-anchored: c'_id × median of (time / mean of the two baseline runs around it), as if the machine's "
              "speed change since the profile had scaled the operations as much as the baseline network (the anchored "
              "measure assumes it did not touch them); a diagnostic of the drift's kind, not the check's measure."
              if report.ratio_agreement is not None else "")]
          if report.raw_agreement is not None and report.raw_retest_pct is not None else []),
        *_structure_lines(report),
        "",
        "| network | predicted ms | measured ms | error | m1 ms | m2 ms | raw ms | GMACs | M params |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for n in report.networks:
        raw = "-" if n.raw_ms is None else f"{n.raw_ms:.2f}"
        lines.append(f"| {n.name} | {n.predicted_ms:.2f} | {n.measured_ms:.2f} | {n.error_pct:+.2f}% | "
                     f"{n.first_ms:.2f} | {n.second_ms:.2f} | {raw} | {n.macs / 1e9:.3f} | {n.params / 1e6:.3f} |")
    return "\n".join(lines) + "\n"


def scatter_png(report: FidelityReport) -> bytes:
    """Predicted against measured latency with the identity line and its ±5% band, as PNG bytes."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    measured = [n.measured_ms for n in report.networks]
    predicted = [n.predicted_ms for n in report.networks]
    lo, hi = min(measured + predicted) * 0.9, max(measured + predicted) * 1.1
    fig, ax = plt.subplots(figsize=(5.5, 5.0), dpi=110)
    try:
        xs = [lo, hi]
        ax.fill_between(xs, [x * 0.95 for x in xs], [x * 1.05 for x in xs], color="tab:green", alpha=0.15, label="±5%")
        ax.plot(xs, xs, color="tab:green", linewidth=1)
        ax.scatter(measured, predicted, s=18, color="tab:blue", label="derived networks")
        ax.set_xlim(lo, hi)
        ax.set_ylim(lo, hi)
        ax.set_xlabel("measured latency (ms)")
        ax.set_ylabel("predicted latency (ms)")
        a = report.profile_agreement
        p = report.profile
        ax.set_title(f"{p['device']} / {p['backend']}: MAPE {a.mape:.1f}%, τ {_corr(a.kendall_tau)}", fontsize=10)
        ax.legend(loc="upper left", fontsize=8)
        buf = io.BytesIO()
        fig.tight_layout()
        fig.savefig(buf, format="png")
        return buf.getvalue()
    finally:
        plt.close(fig)


def write_report(report: FidelityReport, folder: Path, stem: str = "fidelity") -> dict[str, Path]:
    """Write ``<stem>.json``, ``<stem>.md`` and ``<stem>.png`` into an existing ``folder``.

    Everything is rendered before the first file is written, and each file is written atomically.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise UserInputError(f"The report folder {folder} does not exist.")
    md, png = report_markdown(report), scatter_png(report)
    paths = {ext: folder / f"{stem}.{ext}" for ext in ("json", "md", "png")}
    atomic_write_json(paths["json"], report.to_dict())
    atomic_write_text(paths["md"], md)
    atomic_write_bytes(paths["png"], png)
    return paths
