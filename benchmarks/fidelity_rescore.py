"""Benchmark helper: score recorded fidelity measurements against another profile's predictions.

A fidelity report keeps, per derived network, its genotype and its anchored measurements (all
rounds, and per instance). This script predicts the same genotypes with ``--profile`` (for
example the same profile after ``casprof calibrate``) and recomputes the figures against the
recorded measurements, without timing anything. The measurements must come from the machine and
network the profile was made for (checked); the anchoring used the c'_id of the profile the
check was run with, which must be the profile's own c'_id (checked), so that both sides of the
comparison rest on the same baseline.

    python benchmarks/fidelity_rescore.py --profile profiles/cpu-6d78dc83-onnxruntime-fp32-768x1536.json \\
        benchmarks/results/fidelity_cpu_onnxruntime_6d78dc8361ef86df*.json --tag calibrated

With ``--op-scale`` a calibrated profile's offset is replaced by a proportional calibration fitted
to the same calibration networks: the operations' part of every prediction (prediction without
the offset minus c'_id) is multiplied by the median over those networks of (measured - c'_id) /
(prediction without offset - c'_id). A machine that runs some percent faster or slower changes the
operations' costs in proportion, which one offset in ms cannot follow; this option measures how
much that matters on recorded checks (an analysis, not what ``casprof predict`` does).

With ``--refit offset|affine`` the profile's calibration is fitted again, in that form, to its own
calibration networks (as ``casprof calibrate --form`` would have fitted them; offset: its random
networks only): the two forms compared on the same calibration measurements and the same checks.

With ``--reanchor`` the profile may be another measurement of the same machine and network (for
example a second profile, or several pooled with ``casprof pool``): a check's anchored
measurements (its c'_id + median of the network's paired differences with the baseline) are moved
to the profile's c'_id, so that the comparison is of the operations' part, the baseline's own
difference between the two measurements left out.

With ``--pool-checks`` the recorded checks (at least two, of the same networks: same genotypes in the
same order, same machine) are also scored as one: every network's paired differences of all the
checks together (median over all their rounds; per instance for the two test-retest halves),
anchored at the first check's c'_id. A check's own noise then shrinks as if it had run all those
rounds, so what is left of the error is the profile's (its model, or the hour it was measured at).

With ``--ratio-anchor`` every run is anchored as a ratio instead of a difference: measured = the
profile's c'_id x median over runs of (network time / mean of the two baseline runs around it). The
difference (``casprof fidelity``'s measure, as the profile measures c_o) assumes that a change of the
machine's speed since the profile touched the baseline network's part only; the ratio assumes it
scaled every part alike (the operations too). Which one fits tells what kind of drift a machine has;
an analysis, not what ``casprof fidelity`` reports.

With ``--linear-reduce`` a schema-5 profile predicts without its reduction cells' shared input cost
(R_k = 0: the linear per-edge model of schemas 2-4), to see what the ``mixed_inputs`` probe changes.

With ``--composed-structure`` a schema-6 profile predicts without its ``derived_identity`` probes (the
structure of a derived cell composed from the three identity probes, as schemas 2-5 do), to see what
measuring it changes.

Writes ``benchmarks/results/fidelity_rescore_<digest>[_<tag>].{md,json}``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import sys
from pathlib import Path

from casprof._io import atomic_write_json, atomic_write_text
from casprof.calibration import Calibration, CalibrationForm, NetworkKind
from casprof.edge_model import EdgeModel
from casprof.fidelity import anchored_ms, ratio_anchored_ms
from casprof.fidelity_metrics import agreement, retest_error, retest_kendall_tau
from casprof.genotype import Genotype
from casprof.predict import predict
from casprof.profile import Metric, Profile
from fidelity_cpu import target_rows  # the same targets as the fidelity benchmark (this folder is on sys.path)

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"


def op_scale(profile: Profile) -> float:
    """The proportional calibration of ``profile`` (see the module docstring), from its calibration networks."""
    if profile.calibration is None:
        sys.exit(f"--op-scale needs a calibrated profile; {profile.device} has no calibration block.")
    c_id = profile.baseline[Metric.LATENCY_MS.value].value  # the networks' predictions are without the offset
    return statistics.median((n.measured_ms - c_id) / (n.predicted_ms - c_id) for n in profile.calibration.networks)


def refit(profile: Profile, form: CalibrationForm) -> Profile:
    """``profile`` with its calibration fitted again in ``form`` to its own calibration networks."""
    cal = profile.calibration
    if cal is None:
        sys.exit(f"--refit needs a calibrated profile; {profile.device} has no calibration block.")
    c_id = profile.baseline[Metric.LATENCY_MS.value].value  # the networks' predictions are without calibration
    nets = [dataclasses.replace(n, operations_ms=n.predicted_ms - c_id) for n in cal.networks
            if form is CalibrationForm.AFFINE or n.kind is NetworkKind.RANDOM]
    return dataclasses.replace(profile, calibration=Calibration.fit(form, nets, cal.settings, cal.baseline_now_ms))


def without_shared_input(profile: Profile) -> Profile:
    """``profile`` without its ``mixed_inputs`` probes: every shared input cost R_k = 0 (the linear model)."""
    if profile.edge_model is None or not profile.edge_model.has_shared_input_costs:
        sys.exit(f"The profile (created {profile.created}) has no mixed_inputs probe; --linear-reduce changes nothing.")
    cells = {t: dataclasses.replace(c, mixed_inputs={}) for t, c in profile.edge_model.cells.items()}
    return dataclasses.replace(profile, edge_model=EdgeModel(cells))


def without_measured_structure(profile: Profile) -> Profile:
    """``profile`` without its ``derived_identity`` probes: the structure composed from the identity probes."""
    if profile.edge_model is None or not profile.edge_model.has_measured_structure:
        sys.exit(f"The profile (created {profile.created}) has no derived_identity probe; --composed-structure changes nothing.")
    cells = {t: dataclasses.replace(c, derived_identity={}) for t, c in profile.edge_model.cells.items()}
    return dataclasses.replace(profile, edge_model=EdgeModel(cells))


def reanchored(report: dict, c_id: float) -> list[dict]:
    """The report's networks with every anchored measurement moved from the check's c'_id to ``c_id``
    (measured = c'_id + median over rounds of (network time - baseline time around it))."""
    shift = c_id - report["summary"]["baseline_profile_ms"]
    keys = ("measured_ms", "first_ms", "second_ms")
    return [n | {k: n[k] + shift for k in keys} for n in report["networks"]]


def anchored(net: dict, c_id: float, ratio: bool = False) -> dict:
    """``net``'s measurements from its per-run samples, anchored at ``c_id`` as ``casprof fidelity`` anchors them
    (difference, or with ``ratio`` its ratio-anchored diagnostic); all runs, and each instance for the two halves."""
    one = ratio_anchored_ms if ratio else anchored_ms
    times, brackets = net["samples_ms"], net["brackets_ms"]
    return net | {"measured_ms": one(c_id, times, brackets), "first_ms": one(c_id, times[:1], brackets[:1]),
                  "second_ms": one(c_id, times[1:2], brackets[1:2])}


def pooled_check(reports: list[dict], names: list[str]) -> dict:
    """One recorded check from several of the same networks: per network, the paired differences of all
    the checks pooled (median over all their rounds; instance i of every check for half i), anchored at
    the first check's c'_id. An extreme network whose genotype differs between the checks (each check
    picks the cheapest and dearest operations from its own profile) is left out and listed under
    ``left_out``. Exits with one sentence when the checks are not of the same random networks."""
    first = reports[0]
    for report, name in zip(reports[1:], names[1:]):
        if report["profile"]["hardware_digest"] != first["profile"]["hardware_digest"]:
            sys.exit(f"{name} was measured on hardware {report['profile']['hardware_digest']}, {names[0]} on "
                     f"{first['profile']['hardware_digest']}; only checks of one machine can be pooled.")
        randoms = [[(n["name"], n["genotype"]) for n in r["networks"] if not n["name"].startswith("all-")] for r in (first, report)]
        if randoms[0] != randoms[1]:
            sys.exit(f"{name} measured other random networks than {names[0]}; only checks of the same genotypes "
                     "(same --samples, --seed and network) can be pooled.")
    for report, name in zip(reports, names):
        if any("samples_ms" not in n or "brackets_ms" not in n for n in report["networks"]):
            sys.exit(f"{name} keeps no per-run samples; it cannot be pooled.")
    base = first["summary"]["baseline_profile_ms"]
    by_name = [{n["name"]: n for n in r["networks"]} for r in reports]
    networks, left_out = [], []
    for net in first["networks"]:
        runs = [nets.get(net["name"]) for nets in by_name]
        if any(n is None or n["genotype"] != net["genotype"] for n in runs):
            left_out.append(net["name"])
            continue
        per_instance = {key: [[x for n in runs for x in n[key][h]] for h in (0, 1)] for key in ("samples_ms", "brackets_ms")}
        networks.append(anchored({"name": net["name"], "genotype": net["genotype"], **per_instance}, base))
    return {"created": " + ".join(r["created"] for r in reports), "profile_path": first["profile_path"],
            "profile": first["profile"], "summary": {"baseline_profile_ms": base}, "networks": networks,
            "left_out": left_out}


def rescore(profile: Profile, report: dict, scale: float | None = None, reanchor: bool = False, ratio: bool = False) -> dict:
    """The figures of one recorded check with ``profile``'s predictions (its offset replaced by ``scale`` if given;
    measurements re-anchored at its c'_id if ``reanchor``, or as ratios to the bracketing baseline runs if ``ratio``)."""
    lat = Metric.LATENCY_MS.value
    if report["profile"]["hardware_digest"] != profile.hardware.get("digest"):
        sys.exit(f"{report['created']}: measured on hardware {report['profile']['hardware_digest']}, "
                 f"not the profile's {profile.hardware.get('digest')}.")
    base = report["summary"]["baseline_profile_ms"]
    if abs(base - profile.baseline[lat].value) > 1e-9 and not (reanchor or ratio):
        sys.exit(f"{report['created']}: anchored at c'_id {base} ms, not the profile's {profile.baseline[lat].value} ms "
                 "(--reanchor moves the measurements to the profile's c'_id).")
    if ratio:
        nets = [anchored(n, profile.baseline[lat].value, ratio=True) for n in report["networks"]]
    else:
        nets = reanchored(report, profile.baseline[lat].value) if reanchor else report["networks"]
    if scale is not None:  # the calibration replaced by the factor on the operations' part
        bare, c_id = dataclasses.replace(profile, calibration=None), profile.baseline[lat].value
        predicted = [c_id + scale * (predict(bare, Genotype.from_dict(n["genotype"]))[lat].value - c_id) for n in nets]
    else:
        predicted = [predict(profile, Genotype.from_dict(n["genotype"]))[lat].value for n in nets]
    extremes = {n["name"]: 100 * (p - n["measured_ms"]) / n["measured_ms"]
                for n, p in zip(nets, predicted) if n["name"].startswith("all-")}
    a = agreement(predicted, [n["measured_ms"] for n in nets])
    retest = retest_error([n["first_ms"] for n in nets], [n["second_ms"] for n in nets])
    ratio = a.mape / retest if retest > 0 else None
    retest_tau = retest_kendall_tau([n["first_ms"] for n in nets], [n["second_ms"] for n in nets])
    return {"check_created": report["created"], "check_profile_path": report["profile_path"],
            "networks": len(nets), "agreement": a.to_dict(), "test_retest_pct": retest, "mape_to_test_retest": ratio,
            "test_retest_kendall_tau": retest_tau, "extremes_error_pct": extremes, "targets": target_rows(a, ratio)}


def _pct(row: dict, name: str) -> str:
    value = row["extremes_error_pct"].get(name)
    return "-" if value is None else f"{value:+.2f}%"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", type=Path, required=True)
    parser.add_argument("reports", type=Path, nargs="+", help="fidelity report JSON files")
    parser.add_argument("--tag", default="")
    parser.add_argument("--results", type=Path, default=RESULTS)
    parser.add_argument("--op-scale", action="store_true",
                        help="replace the profile's calibration offset by a proportional calibration (module docstring)")
    parser.add_argument("--bare", action="store_true", help="predict without the profile's calibration")
    parser.add_argument("--reanchor", action="store_true",
                        help="score a profile with another c'_id than the checks' (another measurement of the same machine): "
                             "the recorded anchored measurements are moved to its c'_id (module docstring)")
    parser.add_argument("--ratio-anchor", action="store_true",
                        help="anchor every run as a ratio to its bracketing baseline runs, at the profile's c'_id (module docstring)")
    parser.add_argument("--pool-checks", action="store_true",
                        help="also score the checks pooled into one (same networks; module docstring)")
    parser.add_argument("--linear-reduce", action="store_true",
                        help="predict without the profile's shared input cost of reduction cells (module docstring)")
    parser.add_argument("--composed-structure", action="store_true",
                        help="predict without the profile's derived_identity probes (module docstring)")
    parser.add_argument("--refit", type=CalibrationForm, choices=list(CalibrationForm), metavar="{offset,affine}",
                        help="fit the profile's calibration again in this form to its own networks (module docstring)")
    args = parser.parse_args()
    if sum((args.refit is not None, args.op_scale, args.bare)) > 1:
        parser.error("--refit, --op-scale and --bare are different replacements of the calibration; pick one.")
    profile = Profile.load(args.profile)
    if args.bare:
        profile = dataclasses.replace(profile, calibration=None)
    if args.refit is not None:
        profile = refit(profile, args.refit)
    if args.linear_reduce:
        profile = without_shared_input(profile)
    if args.composed_structure:
        profile = without_measured_structure(profile)
    scale = op_scale(profile) if args.op_scale else None
    reports = [json.loads(p.read_text()) for p in args.reports]
    if args.pool_checks and len(reports) < 2:
        parser.error("--pool-checks needs at least two recorded checks.")
    pooled = pooled_check(reports, [p.name for p in args.reports]) if args.pool_checks else None  # refused before any scoring
    rows = [rescore(profile, r, scale, args.reanchor, args.ratio_anchor) | {"file": p.name} for p, r in zip(args.reports, reports)]
    if pooled is not None:
        rounds = statistics.median(len(n["samples_ms"][0]) + len(n["samples_ms"][1]) for n in pooled["networks"])
        rows.append(rescore(profile, pooled, scale, args.reanchor, args.ratio_anchor)
                    | {"file": f"{len(reports)} checks pooled ({rounds:.0f} runs per network)", "pooled": True,
                       "left_out": pooled["left_out"]})
    cal = profile.calibration
    digest = profile.hardware.get("digest")
    command = "python benchmarks/fidelity_rescore.py " + " ".join(sys.argv[1:])
    lines = [f"# Recorded fidelity checks scored with `{args.profile.name}`", "",
             f"- command: `{command}`",
             f"- profile created {profile.created}; calibration"
             + ("" if args.refit is None else f" (fitted again here, {args.refit.value})") + ": "
             + ("none" if cal is None else cal.summary())
             + ("; predicted WITHOUT the reduction cells' shared input cost (--linear-reduce)" if args.linear_reduce else "")
             + ("; predicted WITHOUT the measured structure (derived_identity probes; --composed-structure)"
                if args.composed_structure else ""),
             "- measurements as recorded by each check (nothing re-timed"
             + ("; moved from the check's c'_id to this profile's" if args.reanchor and not args.ratio_anchor else "")
             + ("; anchored again as ratios: this profile's c'_id x median over runs of (network time / mean of the two "
                "baseline runs around it)" if args.ratio_anchor else "") + "); predictions from the profile above"
             + ("" if scale is None else f", its calibration replaced by a proportional calibration of the operations' part: x {scale:.4f} "
                "(median over its calibration networks of (measured - c'_id) / (prediction without offset - c'_id))"), "",
             "| check (created) | file | MAPE | within ±5% | Kendall τ | τ m1 vs m2 | MAPE / test-retest | mean error | SD | all-cheapest | all-most-expensive | all four met |",
             "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |"]
    for r in rows:
        a = r["agreement"]
        ratio = "-" if r["mape_to_test_retest"] is None else f"{r['mape_to_test_retest']:.2f}"
        retest_tau = "-" if r["test_retest_kendall_tau"] is None else f"{r['test_retest_kendall_tau']:.3f}"
        lines.append(f"| {r['check_created']} | `{r['file']}` | {a['mape']:.2f}% | {a['within_5']:.0%} | {a['kendall_tau']:.3f} | "
                     f"{retest_tau} | {ratio} | {a['bias']:+.2f}% | {a['spread']:.2f}% | {_pct(r, 'all-cheapest')} | "
                     f"{_pct(r, 'all-most-expensive')} | {'yes' if all(t['met'] for t in r['targets']) else 'no'} |")
    for r in rows:
        if r.get("pooled"):
            where = ("as ratios at the profile's c'_id" if args.ratio_anchor else
                     "at the first check's c'_id" + (" and moved to the profile's" if args.reanchor else ""))
            lines += ["", f"Pooled row: every network's runs of the {len(reports)} checks together, anchored {where}; "
                      "m1, m2 = instance 1, 2 of every check."
                      + (f" Left out (genotype differs between the checks): {', '.join(r['left_out'])}." if r["left_out"] else "")]
    md = "\n".join(lines) + "\n"
    stem = f"fidelity_rescore_{digest}" + (f"_{args.tag}" if args.tag else "")
    args.results.mkdir(parents=True, exist_ok=True)
    atomic_write_json(args.results / f"{stem}.json",
                      {"profile": str(args.profile), "command": command, "op_scale": scale,
                       "refit": None if args.refit is None else args.refit.value, "linear_reduce": args.linear_reduce,
                       "composed_structure": args.composed_structure, "reanchor": args.reanchor, "ratio_anchor": args.ratio_anchor,
                       "calibration": None if cal is None else cal.to_dict(), "checks": rows})
    atomic_write_text(args.results / f"{stem}.md", md)
    print(md)


if __name__ == "__main__":
    main()
