"""``python -m casprof`` runs the ``casprof`` command line."""

from casprof.cli.app import main

if __name__ == "__main__":  # not when a spawned worker process imports it (casprof.prebuild)
    main()
