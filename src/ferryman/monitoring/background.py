"""One worker thread behind a bounded queue: the lifecycle the monitoring pipeline and the payload
logger share (start once, wake, flush up to what was queued, stop).

The producer (the event loop) counts what it queued in ``_enqueued``; the worker counts what it
finished in ``_done`` under ``_progress`` and notifies, which is what :meth:`flush` waits on.
"""

from __future__ import annotations

import threading

__all__ = ["BackgroundWorker"]


class BackgroundWorker:
    """Start/close/flush of a daemon worker thread; subclasses implement ``_run``."""

    def __init__(self, thread_name: str, close_timeout: float) -> None:
        self._thread_name = thread_name
        self._close_timeout = close_timeout
        self._enqueued = 0  # producer only
        self._done = 0  # worker only, under _progress
        self._progress = threading.Condition()
        self._wake = threading.Event()
        self._stopping = False
        self._thread: threading.Thread | None = None

    def _run(self) -> None:
        raise NotImplementedError

    def start(self) -> None:
        """Start the worker thread (once)."""
        if self._thread is None:
            self._stopping = False
            self._thread = threading.Thread(target=self._run, name=self._thread_name, daemon=True)
            self._thread.start()

    def close(self, timeout: float | None = None) -> None:
        """Stop the worker, waiting at most ``timeout`` seconds (what it does with the queue is its own)."""
        self._stopping = True
        self._wake.set()
        if self._thread is not None:
            self._thread.join(self._close_timeout if timeout is None else timeout)
            self._thread = None

    def flush(self, timeout: float = 5.0) -> bool:
        """Wait until every record queued before the call was processed; False on timeout."""
        target = self._enqueued
        if self._thread is None:
            return self._done >= target
        self._wake.set()
        with self._progress:
            return self._progress.wait_for(lambda: self._done >= target, timeout)
