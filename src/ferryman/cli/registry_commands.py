"""Registry commands: push, models, versions, show, delete, alias …, rollback, load, unload."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal

import typer

from ferryman.cli.connection import DEFAULT_URL, ApiKeyOption, JsonOption, UrlOption, connect, fail, model_ref

if TYPE_CHECKING:
    from rich.console import RenderableType

    from ferryman.client import ProgressCallback

__all__ = ["register"]

alias_app = typer.Typer(help="Point named aliases (production, staging, …) at versions.", no_args_is_help=True)

NameArgument = Annotated[str, typer.Argument(metavar="NAME", help="Model name.", show_default=False)]
RefArgument = Annotated[str, typer.Argument(metavar="NAME:VERSION", help="Model and version, e.g. churn:3.")]
AliasArgument = Annotated[str, typer.Argument(help="Alias name.", show_default=False)]


def register(app: typer.Typer) -> None:
    """Add the registry commands to ``app``."""
    app.command()(push)
    app.command()(models)
    app.command()(versions)
    app.command()(show)
    app.command()(delete)
    app.command()(load)
    app.command()(unload)
    app.command("rollback")(alias_rollback)
    app.add_typer(alias_app, name="alias")


def push(
    path: Annotated[Path, typer.Argument(help="Artifact file, or a folder (packed as a tar).", show_default=False)],
    name: Annotated[str, typer.Option("--name", "-n", help="Model name.", show_default=False)],
    sample: Annotated[
        Path | None,
        typer.Option(help="Sample input (.csv or .npy): completes the signature, and is the reference for drift."),
    ] = None,
    framework: Annotated[str | None, typer.Option(help="Framework, when not detected.")] = None,
    description: Annotated[str, typer.Option(help="Free text shown with the version.")] = "",
    runtime_config: Annotated[
        str | None, typer.Option("--runtime-config", help="Runtime options as a JSON object.")
    ] = None,
    sign: Annotated[
        Path | None,
        typer.Option(
            "--sign", help="Ed25519 private key (PEM) to sign the artifact's sha256 with.", show_default=False
        ),
    ] = None,
    url: UrlOption = DEFAULT_URL,
    api_key: ApiKeyOption = None,
    json_output: JsonOption = False,
) -> None:
    """Upload an artifact as a new version of a model."""
    from ferryman.cli.output import short_sha, signature_table, upload_progress

    model_ref(name, version="forbidden")
    if not path.exists():
        raise typer.BadParameter(f"{path} does not exist", param_hint="PATH")
    config = _json_object(runtime_config, "--runtime-config")
    if sign is not None and not sign.is_file():
        raise typer.BadParameter(f"{sign} is not a file", param_hint="--sign")
    # --json output is for scripts: no progress bar, not even on stderr.
    progress: AbstractContextManager[ProgressCallback | None] = (
        nullcontext() if json_output else upload_progress(path.name)
    )
    with connect(url, api_key) as client, progress as report:
        result = client.push(
            path,
            name,
            sample=sample,
            framework=framework,
            description=description,
            runtime_config=config,
            progress=report,
            sign_key=sign,
        )

    def render() -> list[RenderableType]:
        version = result["version"]
        label = f"{version.get('model', name)}:{version.get('version')}"
        sha = short_sha(version.get("sha256"), 8)
        if not result.get("created"):
            return [f"Already registered: [bold]{label}[/] has the same bytes (sha256 {sha})"]
        return [
            f"Registered [bold]{label}[/] ({version.get('framework')}, sha256 {sha})",
            signature_table(version.get("signature")),
        ]

    _report(json_output, result, render)


def models(url: UrlOption = DEFAULT_URL, api_key: ApiKeyOption = None, json_output: JsonOption = False) -> None:
    """List the models."""
    from ferryman.cli.output import models_table

    with connect(url, api_key) as client:
        result = client.models()
    _report(json_output, {"models": result}, lambda: [models_table(result)])


def versions(
    name: NameArgument,
    url: UrlOption = DEFAULT_URL,
    api_key: ApiKeyOption = None,
    json_output: JsonOption = False,
) -> None:
    """List the versions of a model."""
    from ferryman.cli.output import versions_table

    model_ref(name, version="forbidden")
    with connect(url, api_key) as client:
        result = client.versions(name)
    _report(json_output, {"versions": result}, lambda: [versions_table(result)])


def show(
    ref: Annotated[str, typer.Argument(metavar="NAME[:VERSION]", help="A model, or one of its versions.")],
    url: UrlOption = DEFAULT_URL,
    api_key: ApiKeyOption = None,
    json_output: JsonOption = False,
) -> None:
    """Show a model (with its versions) or one version (with its signature)."""
    from ferryman.cli.output import model_table, signature_table, version_table, versions_table

    target = model_ref(ref)
    with connect(url, api_key) as client:
        if target.version is None:
            result = client.model(target.name)
        else:
            result = client.version(target.name, int(target.version))

    def render() -> list[RenderableType]:
        if target.version is None:
            return [model_table(result), versions_table(result.get("versions") or [], title="Versions")]
        return [version_table(result), signature_table(result.get("signature"))]

    _report(json_output, result, render)


def delete(
    ref: Annotated[str, typer.Argument(metavar="NAME[:VERSION]", help="A version, or a whole model.")],
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Confirm deleting a whole model.")] = False,
    url: UrlOption = DEFAULT_URL,
    api_key: ApiKeyOption = None,
    json_output: JsonOption = False,
) -> None:
    """Delete a version, or (with --yes) a whole model and all its versions."""
    target = model_ref(ref)
    if target.version is None and not yes:
        fail(f"deleting the whole model {target.name!r} and all its versions needs --yes")
    with connect(url, api_key) as client:
        if target.version is None:
            client.delete_model(target.name)
        else:
            client.delete_version(target.name, int(target.version))
    what = f"model {target.name} and all its versions" if target.version is None else str(target)
    deleted = {"deleted": str(target), "model": target.name, "version": target.version}
    _report(json_output, deleted, lambda: [f"Deleted {what}"])


def load(
    ref: RefArgument,
    url: UrlOption = DEFAULT_URL,
    api_key: ApiKeyOption = None,
    json_output: JsonOption = False,
) -> None:
    """Load a version into memory."""
    _change_state("load", ref, url, api_key, json_output)


def unload(
    ref: RefArgument,
    url: UrlOption = DEFAULT_URL,
    api_key: ApiKeyOption = None,
    json_output: JsonOption = False,
) -> None:
    """Unload a version from memory."""
    _change_state("unload", ref, url, api_key, json_output)


@alias_app.command("set")
def alias_set(
    name: NameArgument,
    alias: Annotated[str, typer.Argument(help="Alias name, e.g. production.", show_default=False)],
    version: Annotated[int, typer.Argument(min=1, help="Version number.", show_default=False)],
    expected_version: Annotated[
        int | None,
        typer.Option(min=1, help="Only if the alias still points at this version; else the command fails."),
    ] = None,
    url: UrlOption = DEFAULT_URL,
    api_key: ApiKeyOption = None,
    json_output: JsonOption = False,
) -> None:
    """Point an alias at a version (recorded in its history)."""
    model_ref(name, version="forbidden")
    with connect(url, api_key) as client:
        result = client.set_alias(name, alias, version, expected_version=expected_version)
    previous = result.get("previous")
    was = f" (was {previous})" if previous is not None else ""
    _report(json_output, result, lambda: [f"{name}@{alias} → {result.get('version', version)}{was}"])


@alias_app.command("list")
def alias_list(
    name: NameArgument,
    url: UrlOption = DEFAULT_URL,
    api_key: ApiKeyOption = None,
    json_output: JsonOption = False,
) -> None:
    """List a model's aliases."""
    from ferryman.cli.output import aliases_table

    model_ref(name, version="forbidden")
    with connect(url, api_key) as client:
        result = client.aliases(name)
    _report(json_output, {"aliases": result}, lambda: [aliases_table(result)])


