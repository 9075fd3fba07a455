"""``python -m cas`` runs the ``cas`` command line."""

from cas.cli import main

main()
