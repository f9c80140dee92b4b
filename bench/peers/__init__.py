"""Peer servers for ``make bench``: venv setup and the server code each peer runs (in its own venv)."""
