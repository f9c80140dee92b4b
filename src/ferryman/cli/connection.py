"""Options every client command shares, and the one place CLI errors become exit codes.

Kept free of httpx, numpy and rich imports so ``ferryman --help`` starts quickly; the client is
imported when a command actually runs.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Annotated, NoReturn

import typer

from ferryman.cli.arguments import ModelRef, parse_ref
from ferryman.errors import FerrymanError

if TYPE_CHECKING:
    from ferryman.client import Client

__all__ = ["ApiKeyOption", "JsonOption", "UrlOption", "connect", "fail", "model_ref"]

DEFAULT_URL = "http://127.0.0.1:8080"

UrlOption = Annotated[
    str,
    typer.Option("--url", envvar="FERRYMAN_URL", help="Server address."),
]
ApiKeyOption = Annotated[
    str | None,
    typer.Option("--api-key", envvar="FERRYMAN_API_KEY", help="API key sent as a bearer token."),
]
JsonOption = Annotated[
    bool,
    typer.Option("--json", help="Print the raw JSON result instead of tables."),
]


def fail(message: str, *, code: int = 1) -> NoReturn:
    """Print ``Error: message`` in red on stderr and exit with ``code``."""
    from rich.console import Console
    from rich.markup import escape

    Console(stderr=True, highlight=False, soft_wrap=True).print(f"[bold red]Error:[/] [red]{escape(message)}[/]")
    raise typer.Exit(code)


@contextmanager
def connect(url: str, api_key: str | None) -> Iterator[Client]:
    """Open a client for one command; any Ferryman error it raises ends the command with exit 1."""
    from ferryman.client import Client

    try:
        with Client(url, api_key=api_key) as client:
            yield client
    except FerrymanError as exc:
        fail(str(exc))


def model_ref(text: str, *, version: str = "optional", allow_alias: bool = False) -> ModelRef:
    """Parse a ``NAME[:VERSION]`` argument; bad syntax is a usage error (exit 2)."""
    try:
        return parse_ref(text, version=version, allow_alias=allow_alias)
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from None
