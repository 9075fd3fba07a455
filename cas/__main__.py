"""``python -m cas`` runs the ``cas`` command line."""

from cas.cli import main

if __name__ == "__main__":  # not when a spawned worker process imports it
    main()
