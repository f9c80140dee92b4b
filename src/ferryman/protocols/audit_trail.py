"""Writing audit records from the request path: buffered, in batches, in the executor, never on the event loop.

Two kinds of entries arrive here. Management actions (a push, an alias change, …) are few and
each one already did a registry write: they are never dropped and wake the writer at once.
Authentication and authorization failures can arrive at any rate — a flood of bad keys — so
they are written at most once a second, in one transaction per batch, and past ``max_pending``
waiting entries they are dropped and counted; the next batch records how many were dropped
(``audit.dropped``). A failing write is logged and retried with the next batch.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from concurrent.futures import Executor

from ferryman.registry.service import RegistryService
from ferryman.security.audit import AuditEntry

__all__ = ["AuditTrail"]

logger = logging.getLogger(__name__)


class AuditTrail:
    """A bounded buffer of audit entries and the task that writes them (see the module docstring)."""

    def __init__(
        self,
        registry: RegistryService,
        executor: Executor,
        *,
        interval_s: float = 1.0,
        max_pending: int = 10_000,
        max_batch: int = 1000,
    ) -> None:
        self._registry = registry
        self._executor = executor
        self._interval = interval_s
        self._max_pending = max_pending
        self._max_batch = max_batch
        self._pending: deque[AuditEntry] = deque()
        self._droppable = 0
        self._dropped = 0
        self._wake: asyncio.Event | None = None

    def record(self, entry: AuditEntry) -> None:
        """Queue a management action's record: never dropped, written at once."""
        self._pending.append(entry)
        if self._wake is not None:
            self._wake.set()

    def failure(self, entry: AuditEntry) -> None:
        """Queue an authentication or authorization failure: written within a second, dropped in a flood."""
        if self._droppable >= self._max_pending:
            self._dropped += 1
            return
        self._droppable += 1
        self._pending.append(entry)

    async def run_forever(self) -> None:
        """Write what is queued, in batches, until cancelled (then write the rest before returning)."""
        self._wake = asyncio.Event()
        loop = asyncio.get_running_loop()
        try:
            while True:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), timeout=self._interval)
                self._wake.clear()
                batch = self._take()
                if batch:
                    try:
                        await loop.run_in_executor(self._executor, self._registry.append_audit_many, batch)
                    except Exception:
                        logger.exception("writing %d audit records failed; retrying with the next batch", len(batch))
                        self._pending.extendleft(reversed(batch))
                        self._droppable = len(self._pending)
                if len(self._pending) > self._max_batch:
                    self._wake.set()
        finally:
            self.flush()

    def flush(self) -> None:
        """Write everything queued now, blocking (at shutdown)."""
        while self._pending or self._dropped:
            batch = self._take()
            try:
                self._registry.append_audit_many(batch)
            except Exception:
                logger.exception("writing %d audit records at shutdown failed", len(batch))
                return

    def _take(self) -> list[AuditEntry]:
        batch: list[AuditEntry] = []
        while self._pending and len(batch) < self._max_batch:
            batch.append(self._pending.popleft())
        self._droppable = max(0, self._droppable - len(batch))
        if self._dropped:
            details = {"dropped": self._dropped, "why": "too many authentication failures queued at once"}
            batch.append(AuditEntry("ferryman", "audit.dropped", "", "failed", "", details))
            self._dropped = 0
        return batch
