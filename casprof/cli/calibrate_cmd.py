"""``casprof calibrate``: measure a profile's latency offset on real derived networks."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Annotated

import typer

from casprof.cli._app import err_console
from casprof.cli._options import NetworkRoundsOpt, NetworkSweepsOpt, OutOpt, ProfileOpt, SeedOpt
from casprof.cli._progress import stage_progress
from casprof.errors import UserInputError
from casprof.hardware import detect_hardware
from casprof.profile import Metric, Profile


def calibrate(
    profile: ProfileOpt,
    networks: Annotated[int, typer.Option("--networks", "-n", help="Random derived networks to time (at least 3).")] = 8,
    seed: SeedOpt = 0,
    rounds: NetworkRoundsOpt = 24,
    sweeps: NetworkSweepsOpt = 2,
    out: OutOpt = None,
) -> None:
    """Time random derived networks as `casprof fidelity` does and store the profile's latency offset.

    The offset is the median over the networks of (measured - predicted); `casprof predict` adds it
    to every latency prediction. Writes the calibrated profile to --out (default: the profile
    itself, replaced atomically). The networks' genotype seeds never meet a fidelity check's.
    """
    from casprof.calibration import CalibrationSettings, run_calibration
    from casprof.fidelity import check_can_measure

    settings = CalibrationSettings(networks=networks, seed=seed, rounds=rounds, sweeps=sweeps)
    target = Path(out) if out is not None else Path(profile)
    if not target.parent.is_dir():
        raise UserInputError(f"The output folder {target.parent} does not exist.")
    p = Profile.load(profile)
    hardware = detect_hardware()
    check_can_measure(p, hardware)
    h, w = p.input_size
    err_console.print(f"Calibrating [bold]{profile}[/] ({p.device}, {p.backend.name}/{p.backend.precision}, {h}x{w}) "
                      f"on {networks} random derived networks", highlight=False)
    with stage_progress() as on_progress:
        cal = run_calibration(p, hardware, settings, progress=on_progress)
    dataclasses.replace(p, calibration=cal).save(target)
    typer.echo(f"{target}: latency offset {cal.summary()}; baseline now {cal.baseline_now_ms:.3f} ms vs "
               f"c'_id {p.baseline[Metric.LATENCY_MS.value].value:.3f} ms.")
    for n in cal.networks:
        typer.echo(f"  seed {n.seed}: predicted {n.predicted_ms:.3f} ms, measured {n.measured_ms:.3f} ms, "
                   f"residual {n.residual_ms:+.3f} ms")


def register(app: typer.Typer) -> None:
    app.command()(calibrate)
