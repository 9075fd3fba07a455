"""``casprof fidelity``: predicted against measured latency of random derived networks."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.text import Text

from casprof._io import check_output_folder
from casprof.block_checkpoint import checkpoint_beside
from casprof.cli._app import err_console
from casprof.cli._options import (BuildCacheOpt, BuildWorkersOpt, NetworkRoundsOpt, NetworkSweepsOpt, ProfileOpt, ResumeOpt,
                                  SeedOpt)
from casprof.cli._progress import stage_progress
from casprof.cli.common import build_cache_for, resumable, writable_checkpoint
from casprof.errors import UserInputError
from casprof.hardware import detect_hardware
from casprof.prebuild import resolve_workers
from casprof.profile import Profile
from casprof.sweeps import network_sweeps


def fidelity(
    profile: ProfileOpt,
    samples: Annotated[int, typer.Option("--samples", "-n", help="Random genotypes to measure (at least 5).")] = 30,
    seed: SeedOpt = 0,
    rounds: NetworkRoundsOpt = 24,
    sweeps: NetworkSweepsOpt = None,
    extremes: Annotated[bool, typer.Option("--extremes/--no-extremes", help="Add the all-cheapest and all-most-expensive genotypes.")] = True,
    retime_structure: Annotated[bool, typer.Option(
        "--retime-structure/--no-retime-structure",
        help="Also time the profile's structure probes and report their terms now (a diagnostic of a stale level).")] = False,
    report: Annotated[Optional[Path], typer.Option("--report", help="Folder for fidelity.json, .md and .png (must exist).", show_default=False)] = None,
    build_cache: BuildCacheOpt = True,
    build_workers: BuildWorkersOpt = None,
    resume: ResumeOpt = False,
) -> None:
    """Measure random derived networks on this machine and compare with the profile's predictions.

    Uses the profile's device, backend, precision, resolution and threads; every run is bracketed
    by runs of the profile's baseline network and measured as c'_id + the paired difference, as
    the profile measures c_o (the raw comparison and the machine's speed change since the profile
    are reported beside it). Reports MAPE, worst error, shares within ±5%/±10%, Kendall τ and
    Spearman ρ, the same for MACs and parameters (linearly fitted), and the measurement's own
    test-retest error. With --retime-structure the profile's structure probes are timed again
    beside the networks, to tell a profile whose level went stale from a model error. A calibrated
    profile (`casprof calibrate`) is also compared without its offset.
    """
    from casprof.fidelity import FidelitySettings, check_can_measure, check_held_out, run_fidelity  # scipy: import on use
    from casprof.fidelity_report import report_markdown, write_report

    settings = FidelitySettings(samples=samples, seed=seed, rounds=rounds,
                                sweeps=network_sweeps(rounds) if sweeps is None else sweeps, extremes=extremes,
                                retime_structure=retime_structure)
    if report is not None:
        if not report.exists():
            raise UserInputError(f"The report folder {report} does not exist.")
        check_output_folder(report)  # a file, or a folder that cannot be written: refused before the timing
    p = Profile.load(profile)
    hardware = detect_hardware()
    check_can_measure(p, hardware)
    check_held_out(p, settings)
    cache = build_cache_for(build_cache)
    workers = resolve_workers(build_workers, p.backend.threads or 1)
    h, w = p.input_size
    err_console.print(
        f"Checking [bold]{profile}[/] ({p.device}, {p.backend.name}/{p.backend.precision}, {h}x{w}, "
        f"{p.backend.threads} thread(s)) against {samples} random genotypes"
        + (" + 2 extremes" if extremes else ""),
        highlight=False,
    )
    checkpoint = writable_checkpoint(checkpoint_beside(profile, "fidelity"))
    with resumable(checkpoint, "blocks of networks", resume), stage_progress() as on_progress:
        result = run_fidelity(p, hardware, settings, profile_path=profile, progress=on_progress, build_cache=cache,
                              build_workers=workers, checkpoint=checkpoint, resume=resume)
    md = report_markdown(result)
    for warning in result.warnings:
        err_console.print(Text.assemble(("Warning:", "bold yellow"), " ", warning), highlight=False)
    if report is not None:
        paths = write_report(result, report)
        err_console.print("Wrote " + ", ".join(str(v) for v in paths.values()), highlight=False)
    typer.echo(md, nl=False)


def register(app: typer.Typer) -> None:
    app.command()(fidelity)
