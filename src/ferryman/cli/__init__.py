"""The ``ferryman`` command-line interface (entry point: :func:`ferryman.cli.main.main`)."""
