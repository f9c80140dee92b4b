"""Feedback → the version and prediction that served it, across processes and replicas.

Feedback names a request id. The process that receives it fills in the version and prediction
from its own ledger of answered requests (``serving/experiments.py``); when it did not answer
that request, the row is stored without a version. Every process then runs this resolver about
once a second: it reads the stored feedback that still names no version (from a cursor, oldest
first), looks each request id up in *its* ledger, and sets the version and prediction on the rows
it answered — a conditional update, so the first process to know wins and no row is written
twice. Live accuracy, the experiment report and alerts read the joined rows from the database.

A row nobody resolves within ``horizon_s`` (the request is older than every ledger, or was never
answered) stays unmatched and the cursor moves past it; the ledger's size bounds how late
feedback may arrive and still be joined (docs/monitoring.md).
"""

from __future__ import annotations

import asyncio
import logging
import time
from concurrent.futures import Executor
from typing import Any

from ferryman.registry.service import RegistryService
from ferryman.serving.experiments import ExperimentRecorder

__all__ = ["FeedbackResolver"]

logger = logging.getLogger(__name__)

_PAGE = 5000


class FeedbackResolver:
    """Joins other processes' unmatched feedback with this process's ledger."""

    def __init__(
        self, registry: RegistryService, recorder: ExperimentRecorder, executor: Executor, horizon_s: float = 300.0
    ) -> None:
        self._registry = registry
        self._recorder = recorder
        self._executor = executor
        self._horizon_s = horizon_s
        #: Rows at or below this id are resolved or given up on; None until the first tick.
        self._cursor: int | None = None
        #: When each still-unresolved row was first seen (to give up on it after the horizon).
        self._first_seen: dict[int, float] = {}
        #: Rows this process resolved (for tests and logs).
        self.resolved = 0

    async def run_forever(self, interval: float = 1.0) -> None:
        """Resolve until cancelled."""
        while True:
            await asyncio.sleep(interval)
            try:
                await asyncio.get_running_loop().run_in_executor(self._executor, self.tick)
            except Exception:
                logger.exception("joining feedback with answered requests failed")

    def tick(self) -> int:
        """One pass (blocking: runs in the I/O pool); returns the rows this process resolved."""
        if self._cursor is None:
            # Feedback stored before this process started was for requests it cannot have answered.
            self._cursor = self._registry.last_feedback_id()
            return 0
        rows = self._registry.unresolved_feedback(after_id=self._cursor, limit=_PAGE)
        now = time.monotonic()
        mine: list[tuple[int, int, Any]] = []
        pending: list[int] = []
        for row_id, model, request_id in rows:
            served = self._recorder.lookup(request_id)
            if served is not None and served.model == model:
                mine.append((row_id, served.version, served.prediction))
            elif now - self._first_seen.setdefault(row_id, now) < self._horizon_s:
                pending.append(row_id)
        done = self._registry.resolve_feedback(mine)
        self.resolved += done
        for row_id, _, _ in mine:
            self._first_seen.pop(row_id, None)
        if pending:
            self._cursor = pending[0] - 1
        elif rows:
            self._cursor = rows[-1][0]
        for row_id in [row_id for row_id in self._first_seen if row_id <= self._cursor]:
            del self._first_seen[row_id]
        return done
