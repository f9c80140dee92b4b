"""Graceful shutdown: on SIGTERM stop being ready, finish what is in flight, then exit 0.

The sequence (``docs/operations.md``, "Draining on shutdown"):

1. SIGTERM (or SIGINT): :class:`DrainState` turns on, so ``/v2/health/ready`` answers 503 at once
   and a load balancer stops sending. The listener stays open while the requests in flight at the
   signal (running or queued in a batcher) finish: a request that still arrives is served too.
2. When those are done, or the drain timeout has passed, uvicorn's own shutdown runs: the listener
   closes (new connections are refused by the kernel), idle keep-alive connections close, and the
   requests still running get what is left of the timeout.
3. Requests still running then are cut (cancelled: uvicorn answers a bare 500), the app's lifespan
   shutdown unloads the models, and the process exits 0. uvicorn would re-raise the signal after
   its shutdown (exit status 143); a drained server has done what SIGTERM asks.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import socket
import threading
import time
from collections.abc import Iterator
from types import FrameType

import uvicorn

__all__ = ["DrainState", "DrainingServer"]

logger = logging.getLogger(__name__)

_SIGNALS = (signal.SIGTERM, signal.SIGINT)
# Lifespan shutdown (unloading models, flushing monitoring) after the requests are done or cut.
_SHUTDOWN_GRACE_SECONDS = 5.0


class DrainState:
    """Whether this server process is draining; readiness reads it on every probe."""

    def __init__(self) -> None:
        self._started: float | None = None
        self.cut = 0
        """Requests still running when the drain timeout ran out (cut, unanswered)."""

    @property
    def draining(self) -> bool:
        """True from the first SIGTERM/SIGINT on."""
        return self._started is not None

    def begin(self) -> None:
        """Start draining (idempotent; a signal handler may call it)."""
        if self._started is None:
            self._started = time.monotonic()

    def elapsed(self) -> float:
        """Seconds since draining began (0 before)."""
        return 0.0 if self._started is None else time.monotonic() - self._started


class DrainingServer(uvicorn.Server):
    """A uvicorn server that drains in-flight requests for up to ``drain_timeout`` seconds on SIGTERM."""

    def __init__(self, config: uvicorn.Config, drain: DrainState, drain_timeout: float) -> None:
        super().__init__(config)
        self.drain = drain
        self._timeout = drain_timeout
        self._at_signal: set[asyncio.Task[None]] | None = None

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        """Signal handler: the first signal starts draining; a second SIGINT quits at once."""
        if self.drain.draining and sig == signal.SIGINT:
            self.force_exit = True
            self.should_exit = True
            return
        self.drain.begin()

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        """Install the drain handler for SIGTERM and SIGINT; unlike uvicorn, never re-raise the signal."""
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        previous = {sig: signal.signal(sig, self.handle_exit) for sig in _SIGNALS}
        try:
            yield
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    async def on_tick(self, counter: int) -> bool:
        """Every 0.1 s: once draining, close when the signal's in-flight requests are done or time is up."""
        if self.drain.draining and not self.should_exit:
            if self._at_signal is None:
                self._at_signal = set(self.server_state.tasks)
            # Only what was in flight at the signal keeps the listener open: under steady traffic
            # there is always some request in flight, and the drain would last the full timeout.
            self._at_signal = {task for task in self._at_signal if not task.done()}
            in_flight = len(self.server_state.tasks)
            elapsed = self.drain.elapsed()
            if counter % 10 == 0 or not self._at_signal:
                logger.info("draining: %d request(s) in flight, %.1f s of %.1f s", in_flight, elapsed, self._timeout)
            if not self._at_signal or elapsed >= self._timeout:
                if in_flight:
                    self.drain.cut = in_flight
                    logger.warning("drain timeout (%.1f s) passed: cutting %d request(s)", self._timeout, in_flight)
                # uvicorn's shutdown gives the requests still running what is left of the timeout.
                self.config.timeout_graceful_shutdown = max(0.0, self._timeout - elapsed)  # type: ignore[assignment]
                self.should_exit = True
        return await super().on_tick(counter)

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        """uvicorn's shutdown (listener, connections, lifespan), bounded by the drain timeout plus a grace."""
        remaining = max(0.0, self._timeout - self.drain.elapsed())
        try:
            await asyncio.wait_for(super().shutdown(sockets), timeout=remaining + _SHUTDOWN_GRACE_SECONDS)
        except TimeoutError:
            logger.error("shutdown did not finish within the drain timeout; exiting anyway")
            self.drain.cut = max(self.drain.cut, 1)
