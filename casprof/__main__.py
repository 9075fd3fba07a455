"""``python -m casprof`` runs the ``casprof`` command line."""

from casprof.cli.app import main

main()
