"""``casprof show``, ``diff``, ``check`` and ``predict``: reading and using profiles."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from casprof.cli._app import err_console, out_console
from casprof.cli._options import GenotypeOpt, JsonFlag, ProfileArg, ProfileOpt
from casprof.compare import check_profile, condition_differences, diff_profiles
from casprof.display import profile_frame, profile_table
from casprof.errors import UserInputError
from casprof.genotype import Genotype
from casprof.hardware import detect_hardware
from casprof.predict import predict as predict_costs
from casprof.profile import Metric, Profile


def show(
    profile: ProfileArg,
    json_out: JsonFlag = False,
    csv_out: Annotated[bool, typer.Option("--csv", help="Print CSV instead of a table.")] = False,
) -> None:
    """Show a profile's per-operation costs (c_o) with intervals and the baseline c'_id."""
    if json_out and csv_out:
        raise UserInputError("Choose one of --json and --csv.")
    p = Profile.load(profile)
    frame = profile_frame(p)
    if csv_out:
        typer.echo(frame.to_csv(index=False), nl=False)
    elif json_out:
        typer.echo(json.dumps({"method": p.method.value, "device": p.device, "backend": p.backend.to_dict(),
                               "rows": json.loads(frame.to_json(orient="records"))}, indent=2))
    else:
        out_console.print(profile_table(p))


def diff(
    a: Annotated[Path, typer.Argument(help="The reference profile.")],
    b: Annotated[Path, typer.Argument(help="The profile compared with it.")],
    metric: Annotated[Metric, typer.Option("--metric", help="Which cost to compare.")] = Metric.LATENCY_MS,
    json_out: JsonFlag = False,
) -> None:
    """Per-operation change of c_o from profile A to B, with a bootstrap significance test."""
    pa, pb = Profile.load(a), Profile.load(b)
    changes = diff_profiles(pa, pb, metric.value)
    differences = condition_differences(pa, pb)
    if differences:
        err_console.print(
            f"note: the profiles were made under different conditions ({'; '.join(differences)}); "
            "a change may come from them and not from the operations.",
            highlight=False,
        )
    if json_out:
        typer.echo(json.dumps([
            {"cell_type": c.cell_type, "op": c.op, "a": c.a, "b": c.b, "change": c.change, "ratio": c.ratio,
             "ci95": list(c.interval) if c.interval else None, "significant": c.significant}
            for c in changes
        ], indent=2))
        return
    table = Table(title=f"{metric.value}: {a.name} → {b.name}")
    for col in ("cell", "operation", "A", "B", "change", "95% CI of change", "significant"):
        table.add_column(col, justify="left" if col in ("cell", "operation") else "right")
    for c in changes:
        ci = f"{c.interval[0]:+.3f} … {c.interval[1]:+.3f}" if c.interval else "-"
        sig = {True: "[bold]yes[/]", False: "no", None: "n/a (estimate)"}[c.significant]
        table.add_row(c.cell_type, c.op, f"{c.a:.4g}", f"{c.b:.4g}", f"{c.change:+.4g}", ci, sig)
    out_console.print(table)


def check(profile: ProfileArg) -> None:
    """Validate a profile (schema, fingerprints, intervals); exit 2 if the file is bad."""
    p = Profile.load(profile)
    findings = check_profile(p, detect_hardware())
    for f in findings:
        style = "yellow" if f.level == "warning" else "dim"
        err_console.print(f"[{style}]{f.level}:[/] {f.message}", highlight=False)
    warnings = sum(f.level == "warning" for f in findings)
    typer.echo(
        f"{profile}: valid schema v{p.read_schema_version} profile ({'ESTIMATED' if p.method.value == 'estimated' else 'measured'}, {p.device}, {p.backend.name}/{p.backend.precision}, "
        f"network {p.fingerprint}); {warnings} warning(s)."
    )


def predict(profile: ProfileOpt, genotype: GenotypeOpt, json_out: JsonFlag = False) -> None:
    """Predicted absolute cost of a genotype's derived network: c'_id plus its edges' shares
    (plus the profile's measured latency offset if it was calibrated with ``casprof calibrate``)."""
    p = Profile.load(profile)
    g = Genotype.load(genotype)
    result = predict_costs(p, g)
    if json_out:
        typer.echo(json.dumps({m: r.to_dict() for m, r in result.items()}, indent=2))
        return
    table = Table(title=f"predicted cost of {genotype.name} from {profile.name}" + (" (ESTIMATED profile)" if p.method.value == "estimated" else ""))
    for col in ("metric", "predicted", "baseline c'_id", "normal", "reduce", "ms", "calibration", "method"):
        table.add_column(col, justify="left" if col in ("metric", "method") else "right")
    for m, r in result.items():
        table.add_row(m, f"{r.value:.6g} {r.unit}", f"{r.baseline:.6g}", *(f"{r.by_cell_type[t]:+.4g}" for t in ("normal", "reduce", "ms")),
                      f"{r.calibration:+.4g}" if r.calibration else "-", r.method)
    out_console.print(table)


def register(app: typer.Typer) -> None:
    app.command()(show)
    app.command()(diff)
    app.command()(check)
    app.command()(predict)
