"""``casprof calibrate``: fit a profile's latency calibration on real derived networks."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Annotated

import typer

from casprof._io import ensure_parent_exists
from casprof.block_checkpoint import checkpoint_beside
from casprof.calibration import MAX_BASELINE_DRIFT_PCT, CalibrationForm
from casprof.cli._app import err_console
from casprof.cli._options import (BuildCacheOpt, BuildWorkersOpt, NetworkRoundsOpt, NetworkSweepsOpt, OutOpt, ProfileOpt,
                                  ResumeOpt, SeedOpt)
from casprof.cli._progress import stage_progress
from casprof.cli.common import build_cache_for, resumable, writable_checkpoint
from casprof.hardware import detect_hardware
from casprof.prebuild import resolve_workers
from casprof.profile import Metric, Profile
from casprof.sweeps import network_sweeps


def calibrate(
    profile: ProfileOpt,
    networks: Annotated[int, typer.Option("--networks", "-n", help="Random derived networks to time (at least 3).")] = 8,
    seed: SeedOpt = 0,
    form: Annotated[CalibrationForm, typer.Option(
        "--form", help="affine: offset + factor on the operations' part (adds 4 networks from the cheapest and costliest "
                       "operations to pin the factor); offset (default): one offset in ms.")] = CalibrationForm.OFFSET,
    rounds: NetworkRoundsOpt = 24,
    sweeps: NetworkSweepsOpt = None,
    out: OutOpt = None,
    build_cache: BuildCacheOpt = True,
    build_workers: BuildWorkersOpt = None,
    max_drift: Annotated[float, typer.Option(
        "--max-drift", metavar="PCT",
        help="Refuse the calibration (exit 1, nothing written) when the baseline network's median time during it differs "
             "from the profile's c'_id by more than PCT %: the machine then runs at another speed than when the "
             "profile was made.")] = MAX_BASELINE_DRIFT_PCT,
    resume: ResumeOpt = False,
) -> None:
    """Time random derived networks as `casprof fidelity` does and store the profile's latency calibration.

    offset (default): the median of (measured - predicted); affine: measured - c'_id = offset +
    factor x (prediction - c'_id), a least-absolute-deviations line. `casprof predict` adds
    offset + (factor - 1) x (prediction - c'_id) to every latency prediction. Writes the calibrated
    profile to --out (default: the profile itself, replaced atomically). The networks' genotype
    seeds never meet a fidelity check's. Refused when the machine's speed has moved since the profile
    (--max-drift). Finished blocks are kept in <profile>.calibration.partial.json until the timing is
    done; --resume continues an interrupted calibration.
    """
    from casprof.calibration import CalibrationSettings, run_calibration
    from casprof.fidelity import check_can_measure

    settings = CalibrationSettings(networks=networks, seed=seed, form=form, rounds=rounds,
                                   sweeps=network_sweeps(rounds) if sweeps is None else sweeps, max_drift_pct=max_drift)
    target = Path(out) if out is not None else Path(profile)
    ensure_parent_exists(target)  # before the timing: a folder or read-only place in --out's way loses nothing
    p = Profile.load(profile)
    hardware = detect_hardware()
    check_can_measure(p, hardware)
    cache = build_cache_for(build_cache)
    workers = resolve_workers(build_workers, p.backend.threads or 1)
    h, w = p.input_size
    total = networks + settings.leverage_networks
    err_console.print(f"Calibrating [bold]{profile}[/] ({p.device}, {p.backend.name}/{p.backend.precision}, {h}x{w}) "
                      f"on {total} derived networks ({form.value})", highlight=False)
    checkpoint = writable_checkpoint(checkpoint_beside(profile, "calibration"))
    with resumable(checkpoint, "blocks of networks", resume), stage_progress() as on_progress:
        cal = run_calibration(p, hardware, settings, progress=on_progress, build_cache=cache,
                              build_workers=workers, checkpoint=checkpoint, resume=resume)
    dataclasses.replace(p, calibration=cal).save(target)
    typer.echo(f"{target}: latency calibration {cal.summary()}; baseline now {cal.baseline_now_ms:.3f} ms vs "
               f"c'_id {p.baseline[Metric.LATENCY_MS.value].value:.3f} ms.")
    for n in cal.networks:
        typer.echo(f"  seed {n.seed} ({n.kind.value}): predicted {n.predicted_ms:.3f} ms, measured {n.measured_ms:.3f} ms, "
                   f"residual {n.residual_ms:+.3f} ms, after calibration "
                   f"{n.residual_ms - cal.adjustment(n.predicted_ms - p.baseline[Metric.LATENCY_MS.value].value):+.3f} ms")


def register(app: typer.Typer) -> None:
    app.command()(calibrate)
