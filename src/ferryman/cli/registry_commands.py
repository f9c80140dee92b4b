"""Registry commands: push, models, versions, show, delete, alias …, load, unload."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

from ferryman.cli.connection import DEFAULT_URL, ApiKeyOption, JsonOption, UrlOption, connect, fail, model_ref

__all__ = ["register"]

alias_app = typer.Typer(
    help="Point named aliases (production, staging, …) at versions.", no_args_is_help=True
)

NameArgument = Annotated[str, typer.Argument(metavar="NAME", help="Model name.", show_default=False)]
RefArgument = Annotated[str, typer.Argument(metavar="NAME:VERSION", help="Model and version, e.g. churn:3.")]


def register(app: typer.Typer) -> None:
    """Add the registry commands to ``app``."""
    app.command()(push)
    app.command()(models)
    app.command()(versions)
    app.command()(show)
    app.command()(delete)
    app.command()(load)
    app.command()(unload)
    app.add_typer(alias_app, name="alias")


def push(
    path: Annotated[
        Path, typer.Argument(help="Artifact file, or a folder (packed as a tar).", show_default=False)
    ],
    name: Annotated[str, typer.Option("--name", "-n", help="Model name.", show_default=False)],
    sample: Annotated[
        Path | None, typer.Option(help="Sample input (.csv or .npy) to infer the signature from.")
    ] = None,
    framework: Annotated[str | None, typer.Option(help="Framework, when not detected.")] = None,
    description: Annotated[str, typer.Option(help="Free text shown with the version.")] = "",
    runtime_config: Annotated[
        str | None, typer.Option("--runtime-config", help="Runtime options as a JSON object.")
    ] = None,
    url: UrlOption = DEFAULT_URL,
    api_key: ApiKeyOption = None,
    json_output: JsonOption = False,
) -> None:
    """Upload an artifact as a new version of a model."""
    model_ref(name, version="forbidden")
    if not path.exists():
        raise typer.BadParameter(f"{path} does not exist", param_hint="PATH")
    config: dict[str, Any] | None = None
    if runtime_config is not None:
        try:
            config = json.loads(runtime_config)
        except json.JSONDecodeError as exc:
            raise typer.BadParameter(f"not valid JSON: {exc.msg}", param_hint="--runtime-config") from None
        if not isinstance(config, dict):
            raise typer.BadParameter("expected a JSON object", param_hint="--runtime-config")
    with connect(url, api_key) as client:
        if json_output:
            result = client.push(
                path, name, sample=sample, framework=framework, description=description, runtime_config=config
            )
        else:
            from rich.console import Console
            from rich.progress import (
                BarColumn,
                DownloadColumn,
                Progress,
                TextColumn,
                TimeRemainingColumn,
                TransferSpeedColumn,
            )

            with Progress(
                TextColumn("{task.description}"),
                BarColumn(),
                DownloadColumn(),
                TransferSpeedColumn(),
                TimeRemainingColumn(),
                console=Console(stderr=True),
                transient=True,
            ) as progress:
                task = progress.add_task(f"Uploading {path.name}", total=None)

                def report(sent: int, total: int) -> None:
                    label = f"Uploading {path.name}" if sent < total else "Registering"
                    progress.update(task, completed=sent, total=total, description=label)

                result = client.push(
                    path,
                    name,
                    sample=sample,
                    framework=framework,
                    description=description,
                    runtime_config=config,
                    progress=report,
                )
    if json_output:
        _print_json(result)
        return
    from ferryman.cli.output import short_sha, signature_table, stdout

    version = result["version"]
    label = f"{version.get('model', name)}:{version.get('version')}"
    sha = short_sha(version.get("sha256"), 8)
    console = stdout()
    if result.get("created"):
        console.print(f"Registered [bold]{label}[/] ({version.get('framework')}, sha256 {sha})")
        console.print(signature_table(version.get("signature")))
    else:
        console.print(f"Already registered: [bold]{label}[/] has the same bytes (sha256 {sha})")


def models(
    url: UrlOption = DEFAULT_URL, api_key: ApiKeyOption = None, json_output: JsonOption = False
) -> None:
    """List the models."""
    with connect(url, api_key) as client:
        result = client.models()
    if json_output:
        _print_json({"models": result})
        return
    from ferryman.cli.output import models_table, stdout

    stdout().print(models_table(result))


def versions(
    name: NameArgument,
    url: UrlOption = DEFAULT_URL,
    api_key: ApiKeyOption = None,
    json_output: JsonOption = False,
) -> None:
    """List the versions of a model."""
    model_ref(name, version="forbidden")
    with connect(url, api_key) as client:
        result = client.versions(name)
    if json_output:
        _print_json({"versions": result})
        return
    from ferryman.cli.output import stdout, versions_table

    stdout().print(versions_table(result))


def show(
    ref: Annotated[str, typer.Argument(metavar="NAME[:VERSION]", help="A model, or one of its versions.")],
    url: UrlOption = DEFAULT_URL,
    api_key: ApiKeyOption = None,
    json_output: JsonOption = False,
) -> None:
    """Show a model (with its versions) or one version (with its signature)."""
    target = model_ref(ref)
    with connect(url, api_key) as client:
        if target.version is None:
            result = client.model(target.name)
        else:
            result = client.version(target.name, int(target.version))
    if json_output:
        _print_json(result)
        return
    from ferryman.cli.output import (
        model_table,
        signature_table,
        stdout,
        version_table,
        versions_table,
    )

    console = stdout()
    if target.version is None:
        console.print(model_table(result))
        console.print(versions_table(result.get("versions") or [], title="Versions"))
    else:
        console.print(version_table(result))
        console.print(signature_table(result.get("signature")))


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
    if json_output:
        _print_json({"deleted": str(target), "model": target.name, "version": target.version})
        return
    from ferryman.cli.output import stdout

    what = f"model {target.name} and all its versions" if target.version is None else str(target)
    stdout().print(f"Deleted {what}")


def load(
    ref: RefArgument,
    url: UrlOption = DEFAULT_URL,
    api_key: ApiKeyOption = None,
    json_output: JsonOption = False,
) -> None:
    """Load a version into memory."""
    target = model_ref(ref, version="required")
    with connect(url, api_key) as client:
        result = client.load(target.name, int(target.version or 0))
    _print_state(result, json_output)


def unload(
    ref: RefArgument,
    url: UrlOption = DEFAULT_URL,
    api_key: ApiKeyOption = None,
    json_output: JsonOption = False,
) -> None:
    """Unload a version from memory."""
    target = model_ref(ref, version="required")
    with connect(url, api_key) as client:
        result = client.unload(target.name, int(target.version or 0))
    _print_state(result, json_output)


@alias_app.command("set")
def alias_set(
    name: NameArgument,
    alias: Annotated[str, typer.Argument(help="Alias name, e.g. production.", show_default=False)],
    version: Annotated[int, typer.Argument(min=1, help="Version number.", show_default=False)],
    url: UrlOption = DEFAULT_URL,
    api_key: ApiKeyOption = None,
    json_output: JsonOption = False,
) -> None:
    """Point an alias at a version (recorded in its history)."""
    model_ref(name, version="forbidden")
    with connect(url, api_key) as client:
        result = client.set_alias(name, alias, version)
    if json_output:
        _print_json(result)
        return
    from ferryman.cli.output import stdout

    previous = result.get("previous")
    was = f" (was {previous})" if previous is not None else ""
    stdout().print(f"{name}@{alias} → {result.get('version', version)}{was}")


@alias_app.command("list")
def alias_list(
    name: NameArgument,
    url: UrlOption = DEFAULT_URL,
    api_key: ApiKeyOption = None,
    json_output: JsonOption = False,
) -> None:
    """List a model's aliases."""
    model_ref(name, version="forbidden")
    with connect(url, api_key) as client:
        result = client.aliases(name)
    if json_output:
        _print_json({"aliases": result})
        return
    from ferryman.cli.output import aliases_table, stdout

    stdout().print(aliases_table(result))


