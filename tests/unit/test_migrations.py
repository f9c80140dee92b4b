"""Alembic migrations on SQLite and PostgreSQL: the migrated schema is exactly store.metadata, upgrades are
idempotent, and every migration downgrades and upgrades again from an empty database."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Column, Engine, Integer, MetaData, String, Table, inspect, select, text

from ferryman.registry import store
from ferryman.registry.store import create_registry_engine, metadata, registry_state, upgrade_to_head
from tests.pg import database_url, postgres  # noqa: F401 (fixtures)


@pytest.fixture
def engine(database_url: str) -> Iterator[Engine]:  # noqa: F811
    engine = create_registry_engine(database_url)
    yield engine
    engine.dispose()


@pytest.fixture
def sqlite_engine(tmp_path: Path) -> Iterator[Engine]:
    engine = create_registry_engine(f"sqlite:///{tmp_path / 'nested' / 'dir' / 'registry.db'}")
    yield engine
    engine.dispose()


def schema_snapshot(engine: Engine) -> list[tuple[str, list[tuple[str, str, bool]], list[str]]]:
    """Every table with its columns (name, type, nullable) and index names, in a portable form."""
    inspector = inspect(engine)
    return [
        (
            table,
            [(c["name"], str(c["type"]), bool(c["nullable"])) for c in inspector.get_columns(table)],
            sorted(str(i["name"]) for i in inspector.get_indexes(table)),
        )
        for table in sorted(inspector.get_table_names())
    ]


def head() -> str:
    config = Config()
    config.set_main_option("script_location", str(store.MIGRATIONS_DIR))
    heads = ScriptDirectory.from_config(config).get_heads()
    assert len(heads) == 1
    return heads[0]


def schema_diffs(engine: Engine, target: MetaData) -> list[object]:
    with engine.connect() as conn:
        context = MigrationContext.configure(conn, opts={"compare_type": True})
        return list(compare_metadata(context, target))


def current(engine: Engine) -> str | None:
    with engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


def test_sqlite_folder_is_created(sqlite_engine: Engine, tmp_path: Path) -> None:
    upgrade_to_head(sqlite_engine)
    assert (tmp_path / "nested" / "dir" / "registry.db").is_file()


def test_upgrade_from_empty_matches_metadata(engine: Engine) -> None:
    upgrade_to_head(engine)
    assert current(engine) == head()
    assert schema_diffs(engine, metadata) == []
    with engine.connect() as conn:
        assert conn.execute(select(registry_state)).all() == [(1, 0)]


def test_schema_comparison_would_notice_a_drift(engine: Engine) -> None:
    upgrade_to_head(engine)
    drifted = MetaData()
    for table in metadata.sorted_tables:
        table.to_metadata(drifted)
    Table("extra", drifted, Column("id", Integer, primary_key=True))
    drifted.tables["models"].append_column(Column("owner", String(64)))
    diffs = schema_diffs(engine, drifted)
    assert {diff[0] for diff in diffs if isinstance(diff, tuple)} == {"add_table", "add_column"}


def test_rerunning_upgrade_is_a_no_op(engine: Engine) -> None:
    upgrade_to_head(engine)
    with engine.begin() as conn:
        conn.execute(registry_state.update().values(revision=41))
    before = schema_snapshot(engine)
    upgrade_to_head(engine)
    second = create_registry_engine(engine.url.render_as_string(hide_password=False))
    upgrade_to_head(second)
    second.dispose()
    after = schema_snapshot(engine)
    with engine.connect() as conn:
        assert conn.execute(select(registry_state.c.revision)).scalar_one() == 41
    assert after == before
    assert current(engine) == head()


def test_downgrade_to_base_and_back(engine: Engine) -> None:
    upgrade_to_head(engine)
    config = Config()
    config.set_main_option("script_location", str(store.MIGRATIONS_DIR))
    with engine.begin() as conn:
        config.attributes["connection"] = conn
        command.downgrade(config, "base")
    assert set(inspect(engine).get_table_names()) == {"alembic_version"}
    upgrade_to_head(engine)
    assert schema_diffs(engine, metadata) == []


def test_sqlite_pragmas_are_set(sqlite_engine: Engine) -> None:
    with sqlite_engine.connect() as conn:
        pragmas = {
            name: conn.execute(text(f"PRAGMA {name}")).scalar_one()
            for name in ("journal_mode", "foreign_keys", "busy_timeout", "synchronous")
        }
    assert pragmas == {"journal_mode": "wal", "foreign_keys": 1, "busy_timeout": 5000, "synchronous": 1}


def test_foreign_keys_are_enforced(engine: Engine) -> None:
    upgrade_to_head(engine)
    with pytest.raises(Exception, match=r"(?i)foreign key"), engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO aliases (model_id, name, version_number, updated_at, updated_by) "
                "VALUES (99, 'production', 1, '2026-01-01 00:00:00', 'x')"
            )
        )


def test_schema_head_constant_matches_alembic() -> None:
    from alembic.config import Config
    from alembic.script import ScriptDirectory

    from ferryman.registry.store import MIGRATIONS_DIR, SCHEMA_HEAD

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    assert ScriptDirectory.from_config(config).get_heads() == [SCHEMA_HEAD]


def alembic_config() -> Config:
    config = Config()
    config.set_main_option("script_location", str(store.MIGRATIONS_DIR))
    return config


def test_0003_adds_keys_and_audit_with_an_empty_chain_head(engine: Engine) -> None:
    upgrade_to_head(engine)
    tables = set(inspect(engine).get_table_names())
    assert {"api_keys", "audit_log", "audit_state"} <= tables
    with engine.connect() as conn:
        assert conn.execute(select(store.audit_state)).all() == [(1, 0, "0" * 64)]


def test_upgrading_from_0002_keeps_the_data_and_downgrading_0003_removes_only_its_tables(engine: Engine) -> None:
    config = alembic_config()
    with engine.begin() as conn:
        config.attributes["connection"] = conn
        command.upgrade(config, "0002")
    with engine.begin() as conn:
        conn.execute(text("INSERT INTO models (name, description, created_at) VALUES ('churn', '', '2026-01-01')"))
        conn.execute(registry_state.update().values(revision=7))
    upgrade_to_head(engine)
    assert current(engine) == head()
    assert schema_diffs(engine, metadata) == []
    with engine.connect() as conn:
        assert conn.execute(text("SELECT name FROM models")).scalars().all() == ["churn"]
        assert conn.execute(select(registry_state.c.revision)).scalar_one() == 7
    with engine.begin() as conn:
        config.attributes["connection"] = conn
        command.downgrade(config, "0002")
    tables = set(inspect(engine).get_table_names())
    assert not tables & {"api_keys", "audit_log", "audit_state", "version_profiles"}
    assert {"models", "versions", "feedback", "rollouts"} <= tables
    upgrade_to_head(engine)
    assert schema_diffs(engine, metadata) == []


def test_0004_adds_version_profiles_and_downgrading_removes_only_them(engine: Engine) -> None:
    config = alembic_config()
    with engine.begin() as conn:
        config.attributes["connection"] = conn
        command.upgrade(config, "0003")
    with engine.begin() as conn:
        conn.execute(text("INSERT INTO models (name, description, created_at) VALUES ('churn', '', '2026-01-01')"))
    upgrade_to_head(engine)
    assert "version_profiles" in set(inspect(engine).get_table_names())
    assert schema_diffs(engine, metadata) == []
    with engine.begin() as conn:
        config.attributes["connection"] = conn
        command.downgrade(config, "0003")
    tables = set(inspect(engine).get_table_names())
    assert "version_profiles" not in tables and {"api_keys", "audit_log", "feedback"} <= tables
    with engine.connect() as conn:
        assert conn.execute(text("SELECT name FROM models")).scalars().all() == ["churn"]
