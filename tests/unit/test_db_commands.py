"""``ferryman db upgrade`` and ``ferryman db current`` on SQLite and PostgreSQL."""

from __future__ import annotations

from alembic import command
from alembic.config import Config
from typer.testing import CliRunner

from ferryman.cli.main import app
from ferryman.registry.store import MIGRATIONS_DIR, SCHEMA_HEAD, create_registry_engine, current_revisions
from tests.pg import database_url, postgres  # noqa: F401 (fixtures)

runner = CliRunner()


def test_upgrade_creates_the_schema_and_current_reports_it(database_url: str) -> None:  # noqa: F811
    behind = runner.invoke(app, ["db", "current", "--database-url", database_url])
    assert behind.exit_code == 1
    assert "empty" in behind.output and "ferryman db upgrade" in behind.output

    upgraded = runner.invoke(app, ["db", "upgrade", "--database-url", database_url])
    assert upgraded.exit_code == 0, upgraded.output
    assert f"empty -> {SCHEMA_HEAD}" in upgraded.output

    again = runner.invoke(app, ["db", "upgrade", "--database-url", database_url])
    assert again.exit_code == 0 and "is current" in again.output

    current = runner.invoke(app, ["db", "current", "--database-url", database_url])
    assert current.exit_code == 0 and current.output.strip() == f"{SCHEMA_HEAD} (head)"


def test_upgrade_moves_an_older_schema_to_head(database_url: str) -> None:  # noqa: F811
    engine = create_registry_engine(database_url)
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    with engine.begin() as conn:
        config.attributes["connection"] = conn
        command.upgrade(config, "0002")
    result = runner.invoke(app, ["db", "upgrade", "--database-url", database_url])
    assert result.exit_code == 0, result.output
    assert f"0002 -> {SCHEMA_HEAD}" in result.output
    assert current_revisions(engine) == {SCHEMA_HEAD}
    engine.dispose()


def test_an_unreachable_database_is_reported_without_a_traceback() -> None:
    from tests.conftest import free_port

    url = f"postgresql+psycopg://ferryman:secret@127.0.0.1:{free_port()}/registry"
    result = runner.invoke(app, ["db", "current", "--database-url", url])
    assert result.exit_code == 1
    assert "registry database is unavailable" in result.output
    assert "secret" not in result.output and "***" in result.output
