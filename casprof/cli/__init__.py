"""The ``casprof`` command line (one root typer app, one module per command group)."""
