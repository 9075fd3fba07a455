"""Benchmark: fidelity of the committed CPU profiles (predicted vs measured latency of derived networks).

Targets (issue "fidelity"), per backend, at 768x1536 with 30 random genotypes plus the two
extremes: MAPE <= 3%, at least 95% of the networks within +-5%, Kendall tau >= 0.9, and
MAPE <= 1.5x the measurement's own test-retest error; MACs and parameter counts (linearly
fitted) are reported beside them.

Run on a quiet machine: ``python benchmarks/fidelity_cpu.py --backend onnxruntime`` (and
``--backend torch``). Writes ``benchmarks/results/fidelity_cpu_<backend>_<digest>.{json,md,png}``.
A profile measured on a GPU (``--profile profiles/h100-...-torch-fp16-768x1536.json``) is checked on
that GPU the same way, into ``fidelity_<device>_<backend>[_fp16]_<digest>.*``.

``--short`` checks the script itself in about a minute: it measures a profile of the TINY test
network at 64x128 first, then checks it with 5 genotypes; its files go to a temporary folder
(or ``--results``), never over the committed results.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

from casprof._io import atomic_write_json, atomic_write_text
from casprof.backends.base import Backend
from casprof.block_checkpoint import checkpoint_beside
from casprof.cli._interrupt import watch_interrupts
from casprof.cli.common import resumable
from casprof.config import NetworkConfig
from casprof.devices import resolve_device
from casprof.fidelity import FidelityReport, FidelitySettings, measure_settings_of, run_fidelity
from casprof.prebuild import default_workers
from casprof.fidelity_metrics import Agreement
from casprof.fidelity_report import report_markdown, write_report
from casprof.hardware import HardwareFingerprint, detect_hardware
from casprof.measure import MeasureSettings, ProgressCallback, run_measurement
from casprof.measure import Progress as ProgressEvent
from casprof.profile import Profile
from casprof.sweeps import NETWORK_SWEEPS, network_sweeps

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
TINY = NetworkConfig(stem_channels=(4, 4, 8), channels=4, ms_channels=4, num_classes=5)  # tests/conftest.py

TARGETS = {"mape_pct": 3.0, "within_5": 0.95, "kendall_tau": 0.9, "mape_to_retest": 1.5}


def print_finished_stages(event: ProgressEvent) -> None:
    if event.done == event.total:
        print(f"  {event.stage}: {event.done}/{event.total} {event.detail}", flush=True)


def targets(report: FidelityReport) -> list[dict]:
    return target_rows(report.profile_agreement, report.mape_to_retest)


def target_rows(a: Agreement, ratio: float | None) -> list[dict]:
    """Each target figure of the issue with its value and whether it is met."""
    rows = [
        ("MAPE", f"{a.mape:.2f}%", f"≤ {TARGETS['mape_pct']:g}%", a.mape <= TARGETS["mape_pct"]),
        ("within ±5%", f"{a.within_5:.0%}", f"≥ {TARGETS['within_5']:.0%}", a.within_5 >= TARGETS["within_5"]),
        ("Kendall τ", "-" if a.kendall_tau is None else f"{a.kendall_tau:.3f}", f"≥ {TARGETS['kendall_tau']:g}",
         a.kendall_tau is not None and a.kendall_tau >= TARGETS["kendall_tau"]),
        ("MAPE / test-retest", "-" if ratio is None else f"{ratio:.2f}", f"≤ {TARGETS['mape_to_retest']:g}",
         ratio is not None and ratio <= TARGETS["mape_to_retest"]),
    ]
    return [{"figure": f, "value": v, "target": t, "met": bool(m)} for f, v, t, m in rows]


def result_stem(profile: Profile, digest: str, kind: str = "fidelity") -> str:
    """``<kind>_<device>_<backend>[-keep][-channels-last][_<precision>]_<digest>``, the device as the
    profile names it (``cpu``, ``h100``); ``-keep`` for a profile measured with ``--cpu-allocator keep``,
    ``-channels-last`` for one measured with ``--memory-format channels_last``, the precision
    only where it is not fp32, so the older names stay as they were."""
    precision = "" if profile.backend.precision == "fp32" else f"_{profile.backend.precision}"
    keep = measure_settings_of(profile).file_tag
    return f"{kind}_{profile.device}_{profile.backend.name}{keep}{precision}_{digest}"


def short_profile(backend: str, folder: Path, progress: ProgressCallback) -> Path:
    """A real profile of the TINY network at 64x128 (3 rounds), for --short. Interrupted, it exits
    130 with one sentence: the profile is in a temporary folder, so there is nothing to resume."""
    hw = detect_hardware()
    out = folder / f"tiny-{backend}.json"
    settings = MeasureSettings(backend=backend, resolution=(64, 128), threads=hw.cpu.affinity or 1, rounds=3, warmup_iters=1)
    try:
        run_measurement(TINY, settings, resolve_device("cpu", hw), hw, out=out, progress=progress)
    except KeyboardInterrupt:
        print("Interrupted while measuring --short's own profile (in a temporary folder): nothing to resume.",
              file=sys.stderr)
        raise SystemExit(130) from None
    return out


def default_profile(hw: HardwareFingerprint, backend: str) -> Path:
    """This machine's shipped profile: named by its digest, or by its older digest (made before
    fingerprints recorded the CPU's signature; ``run_fidelity`` still checks that it is this CPU)."""
    paths = [ROOT / "profiles" / f"cpu-{d[:8]}-{backend}-fp32-768x1536.json" for d in (hw.digest(), hw.digest(legacy=True))]
    return next((p for p in paths if p.is_file()), paths[0])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backend", default="onnxruntime", choices=[Backend.ONNXRUNTIME.value, Backend.TORCH.value])
    parser.add_argument("--profile", type=Path, default=None, help="default: profiles/cpu-<digest8>-<backend>-fp32-768x1536.json")
    parser.add_argument("--samples", type=int, default=30)
    parser.add_argument("--rounds", type=int, default=FidelitySettings.rounds)
    parser.add_argument("--sweeps", type=int, default=None, help=f"default: {NETWORK_SWEEPS}, fewer where a sweep would get under 2 rounds")
    parser.add_argument("--retime-structure", action="store_true",
                        help="also time the profile's structure probes beside the networks (a diagnostic row)")
    parser.add_argument("--tag", default="", help="suffix of the result files' names (e.g. a profile variant)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--short", action="store_true", help="tiny network at 64x128, 5 genotypes, 2 rounds")
    parser.add_argument("--results", type=Path, default=None, help="output folder (default: benchmarks/results; --short: a temporary folder)")
    parser.add_argument("--resume", action="store_true",
                        help="continue an interrupted check of the same profile and settings from its checkpoint "
                             "(beside the profile, as `casprof fidelity --resume`)")
    args = parser.parse_args()

    hw = detect_hardware()
    with tempfile.TemporaryDirectory(prefix="fidelity-bench-") as tmp, watch_interrupts() as interrupts:
        if args.short:
            profile_path = args.profile or short_profile(args.backend, Path(tmp), interrupts.checked(lambda e: None))
            settings = FidelitySettings(samples=5, seed=args.seed, rounds=2, sweeps=1,
                                        retime_structure=args.retime_structure)
            results = args.results or Path(tmp)
        else:
            profile_path = args.profile or default_profile(hw, args.backend)
            sweeps = network_sweeps(args.rounds) if args.sweeps is None else args.sweeps
            settings = FidelitySettings(samples=args.samples, seed=args.seed, rounds=args.rounds, sweeps=sweeps,
                                        retime_structure=args.retime_structure)
            results = args.results or RESULTS
        profile = Profile.load(profile_path)
        checkpoint = checkpoint_beside(Path(profile_path), "fidelity")
        with resumable(checkpoint, "blocks of networks", args.resume):
            report = run_fidelity(profile, hw, settings, profile_path=profile_path,
                                  build_workers=default_workers(profile.backend.threads or 1),
                                  progress=interrupts.checked(print_finished_stages), checkpoint=checkpoint,
                                  resume=args.resume)
        results.mkdir(parents=True, exist_ok=True)
        stem = result_stem(profile, hw.digest()) + ("_short" if args.short else "") + (f"_{args.tag}" if args.tag else "")
        paths = write_report(report, results, stem)
        checks = targets(report)
        data = json.loads(paths["json"].read_text())
        data["targets"] = checks
        data["command"] = "python benchmarks/fidelity_cpu.py " + " ".join(sys.argv[1:])
        atomic_write_json(paths["json"], data)
        table = ["## Targets", "", "| figure | value | target | met |", "| --- | ---: | ---: | --- |"]
        table += [f"| {c['figure']} | {c['value']} | {c['target']} | {'yes' if c['met'] else '**no**'} |" for c in checks]
        md = report_markdown(report)
        head, _, rest = md.partition("\n\n")
        md = head + f"\n\n- command: `{data['command']}`\n" + "\n".join(table) + "\n\n" + rest
        atomic_write_text(paths["md"], md)
        print(md)
        print("wrote", ", ".join(str(p) for p in paths.values()))


if __name__ == "__main__":
    main()
