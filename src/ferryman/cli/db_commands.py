"""``ferryman db upgrade`` and ``ferryman db current``: the registry schema, without a server.

The server upgrades the schema itself at start-up; running ``db upgrade`` first (a Kubernetes Job
or an init step before rolling out a new release) keeps that off the replicas' start-up path, and
concurrent upgrades are serialised by an advisory lock on PostgreSQL. The database comes from
``--database-url``, else ``FERRYMAN_DATABASE_URL`` / ``ferryman.yaml``, else SQLite under ``--home``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from ferryman.cli.connection import fail

__all__ = ["register"]

db_app = typer.Typer(help="The registry database: upgrade the schema, show its revision.", no_args_is_help=True)

HomeOption = Annotated[
    Path | None,
    typer.Option("--home", help="Registry folder (SQLite) when no database URL is configured.", show_default=False),
]
DatabaseUrlOption = Annotated[
    str | None,
    typer.Option(
        "--database-url", help="SQLAlchemy URL of the registry (postgresql+psycopg://...).", show_default=False
    ),
]
ConfigOption = Annotated[
    Path | None, typer.Option("--config", help="ferryman.yaml to read settings from.", show_default=False)
]


def register(app: typer.Typer) -> None:
    """Add ``db`` to ``app``."""
    app.add_typer(db_app, name="db")


def _database_url(config: Path | None, home: Path | None, database_url: str | None) -> str:
    from ferryman.config import load_settings

    try:
        settings = load_settings(config, home=home, database_url=database_url)
    except ValueError as exc:
        fail(f"invalid settings: {exc}")
    return settings.resolved_database_url


def _shown(url: str) -> str:
    from sqlalchemy.engine import make_url

    return make_url(url).render_as_string(hide_password=True)


@db_app.command("upgrade")
def upgrade(home: HomeOption = None, database_url: DatabaseUrlOption = None, config: ConfigOption = None) -> None:
    """Apply pending schema migrations (a no-op when the schema is current)."""
    from ferryman.registry.store import SCHEMA_HEAD, create_registry_engine, current_revisions, upgrade_to_head

    url = _database_url(config, home, database_url)
    engine = create_registry_engine(url)
    try:
        before = current_revisions(engine)
        upgrade_to_head(engine)
        after = current_revisions(engine)
    except Exception as exc:
        fail(f"upgrading the registry at {_shown(url)} failed: {exc}")
    finally:
        engine.dispose()
    was = ", ".join(sorted(before)) or "empty"
    if before == after:
        typer.echo(f"registry at {_shown(url)} is current (schema {SCHEMA_HEAD})")
    else:
        typer.echo(f"registry at {_shown(url)} upgraded: {was} -> {', '.join(sorted(after))}")


@db_app.command("current")
def current(home: HomeOption = None, database_url: DatabaseUrlOption = None, config: ConfigOption = None) -> None:
    """Print the schema revision; exit 1 when it is behind this release's (run ``ferryman db upgrade``)."""
    from ferryman.registry.store import SCHEMA_HEAD, create_registry_engine, current_revisions

    url = _database_url(config, home, database_url)
    engine = create_registry_engine(url)
    try:
        revisions = current_revisions(engine)
    except Exception as exc:
        fail(f"reading the registry at {_shown(url)} failed: {exc}")
    finally:
        engine.dispose()
    shown = ", ".join(sorted(revisions)) or "empty"
    if revisions == {SCHEMA_HEAD}:
        typer.echo(f"{shown} (head)")
        return
    typer.echo(f"{shown} (this release needs {SCHEMA_HEAD}: run `ferryman db upgrade`)")
    raise typer.Exit(1)
