"""``casprof pool``: one profile from the samples of several measured under the same conditions."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from casprof._io import ensure_parent_exists
from casprof.cli._app import err_console, out_console
from casprof.errors import UserInputError
from casprof.measure import iter_costs
from casprof.merge import merge_profiles
from casprof.profile import Metric, Profile


def mean_half_width(profile: Profile) -> float:
    """Mean half-width of the 95 % intervals of a profile's measured latency costs, in ms."""
    widths = [(c.interval[1] - c.interval[0]) / 2 for _, _, c in iter_costs(profile, Metric.LATENCY_MS.value) if c.interval]
    return sum(widths) / len(widths) if widths else float("nan")


def pool(
    profiles: Annotated[list[Path], typer.Argument(help="Two or more measured profiles of one network, machine and backend.", show_default=False)],
    out: Annotated[Path, typer.Option("--out", "-o", help="The pooled profile (written atomically; not one of the sources).", show_default=False)],
) -> None:
    """Pool the raw samples of profiles measured under the same conditions (for example at different
    hours) into one profile: every cost is the median of all their paired differences."""
    ensure_parent_exists(out)
    if any(out.resolve() == p.resolve() for p in profiles):
        raise UserInputError(f"--out {out} is one of the profiles being pooled; write the pooled profile to a new file.")
    sources = [Profile.load(p) for p in profiles]
    pooled = merge_profiles(sources)
    pooled.save(out)  # before printing: a closed pipe on stdout cannot lose the file
    lat = Metric.LATENCY_MS.value
    for path, p in zip(profiles, sources):
        out_console.print(
            f"{path.name}: created {p.created}, {p.settings.get('rounds')} rounds, c'_id {p.baseline[lat].value:.3f} ms, "
            f"mean 95 % half-width of c_o {mean_half_width(p):.3f} ms" + (" (its calibration is not carried over)" if p.calibration else ""),
            highlight=False,
        )
    out_console.print(
        f"pooled → {out}: {pooled.settings['rounds']} rounds, c'_id {pooled.baseline[lat].value:.3f} ms, "
        f"mean 95 % half-width of c_o {mean_half_width(pooled):.3f} ms; {len(pooled.warnings)} noise warning(s).",
        highlight=False,
    )
    err_console.print(f"Not calibrated: run `casprof calibrate --profile {out}` before predicting absolute latencies with it.",
                      highlight=False)


def register(app: typer.Typer) -> None:
    app.command()(pool)
