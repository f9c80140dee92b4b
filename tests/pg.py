"""A throwaway PostgreSQL cluster from Debian's binaries, for tests that run on PostgreSQL.

Import the fixtures where they are needed (``from tests.pg import postgres, database_url``).
``postgres`` starts one cluster per test session (initdb into a fresh folder, run as the
``postgres`` OS user when the tests run as root, since initdb refuses root) and stops it at the
end; ``database_url`` is parametrised over ``sqlite`` and ``postgres`` and gives each test its own
empty database. Missing binaries fail the test with the command that installs them — never a skip.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import pwd
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from tests.conftest import free_port

__all__ = ["PostgresCluster", "database_url", "find_pg_bin", "postgres"]

_PG_ROOT = Path("/usr/lib/postgresql")
_DB_NAMES = itertools.count(1)


def find_pg_bin() -> Path:
    """The newest installed PostgreSQL's bin folder; fails saying how to install it."""
    candidates = sorted(
        (p / "bin" for p in _PG_ROOT.glob("*") if (p / "bin" / "initdb").is_file()),
        key=lambda p: int(p.parent.name) if p.parent.name.isdigit() else 0,
    )
    if not candidates:
        pytest.fail(
            f"PostgreSQL server binaries not found under {_PG_ROOT}: run `make sysdeps` "
            "(installs the Debian `postgresql` package)",
            pytrace=False,
        )
    return candidates[-1]


class PostgresCluster:
    """One PostgreSQL server on a free loopback port, with its data in a temporary folder."""

    def __init__(self) -> None:
        self.bin = find_pg_bin()
        self.root = Path(tempfile.mkdtemp(prefix="ferryman-pg-"))
        self.data = self.root / "data"
        self.sockets = self.root / "sockets"
        self.log = self.root / "postgres.log"
        self.port = free_port()
        self._as_root = os.geteuid() == 0
        self.sockets.mkdir()
        if self._as_root:
            user = pwd.getpwnam("postgres")
            for path in (self.root, self.sockets):
                os.chown(path, user.pw_uid, user.pw_gid)
        self._run(
            "initdb",
            "-D",
            str(self.data),
            "-A",
            "trust",
            "-U",
            "postgres",
            "-E",
            "UTF8",
            "--locale=C",
            "--no-sync",
        )

    def _command(self, tool: str, *args: str) -> list[str]:
        command = [str(self.bin / tool), *args]
        return ["runuser", "-u", "postgres", "--", *command] if self._as_root else command

    def _run(self, tool: str, *args: str) -> None:
        result = subprocess.run(self._command(tool, *args), capture_output=True, text=True, timeout=120)
        if result.returncode != 0:
            log = self.log.read_text(errors="replace") if self.log.exists() else ""
            raise RuntimeError(f"{tool} failed ({result.returncode}):\n{result.stdout}\n{result.stderr}\n{log}")

    def _options(self) -> str:
        # Durability off: the cluster lives for one test session; fast restarts matter more.
        return (
            f"-k {self.sockets} -p {self.port} -c listen_addresses=127.0.0.1 -c fsync=off "
            "-c synchronous_commit=off -c full_page_writes=off -c max_connections=200"
        )

    def start(self) -> None:
        """Start the server and wait until it accepts connections."""
        self._run("pg_ctl", "-D", str(self.data), "-l", str(self.log), "-o", self._options(), "-w", "start")

    def stop(self) -> None:
        """Stop the server (fast shutdown: open sessions are disconnected)."""
        self._run("pg_ctl", "-D", str(self.data), "-m", "fast", "-w", "stop")

    def restart(self) -> None:
        """Restart the server, dropping every connection (what a database failover looks like)."""
        self._run(
            "pg_ctl", "-D", str(self.data), "-l", str(self.log), "-o", self._options(), "-m", "fast", "-w", "restart"
        )

    def url(self, database: str = "postgres") -> str:
        """The SQLAlchemy URL of ``database`` on this server."""
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/{database}"

    def create_database(self, prefix: str = "ferryman") -> str:
        """A new empty database; returns its URL."""
        name = f"{prefix}_{next(_DB_NAMES)}"
        with psycopg.connect(f"host=127.0.0.1 port={self.port} user=postgres dbname=postgres", autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def destroy(self) -> None:
        """Stop the server if it runs and remove its folder."""
        with contextlib.suppress(RuntimeError):  # not running
            self._run("pg_ctl", "-D", str(self.data), "-m", "immediate", "-w", "stop")
        shutil.rmtree(self.root, ignore_errors=True)


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresCluster]:
    """A PostgreSQL server for the whole session (started on first use)."""
    cluster = PostgresCluster()
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.destroy()


@pytest.fixture(params=["sqlite", "postgres"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """An empty registry database: SQLite at ``<tmp_path>/home/registry.db``, or a new PostgreSQL database."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'home' / 'registry.db'}"
    cluster: PostgresCluster = request.getfixturevalue("postgres")
    return cluster.create_database()
