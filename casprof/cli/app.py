"""The ``casprof`` root app: wires the command modules together; no logic lives here."""

from __future__ import annotations

from casprof.cli import calibrate_cmd, fidelity_cmd, inspect_cmd, measure_cmd, model_cmd, pool_cmd
from casprof.cli._app import make_app

app = make_app("casprof", "Measure, inspect and use per-operation cost profiles of the CAS network.")
for module in (measure_cmd, inspect_cmd, model_cmd, fidelity_cmd, calibrate_cmd, pool_cmd):
    module.register(app)


def main() -> None:
    app()
