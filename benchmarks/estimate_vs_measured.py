"""Benchmark: how well the roofline estimator ranks operations, against every measured profile we have.

For each measured profile (default: every measured profile under ``profiles/``) the estimator is
run for the same network, resolution and precision, with figures for the device that made it. A
CPU profile gets a short MEASURED calibration of this machine's attainable fp32 rate (1024x1024
``torch.mm``) and copy bandwidth at the profile's thread count (the generic ``cpu`` registry entry
has no spec figures), so it is compared only on the machine that made it; comparisons of CPU profiles
made on other machines are carried over from the previous results file (with the date and machine
of their calibration) as long as the profile is unchanged, so the results cover every measured
profile although no one machine can compute them all. A GPU profile gets the
registry's spec-sheet figures of its device (``casprof devices``) in its precision, exactly what
``casprof measure --device NAME --estimate`` uses for a GPU that is not here, so it is compared
anywhere. The estimated c_o of every operation (29: all but ``identity``) is compared with the
measured c_o by Kendall tau and Spearman rho, overall and per cell type, and beside it the
ranking that the operations' MAC counts alone would give.

Run: ``python benchmarks/estimate_vs_measured.py [--profiles P ...] [--fresh]`` (``--fresh``: carry nothing over).
Writes ``benchmarks/results/estimate_vs_measured.{json,md}`` and prints the Markdown.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

from scipy import stats

from casprof._io import atomic_write_json, atomic_write_text
from casprof.devices import DeviceKind, get_device
from casprof.estimate import Roofline, calibrate_cpu, estimate_probe_ms
from casprof.hardware import HardwareFingerprint, detect_hardware
from casprof.ops import CELL_TYPES
from casprof.probes import BASELINE, measured_probes
from casprof.profile import Method, Metric, Profile

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"


def _ranks(x: list[float], y: list[float]) -> dict[str, float]:
    return {"kendall_tau": float(stats.kendalltau(x, y).statistic), "spearman_rho": float(stats.spearmanr(x, y).statistic),
            "n": len(x)}


def is_gpu_profile(profile: Profile) -> bool:
    return profile.backend.device.startswith("cuda")


def roofline_for(profile: Profile) -> Roofline:
    """Spec-sheet figures for a GPU profile's registry device; a measured calibration for a CPU profile."""
    if is_gpu_profile(profile):
        spec = get_device(profile.device)
        if spec.kind is not DeviceKind.CUDA or spec.is_generic:
            raise SystemExit(f"{profile.device}: a GPU profile needs a named registry device with spec-sheet figures")
        return Roofline.from_device(spec, profile.backend.precision)
    return calibrate_cpu(int(profile.backend.threads or 1))


