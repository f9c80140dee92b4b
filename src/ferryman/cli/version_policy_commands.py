"""``ferryman model-policy show|set``: which versions of a model stay loaded."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from ferryman.cli.connection import DEFAULT_URL, ApiKeyOption, JsonOption, UrlOption, connect, model_ref

__all__ = ["register"]

policy_app = typer.Typer(help="Choose which versions of a model stay loaded.", no_args_is_help=True)

NameArgument = Annotated[str, typer.Argument(metavar="NAME", help="Model name.", show_default=False)]


def register(app: typer.Typer) -> None:
    """Add the ``model-policy`` command group to ``app``."""
    app.add_typer(policy_app, name="model-policy")


def _version_list(text: str) -> list[int]:
    numbers = []
    for part in text.split(","):
        part = part.strip()
        if not part.isdigit() or int(part) < 1:
            raise typer.BadParameter(f"expected version numbers like 3,4, got {part!r}", param_hint="--versions")
        numbers.append(int(part))
    return numbers


@policy_app.command("show")
def policy_show(
    name: NameArgument,
    url: UrlOption = DEFAULT_URL,
    api_key: ApiKeyOption = None,
    json_output: JsonOption = False,
) -> None:
    """Show which versions of a model stay loaded."""
    from ferryman.cli.release_output import report, version_policy_text

    model_ref(name, version="forbidden")
    with connect(url, api_key) as client:
        policy = client.version_policy(name)
    report(json_output, {"model": name, "policy": policy}, lambda: [version_policy_text(name, policy)])


@policy_app.command("set")
def policy_set(
    name: NameArgument,
    latest: Annotated[
        int | None,
        typer.Option(
            min=0, help="Keep aliased versions and this many newest ones (the default is 1).", show_default=False
        ),
    ] = None,
    versions: Annotated[
        str | None, typer.Option(help="Keep exactly these versions, e.g. 3,4.", show_default=False)
    ] = None,
    url: UrlOption = DEFAULT_URL,
    api_key: ApiKeyOption = None,
    json_output: JsonOption = False,
) -> None:
    """Set which versions stay loaded: --latest N (plus aliased ones) or exactly --versions 3,4."""
    from ferryman.cli.release_output import report, version_policy_text

    model_ref(name, version="forbidden")
    if (latest is None) == (versions is None):
        raise typer.BadParameter("give either --latest N or --versions 3,4", param_hint="--latest/--versions")
    body: dict[str, Any] = (
        {"keep": "aliased_and_latest", "latest": latest}
        if latest is not None
        else {"keep": "explicit", "versions": _version_list(versions or "")}
    )
    with connect(url, api_key) as client:
        policy = client.set_version_policy(name, body)
    report(json_output, {"model": name, "policy": policy}, lambda: [version_policy_text(name, policy)])
