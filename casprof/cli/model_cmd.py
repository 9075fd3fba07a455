"""``casprof devices`` and ``casprof genotype``: the device registry and genotype files."""

from __future__ import annotations

import json
from typing import Annotated

import typer
from rich.table import Table

from casprof.cli._app import out_console
from casprof.cli._options import JsonFlag, NetworkOpt, OutOpt, SeedOpt
from casprof.cli.common import load_network_config
from casprof.devices import devices_present, list_devices
from casprof.errors import UserInputError
from casprof.genotype import random_genotype
from casprof.hardware import detect_hardware


def devices(json_out: JsonFlag = False) -> None:
    """List the device registry: expected hardware and spec-sheet figures; mark what is present."""
    present = {d.name for d in devices_present(detect_hardware())}
    specs = list_devices()
    if json_out:
        out_console.print_json(json.dumps([{**s.to_dict(), "present": s.name in present} for s in specs]))
        return
    table = Table(title="casprof device registry (spec-sheet figures)")
    for col in ("name", "kind", "hardware", "FP32 TFLOPS", "FP16 TFLOPS", "GB/s", "present"):
        table.add_column(col, justify="right" if "/" in col or "TFLOPS" in col else "left")
    for s in specs:
        table.add_row(
            s.name,
            s.kind.value,
            s.description,
            "-" if s.peak_fp32_tflops is None else f"{s.peak_fp32_tflops:g}",
            "-" if s.peak_fp16_tflops is None else f"{s.peak_fp16_tflops:g}",
            "-" if s.memory_bandwidth_gbs is None else f"{s.memory_bandwidth_gbs:g}",
            "yes" if s.name in present else "",
        )
    out_console.print(table)


def genotype(
    random: Annotated[bool, typer.Option("--random", help="Draw a random valid genotype.")] = False,
    seed: SeedOpt = 0,
    network: NetworkOpt = None,
    out: OutOpt = None,
) -> None:
    """Write a genotype file (for now: a random valid one, for tests and fidelity checks)."""
    if not random:
        raise UserInputError("Say which genotype to write; only --random is available here.")
    g = random_genotype(seed, load_network_config(network))
    if out is None:
        typer.echo(g.to_json(), nl=False)
    else:
        g.save(out)
        typer.echo(f"Wrote {out}", err=True)


def register(app: typer.Typer) -> None:
    app.command()(devices)
    app.command()(genotype)