def _here(hw: HardwareFingerprint) -> dict[str, Any]:
    """Where and when a comparison is made: now, on ``hw``."""
    return {"date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "cpu": hw.cpu.model, "hardware_digest": hw.digest()}


def carried_over(previous: dict[str, Any], skipped: dict[str, Profile]) -> list[dict[str, Any]]:
    """The previous report's comparisons of the ``skipped`` profiles (CPU profiles of other machines, by
    path), each kept only if that profile is still the one compared (same creation time, or for older
    reports without it the same measured c'_id and c_o), with the machine and date of its comparison."""
    kept = []
    for c in previous.get("comparisons", []):
        profile = skipped.get(c["profile"])
        if profile is None:
            continue
        if "profile_created" in c:
            same = c["profile_created"] == profile.created
        else:
            same = abs(c["measured_baseline_ms"] - profile.baseline[Metric.LATENCY_MS.value].value) < 1e-9 and all(
                abs(r["measured_ms"] - profile.cost(r["cell_type"], r["op"], Metric.LATENCY_MS.value).value) < 1e-9
                for r in c["rows"])
        if same:
            where = c.get("compared_on") or {k: previous[k] for k in ("date", "cpu", "hardware_digest")}
            kept.append(c | {"compared_on": where})
    return kept


def compare(profile: Profile, path: Path, hw: HardwareFingerprint) -> dict[str, Any]:
    """Estimated against measured c_o of one profile (latency), with MACs as a reference ranking."""
    threads = int(profile.backend.threads or 1)
    roofline = roofline_for(profile)
    start = time.perf_counter()
    base = estimate_probe_ms(profile.network, BASELINE, profile.input_size, roofline)
    rows = []
    for probe in measured_probes():
        est = estimate_probe_ms(profile.network, probe, profile.input_size, roofline) - base
        rows.append({
            "cell_type": probe.cell_type,
            "op": probe.op,
            "measured_ms": profile.cost(probe.cell_type, probe.op, Metric.LATENCY_MS.value).value,
            "estimated_ms": est,
            "macs": profile.cost(probe.cell_type, probe.op, Metric.MACS.value).value,
        })
    seconds = time.perf_counter() - start

    def figures(subset: list[dict[str, Any]]) -> dict[str, Any]:
        measured = [r["measured_ms"] for r in subset]
        return {"estimate": _ranks([r["estimated_ms"] for r in subset], measured),
                "macs": _ranks([r["macs"] for r in subset], measured)}

    return {
        "profile": _display_path(path),
        "profile_created": profile.created,
        "compared_on": _here(hw),
        "device": profile.device,
        "gpu": [g.get("name") for g in profile.hardware.get("gpus") or []] if is_gpu_profile(profile) else [],
        "backend": profile.backend.name,
        "backend_version": profile.backend.version,
        "precision": profile.backend.precision,
        "threads": threads,
        "resolution": list(profile.input_size),
        "hardware_digest": profile.hardware.get("digest"),
        "measured_baseline_ms": profile.baseline[Metric.LATENCY_MS.value].value,
        "estimated_baseline_ms": base,
        "roofline": roofline.to_dict(),
        "estimate_seconds": round(seconds, 1),
        "overall": figures(rows),
        "by_cell_type": {t: figures([r for r in rows if r["cell_type"] == t]) for t in CELL_TYPES},
        "rows": rows,
    }


def _display_path(path: Path) -> str:
    path = path.resolve()
    return str(path.relative_to(ROOT) if path.is_relative_to(ROOT) else path)


def _rate(tflops: float) -> str:
    return f"{tflops:.1f} TFLOP/s" if tflops >= 1 else f"{tflops * 1e3:.0f} GFLOP/s"


def _where(c: dict[str, Any]) -> str:
    gpus = c.get("gpu") or []
    return f"{', '.join(gpus)} ({c['device']})" if gpus else f"{c['threads']} threads"


def _on(c: dict[str, Any]) -> str:
    on = c.get("compared_on")
    return f"`{on['hardware_digest']}` {on['date'][:16]}Z" if on else "–"


def markdown(report: dict[str, Any]) -> str:
    lines = [
        "# Roofline estimate against measured profiles",
        "",
        f"- command: `{report['command']}` · {report['date']}",
        f"- machine: CPU {report['cpu']}, hardware `{report['hardware_digest']}`",
        "- CPU figures: MEASURED calibration on the machine that made the profile, at the profile's thread count "
        "(best fp32 rate of a 1024x1024 `torch.mm`, best copy bandwidth of a 256 MiB tensor); launch overhead 1 µs "
        "per operator (the registry's CPU assumption). Other work on the machine lowers the calibration. A CPU "
        "profile of another machine is computed there and carried over from the previous results "
        "(“compared on” says where and when).",
        "- GPU figures: the registry's SPEC-SHEET peak rate (in the profile's precision), memory bandwidth and "
        "launch overhead of the profile's device, as `casprof measure --estimate` uses them; nothing calibrated.",
        "- rank correlation over the 29 operations' c_o (all but `identity`); “MACs” ranks by the operations' "
        "exact MAC counts instead, for reference",
        "",
        "| profile | baseline measured / estimated | estimate τ | estimate ρ | MACs τ | MACs ρ | normal τ | reduce τ | ms τ | compared on |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |",
    ]
    for c in report["comparisons"]:
        o = c["overall"]
        by = c["by_cell_type"]
        lines.append(
            f"| `{c['profile']}` ({c['backend']} {c.get('precision', 'fp32')}, {_where(c)}; {_rate(c['roofline']['peak_tflops'])}, "
            f"{c['roofline']['bandwidth_gbs']:.1f} GB/s) | {c['measured_baseline_ms']:.0f} / {c['estimated_baseline_ms']:.0f} ms | "
            f"{o['estimate']['kendall_tau']:.3f} | {o['estimate']['spearman_rho']:.3f} | {o['macs']['kendall_tau']:.3f} | "
            f"{o['macs']['spearman_rho']:.3f} | {by['normal']['estimate']['kendall_tau']:.3f} | "
            f"{by['reduce']['estimate']['kendall_tau']:.3f} | {by['ms']['estimate']['kendall_tau']:.3f} | {_on(c)} |"
        )
    for c in report["comparisons"]:
        lines += ["", f"## `{c['profile']}`", "", "| cell | operation | measured c_o ms | estimated c_o ms | GMACs |",
                  "| --- | --- | ---: | ---: | ---: |"]
        for r in c["rows"]:
            lines.append(f"| {r['cell_type']} | {r['op']} | {r['measured_ms']:.2f} | {r['estimated_ms']:.2f} | {r['macs'] / 1e9:.3f} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profiles", type=Path, nargs="*", default=None, help="measured profiles (default: every one in profiles/)")
    parser.add_argument("--results", type=Path, default=RESULTS, help="folder for estimate_vs_measured.{json,md}")
    parser.add_argument("--fresh", action="store_true", help="do not carry over comparisons of other machines' CPU profiles")
    args = parser.parse_args()
    paths = args.profiles or sorted((ROOT / "profiles").glob("*.json"))
    hw = detect_hardware()
    comparisons, skipped = [], {}
    for path in paths:
        profile = Profile.load(path)
        if profile.method is not Method.MEASURED:
            continue
        if not is_gpu_profile(profile) and not hw.recorded_here(profile.hardware):
            skipped[_display_path(path)] = profile
            continue
        comparisons.append(compare(profile, path, hw))
        print(f"{path.name}: tau {comparisons[-1]['overall']['estimate']['kendall_tau']:.3f}", flush=True)
    previous_file = args.results / "estimate_vs_measured.json"
    if skipped and not args.fresh and previous_file.is_file():
        carried = carried_over(json.loads(previous_file.read_text()), skipped)
        comparisons = sorted(comparisons + carried, key=lambda c: c["profile"])
        for c in carried:
            print(f"{c['profile']}: carried over (compared on {c['compared_on']['hardware_digest']} {c['compared_on']['date']})")
    for name in sorted(set(skipped) - {c["profile"] for c in comparisons}):
        print(f"skipping {name}: made on other hardware, so this CPU's calibration does not describe it, and no comparison "
              "made there is on record")
    report = {
        "benchmark": "estimate_vs_measured",
        "command": "python benchmarks/estimate_vs_measured.py" + (" --profiles " + " ".join(map(str, args.profiles)) if args.profiles else "")
        + (" --fresh" if args.fresh else ""),
        **_here(hw),
        "comparisons": comparisons,
    }
    args.results.mkdir(parents=True, exist_ok=True)
    atomic_write_json(previous_file, report)
    md = markdown(report)
    atomic_write_text(args.results / "estimate_vs_measured.md", md)
    print(md)


if __name__ == "__main__":
    main()
