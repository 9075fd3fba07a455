"""The ``cas`` umbrella app. ``cas profile ...`` is an alias of ``casprof``."""

from __future__ import annotations

from casprof.cli._app import make_app
from casprof.cli.app import app as casprof_app
from deploy.cli import app as deploy_app
from search.cli import app as search_app
from train.cli import register as register_train

app = make_app("cas", "Customizable Architecture Search for real-time segmentation: profile, search, deploy.")
app.add_typer(casprof_app, name="profile", help="Cost profiles (alias of `casprof`).")
app.add_typer(search_app, name="search", help="Cost-constrained architecture search: one search, or a lambda sweep.")
app.add_typer(deploy_app, name="deploy", help="Export a genotype's network to ONNX / TensorRT and benchmark it.")
register_train(app)


def main() -> None:
    app()
