"""The ``cas`` umbrella app. ``cas profile ...`` is an alias of ``casprof``."""

from __future__ import annotations

from casprof.cli._app import make_app
from casprof.cli.app import app as casprof_app
from deploy.cli import app as deploy_app

app = make_app("cas", "Customizable Architecture Search for real-time segmentation: profile, search, deploy.")
app.add_typer(casprof_app, name="profile", help="Cost profiles (alias of `casprof`).")
app.add_typer(deploy_app, name="deploy", help="Export a genotype's network to ONNX / TensorRT and benchmark it.")


def main() -> None:
    app()