@alias_app.command("delete")
def alias_delete(
    name: NameArgument,
    alias: Annotated[str, typer.Argument(help="Alias name.", show_default=False)],
    url: UrlOption = DEFAULT_URL,
    api_key: ApiKeyOption = None,
    json_output: JsonOption = False,
) -> None:
    """Remove an alias (its history is kept)."""
    model_ref(name, version="forbidden")
    with connect(url, api_key) as client:
        client.delete_alias(name, alias)
    if json_output:
        _print_json({"deleted": f"{name}@{alias}", "model": name, "alias": alias})
        return
    from ferryman.cli.output import stdout

    stdout().print(f"Deleted alias {name}@{alias}")


@alias_app.command("history")
def alias_history(
    name: NameArgument,
    alias: Annotated[str, typer.Argument(help="Alias name.", show_default=False)],
    url: UrlOption = DEFAULT_URL,
    api_key: ApiKeyOption = None,
    json_output: JsonOption = False,
) -> None:
    """Show every change of an alias."""
    model_ref(name, version="forbidden")
    with connect(url, api_key) as client:
        result = client.alias_history(name, alias)
    if json_output:
        _print_json({"history": result})
        return
    from ferryman.cli.output import alias_history_table, stdout

    stdout().print(alias_history_table(result))


def _print_state(version: dict[str, Any], json_output: bool) -> None:
    if json_output:
        _print_json(version)
        return
    from ferryman.cli.output import stdout

    state = str(version.get("state"))
    if version.get("state_reason"):
        state += f": {version['state_reason']}"
    stdout().print(f"{version.get('model')}:{version.get('version')} {state}")


def _print_json(value: Any) -> None:
    from ferryman.cli.output import print_json

    print_json(value)
