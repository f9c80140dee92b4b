"""The registry's engine factory, its write and append transactions, and programmatic Alembic upgrades.

The same schema runs on SQLite (embedded default) and PostgreSQL. Writes go through
:func:`write_transaction`, which takes the registry's write lock first (``BEGIN IMMEDIATE`` on
SQLite, the ``registry_state`` row lock on PostgreSQL) and bumps ``registry_state.revision`` so
other processes can poll one integer to learn that something changed. On PostgreSQL the same
transaction also sends ``NOTIFY ferryman_registry, '<revision>'`` (delivered at commit, never for a
rolled-back write), which ``registry/notify.py`` listens for. A PostgreSQL server that cannot be
reached surfaces as :class:`RegistryUnavailable` (503), not as a driver error.
"""

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import (
    Connection,
    Engine,
    create_engine,
    event,
    inspect,
    select,
    text,
    update,
)
from sqlalchemy.engine import ExceptionContext, make_url

from ferryman.errors import NotReady
from ferryman.registry.schema import registry_state

MIGRATIONS_DIR = Path(__file__).parent / "migrations"

# Execution option that makes the SQLite "begin" hook take the write lock up front.
_WRITE_OPTION = "ferryman_write"
# Arbitrary constant naming the PostgreSQL advisory lock that serialises schema upgrades.
_UPGRADE_LOCK_ID = 0x66657279

#: PostgreSQL NOTIFY channel carrying the new revision after every committed registry write.
CHANGE_CHANNEL = "ferryman_registry"

# Seconds a new PostgreSQL connection may take: an unreachable server must fail a management write
# quickly (503), not hang it for the kernel's TCP timeout.
_PG_CONNECT_TIMEOUT_S = 5


class RegistryUnavailable(NotReady):
    """The registry database cannot be reached (503); what is loaded keeps serving."""


def _set_sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    # Let SQLAlchemy emit BEGIN itself (see _begin_sqlite); sqlite3's legacy mode would not
    # open a transaction for SELECTs or DDL.
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    try:
        for pragma in (
            "journal_mode=WAL",
            "foreign_keys=ON",
            "busy_timeout=5000",
            "synchronous=NORMAL",
        ):
            cursor.execute(f"PRAGMA {pragma}")
    finally:
        cursor.close()


def _unavailable_on_connection_loss(context: ExceptionContext) -> None:
    # No connection (it could not be opened) or a dropped one: the server is unreachable, which
    # callers see as one 503 naming the registry, whatever the driver called it. A failed
    # pre-ping is left alone: the pool handles it by opening a fresh connection.
    if context.is_pre_ping:
        return
    if context.is_disconnect or context.connection is None:
        reason = str(context.original_exception).strip().splitlines()[0] if context.original_exception else ""
        raise RegistryUnavailable(
            f"the registry database is unavailable ({reason}); models already loaded keep serving, "
            "registry changes are refused until it is back — retry shortly"
        ) from context.original_exception


def _begin_sqlite(conn: Connection) -> None:
    # A deferred write transaction that read first fails at once with "database is locked" when
    # another writer got in between, without waiting on busy_timeout; taking the lock at BEGIN
    # makes concurrent writers queue instead.
    immediate = conn.get_execution_options().get(_WRITE_OPTION, False)
    conn.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")


def create_registry_engine(url: str) -> Engine:
    """Create the registry's engine; for SQLite, create the folder and configure the pragmas."""
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite":
        connect_args = {"connect_timeout": _PG_CONNECT_TIMEOUT_S} if parsed.get_backend_name() == "postgresql" else {}
        engine = create_engine(parsed, pool_pre_ping=True, connect_args=connect_args)
        event.listen(engine, "handle_error", _unavailable_on_connection_loss)
        return engine
    database = parsed.database
    if database and database != ":memory:" and not database.startswith("file:"):
        Path(database).expanduser().parent.mkdir(parents=True, exist_ok=True)
    engine = create_engine(parsed)
    event.listen(engine, "connect", _set_sqlite_pragmas)
    event.listen(engine, "begin", _begin_sqlite)
    return engine


@contextmanager
def write_transaction(engine: Engine, *, bump_revision: bool = True) -> Iterator[Connection]:
    """Open a transaction holding the registry's write lock; commit on success.

    With ``bump_revision`` the revision is incremented first (on PostgreSQL that UPDATE takes
    the ``registry_state`` row lock, which every writer needs, so writers queue behind it until
    the holder commits) and, on PostgreSQL, the new revision is NOTIFYed on :data:`CHANGE_CHANNEL`
    in the same transaction. Without it the state row is only locked (SELECT ... FOR UPDATE), for
    housekeeping that changes no registry content (such as deciding whether a blob is still
    referenced).
    """
    with engine.connect() as conn:
        conn.execution_options(**{_WRITE_OPTION: True})
        with conn.begin():
            if bump_revision:
                revision = conn.execute(
                    update(registry_state)
                    .values(revision=registry_state.c.revision + 1)
                    .returning(registry_state.c.revision)
                ).scalar_one()
                if conn.dialect.name == "postgresql":
                    notify = text("SELECT pg_notify(:channel, :payload)")
                    conn.execute(notify, {"channel": CHANGE_CHANNEL, "payload": str(revision)})
            else:
                conn.execute(select(registry_state.c.revision).with_for_update())
            yield conn


@contextmanager
def append_transaction(engine: Engine) -> Iterator[Connection]:
    """A write transaction for appended data (feedback) that does not change the registry.

    It takes SQLite's write lock at BEGIN, like every writer there, but neither bumps nor locks
    ``registry_state``: appends must not make every process rebuild its catalog, nor queue
    behind registry writes on PostgreSQL.
    """
    with engine.connect() as conn:
        conn.execution_options(**{_WRITE_OPTION: True})
        with conn.begin():
            yield conn


#: The newest migration's revision id; a test pins it to Alembic's own head. Comparing against it
#: lets a server on a current schema start without importing Alembic (a few hundred ms here).
SCHEMA_HEAD = "0006"


def current_revisions(engine: Engine) -> set[str]:
    """The revisions recorded in the database (empty for a new database)."""
    with engine.connect() as conn:
        if not inspect(conn).has_table("alembic_version"):
            return set()
        return {str(row[0]) for row in conn.execute(text("SELECT version_num FROM alembic_version"))}


def _alembic_config() -> Any:
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    return config


def upgrade_to_head(engine: Engine) -> None:
    """Apply any pending Alembic migrations; returns quickly when the schema is current."""
    if current_revisions(engine) == {SCHEMA_HEAD}:
        return
    from alembic import command

    config = _alembic_config()
    with engine.connect() as conn:
        conn.execution_options(**{_WRITE_OPTION: True})
        with conn.begin():
            if conn.dialect.name == "postgresql":
                conn.execute(text("SELECT pg_advisory_xact_lock(:id)"), {"id": _UPGRADE_LOCK_ID})
            config.attributes["connection"] = conn
            command.upgrade(config, "head")
