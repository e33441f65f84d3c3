"""Command-line entry points (see :mod:`preroll.cli.main`)."""
