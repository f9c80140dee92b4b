"""Hearing about registry writes made by other processes the moment they commit (PostgreSQL LISTEN).

Every registry write on PostgreSQL sends ``NOTIFY ferryman_registry, '<revision>'`` in its own
transaction (``store.write_transaction``), so the notification goes out exactly when the write
commits. :class:`ChangeFeed` holds one dedicated connection per process that LISTENs on that
channel, in a daemon thread (a LISTEN connection must not come from the pool, and waiting on it
must not occupy the event loop or the I/O executor). Each notification sets the asyncio events of
the followers (the catalog sync, the API-key cache), which then compare revisions and reload.

The connection is checked while idle and reopened with exponential backoff when it drops (a
database restart or failover); every (re)connection wakes the followers too, because writes made
while it was away were not heard. The followers' periodic revision poll stays as the safety net.
On SQLite there is nothing to listen to: the feed never wakes anyone and the poll does the work.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time

from sqlalchemy.engine import make_url

from ferryman.registry.store import CHANGE_CHANNEL

__all__ = ["ChangeFeed"]

logger = logging.getLogger(__name__)

#: Seconds without a notification after which the idle connection is checked with a query.
_IDLE_CHECK_S = 5.0
#: Longest single wait for notifications, so that :meth:`ChangeFeed.close` is noticed promptly.
_WAIT_S = 0.5
_CONNECT_TIMEOUT_S = 5


class ChangeFeed:
    """A LISTEN connection that wakes this process's followers after every committed registry write."""

    def __init__(self, database_url: str, *, backoff_min_s: float = 0.1, backoff_max_s: float = 2.0) -> None:
        url = make_url(database_url)
        self.listening = url.get_backend_name() == "postgresql"
        # psycopg takes a libpq URI: the same URL without SQLAlchemy's "+driver" part.
        self._conninfo = url.set(drivername="postgresql").render_as_string(hide_password=False)
        self._backoff_min = backoff_min_s
        self._backoff_max = backoff_max_s
        self._followers: list[tuple[asyncio.AbstractEventLoop, asyncio.Event]] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.connected = False
        self._down = False
        self.notifications = 0
        self.reconnects = 0

    def follow(self) -> asyncio.Event:
        """An event set after each committed write (and each reconnection); call on the event loop."""
        event = asyncio.Event()
        with self._lock:
            self._followers.append((asyncio.get_running_loop(), event))
        return event

    def start(self) -> None:
        """Start listening in a daemon thread (nothing to do on SQLite)."""
        if not self.listening or self._thread is not None:
            return
        self._thread = threading.Thread(target=self._run, name="ferryman-registry-listen", daemon=True)
        self._thread.start()

    def close(self) -> None:
        """Stop listening; returns once the thread has let go of its connection."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(_WAIT_S + _CONNECT_TIMEOUT_S + 1)
            self._thread = None

    def _wake(self) -> None:
        with self._lock:
            followers = list(self._followers)
        for loop, event in followers:
            with contextlib.suppress(RuntimeError):  # that loop is closed: its part has shut down
                loop.call_soon_threadsafe(event.set)

    def _run(self) -> None:
        backoff = self._backoff_min
        while not self._stop.is_set():
            try:
                self._listen()
            except Exception as exc:
                if not self._down:
                    logger.warning("registry change feed lost its connection (%s); reconnecting with backoff", exc)
                    backoff = self._backoff_min
                self._down = True
            finally:
                self.connected = False
            if self._stop.wait(backoff):
                return
            backoff = min(backoff * 2, self._backoff_max)

    def _listen(self) -> None:
        import psycopg  # the `postgres` extra; imported only when the registry is on PostgreSQL

        with psycopg.connect(self._conninfo, autocommit=True, connect_timeout=_CONNECT_TIMEOUT_S) as conn:
            conn.execute(f"LISTEN {CHANGE_CHANNEL}")
            self.connected = True
            if self._down:
                self._down = False
                self.reconnects += 1
                logger.warning("registry change feed reconnected; catching up")
            else:
                logger.info("listening for registry changes on PostgreSQL channel %r", CHANGE_CHANNEL)
            # Writes committed while we were not listening were not heard: let followers reconcile.
            self._wake()
            last_heard = time.monotonic()
            while not self._stop.is_set():
                for _ in conn.notifies(timeout=_WAIT_S):
                    self.notifications += 1
                    last_heard = time.monotonic()
                    self._wake()  # at once: the generator only returns when the wait times out
                if time.monotonic() - last_heard >= _IDLE_CHECK_S:
                    conn.execute("SELECT 1")  # a dead peer only shows when we talk to it
                    last_heard = time.monotonic()