@alias_app.command("delete")
def alias_delete(
    name: NameArgument,
    alias: AliasArgument,
    url: UrlOption = DEFAULT_URL,
    api_key: ApiKeyOption = None,
    json_output: JsonOption = False,
) -> None:
    """Remove an alias (its history is kept)."""
    model_ref(name, version="forbidden")
    with connect(url, api_key) as client:
        client.delete_alias(name, alias)
    deleted = {"deleted": f"{name}@{alias}", "model": name, "alias": alias}
    _report(json_output, deleted, lambda: [f"Deleted alias {name}@{alias}"])


@alias_app.command("rollback")
def alias_rollback(
    name: NameArgument,
    alias: Annotated[str, typer.Argument(help="Alias name.")] = "production",
    url: UrlOption = DEFAULT_URL,
    api_key: ApiKeyOption = None,
    json_output: JsonOption = False,
) -> None:
    """Point an alias back at the version it pointed at before its latest change (twice: back again)."""
    model_ref(name, version="forbidden")
    with connect(url, api_key) as client:
        result = client.rollback_alias(name, alias)
    _report(
        json_output,
        result,
        lambda: [f"{name}@{alias} → {result.get('version')} (rolled back from {result.get('previous')})"],
    )


@alias_app.command("history")
def alias_history(
    name: NameArgument,
    alias: AliasArgument,
    url: UrlOption = DEFAULT_URL,
    api_key: ApiKeyOption = None,
    json_output: JsonOption = False,
) -> None:
    """Show every change of an alias."""
    from ferryman.cli.output import alias_history_table

    model_ref(name, version="forbidden")
    with connect(url, api_key) as client:
        result = client.alias_history(name, alias)
    _report(json_output, {"history": result}, lambda: [alias_history_table(result)])


def _json_object(text: str | None, option: str) -> dict[str, Any] | None:
    """Parse an option's JSON object; bad JSON or another JSON value is a usage error."""
    if text is None:
        return None
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise typer.BadParameter(f"not valid JSON: {exc.msg}", param_hint=option) from None
    if not isinstance(value, dict):
        raise typer.BadParameter("expected a JSON object", param_hint=option)
    return value


def _change_state(
    action: Literal["load", "unload"], ref: str, url: str, api_key: str | None, json_output: bool
) -> None:
    """Load or unload one version and report its new state."""
    target = model_ref(ref, version="required")
    version = int(target.version or 0)
    with connect(url, api_key) as client:
        result = client.load(target.name, version) if action == "load" else client.unload(target.name, version)
    state = str(result.get("state"))
    if result.get("state_reason"):
        state += f": {result['state_reason']}"
    _report(json_output, result, lambda: [f"{result.get('model')}:{result.get('version')} {state}"])


def _report(json_output: bool, value: Any, render: Callable[[], Iterable[RenderableType]]) -> None:
    """Print ``value`` as JSON with --json; otherwise print what ``render`` builds, in order."""
    from ferryman.cli.output import print_json, stdout

    if json_output:
        print_json(value)
        return
    console = stdout()
    for item in render():
        console.print(item)
