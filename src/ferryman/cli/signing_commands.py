"""``ferryman signing-key create``: an Ed25519 key pair for signing pushed artifacts."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from ferryman.cli.connection import JsonOption, fail
from ferryman.errors import FerrymanError

__all__ = ["register"]

signing_app = typer.Typer(help="Keys that sign pushed artifacts (ferryman push --sign).", no_args_is_help=True)


def register(app: typer.Typer) -> None:
    """Add ``signing-key`` to ``app``."""
    app.add_typer(signing_app, name="signing-key")


@signing_app.command("create")
def create(
    out: Annotated[Path, typer.Option("--out", "-o", help="Private key file to write (PEM, mode 0600).")],
    public_out: Annotated[
        Path | None,
        typer.Option("--public-out", help="Public key file to write.", show_default="<out without .pem>.pub.pem"),
    ] = None,
    json_output: JsonOption = False,
) -> None:
    """Create an Ed25519 key pair: keep the private key secret, give the public key to servers."""
    from ferryman.cli.output import print_json, stdout
    from ferryman.security.signing import create_key_pair

    try:
        public_path, key_id = create_key_pair(out, public_out)
    except FerrymanError as exc:
        fail(str(exc))
    except OSError as exc:
        fail(f"cannot write the key: {exc}")
    result = {"private_key": str(out), "public_key": str(public_path), "key_id": key_id}
    if json_output:
        print_json(result)
        return
    console = stdout()
    console.print(f"Private key [bold]{out}[/] (mode 0600): pass it to [bold]ferryman push --sign[/]; keep it secret")
    console.print(f"Public key  [bold]{public_path}[/]: list it in the server's signing_public_keys")
    console.print(f"Key id      [bold]{key_id}[/]")
