"""The ``ferryman`` command: run a server (``serve``) or talk to one (everything else).

Commands import the client, numpy and rich only when they run, so ``ferryman --help`` stays quick.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from ferryman.cli import (
    alert_commands,
    db_commands,
    experiment_commands,
    monitoring_commands,
    predict_command,
    registry_commands,
    rollout_commands,
    security_commands,
    signing_commands,
    traffic_commands,
    version_policy_commands,
)
from ferryman.cli.connection import fail

__all__ = ["app", "main"]

app = typer.Typer(
    name="ferryman",
    help="Ferryman: serve models over the Open Inference Protocol (V2), and manage their versions.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


@app.command()
def serve(
    artifacts: Annotated[
        list[Path] | None,
        typer.Argument(help="Artifact files or folders to register and serve at startup.", show_default=False),
    ] = None,
    host: Annotated[str | None, typer.Option(help="Address to bind.", show_default="127.0.0.1")] = None,
    port: Annotated[int | None, typer.Option(help="Port to listen on.", show_default="8080")] = None,
    grpc_port: Annotated[
        int | None, typer.Option(help="V2 gRPC port (0: a free one; -1: no gRPC).", show_default="8081")
    ] = None,
    repository: Annotated[
        list[Path] | None,
        typer.Option(help="Read-only model repository folder (repeatable).", show_default=False),
    ] = None,
    home: Annotated[Path | None, typer.Option(help="Registry and artifact folder.", show_default=".ferryman")] = None,
    config: Annotated[
        Path | None,
        typer.Option("--config", "-c", help="Settings file.", show_default="./ferryman.yaml if present"),
    ] = None,
    log_level: Annotated[str | None, typer.Option(help="debug, info, warning or error.", show_default="info")] = None,
    workers: Annotated[
        int | None, typer.Option(help="Server processes sharing the port (each loads the models).", show_default="1")
    ] = None,
    tls_cert: Annotated[
        Path | None, typer.Option(help="Certificate chain (PEM): serve HTTPS (TLS 1.2+).", show_default=False)
    ] = None,
    tls_key: Annotated[Path | None, typer.Option(help="Private key of --tls-cert (PEM).", show_default=False)] = None,
    tls_client_ca: Annotated[
        Path | None,
        typer.Option(help="CA (PEM) client certificates must chain to: require one (mTLS).", show_default=False),
    ] = None,
    insecure: Annotated[
        bool,
        typer.Option(
            "--insecure", help="Serve a non-loopback address with no credentials configured (no authentication)."
        ),
    ] = False,
) -> None:
    """Start a server. Flags override FERRYMAN_* variables, which override ferryman.yaml."""
    import yaml

    from ferryman.config import load_settings
    from ferryman.errors import FerrymanError

    if config is not None and not config.is_file():
        raise typer.BadParameter(f"{config} is not a file", param_hint="--config")
    missing = [str(path) for path in artifacts or [] if not path.exists()]
    if missing:
        raise typer.BadParameter(f"not found: {', '.join(missing)}", param_hint="ARTIFACTS")
    try:
        settings = load_settings(
            config,
            host=host,
            port=port,
            grpc_port=grpc_port,
            home=home,
            repositories=list(repository) if repository else None,
            log_level=log_level,
            workers=workers,
            tls_cert=tls_cert,
            tls_key=tls_key,
            tls_client_ca=tls_client_ca,
            insecure=True if insecure else None,
        )
    except (ValueError, OSError, yaml.YAMLError) as exc:
        fail(f"invalid settings: {exc}")
    from ferryman.security.exposure import UnsafeExposure
    from ferryman.server import serve as run_server

    try:
        run_server(settings, artifacts=list(artifacts or []))
    except UnsafeExposure as exc:
        fail(str(exc), code=2)
    except FerrymanError as exc:
        fail(str(exc))


registry_commands.register(app)
predict_command.register(app)
traffic_commands.register(app)
rollout_commands.register(app)
version_policy_commands.register(app)
experiment_commands.register(app)
monitoring_commands.register(app)
security_commands.register(app)
alert_commands.register(app)
signing_commands.register(app)
db_commands.register(app)


def main() -> None:
    """Console entry point."""
    app()


if __name__ == "__main__":
    main()
