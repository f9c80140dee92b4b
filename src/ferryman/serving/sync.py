"""Keeping the catalog and the loaded versions in step with the registry and repository folders.

Writes made through this process refresh at once (the management API awaits :meth:`refresh`).
Writes from elsewhere — another worker process or replica on the same database — are noticed by
polling the registry's revision counter (one single-row query) every ``revision_interval``
seconds, and on demand when a request names a model or version this process has not seen yet.
On PostgreSQL a ``wake`` event (``registry/notify.py``: LISTEN/NOTIFY) cuts the wait short the
moment another process commits, so the poll is only the safety net there. Repository folders are
rescanned every ``repository_interval`` seconds.

While the registry cannot be reached the catalog keeps its last snapshot and loaded versions keep
serving; :attr:`CatalogSync.registry_reachable` says so (readiness uses it), and the next
successful poll or notification catches up.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from concurrent.futures import Executor

from ferryman.serving.catalog import Catalog
from ferryman.serving.manager import ModelManager

__all__ = ["CatalogSync"]

logger = logging.getLogger(__name__)

#: Least time between two on-demand revision checks, so unknown names cannot hammer the database.
_STALE_CHECK_INTERVAL = 0.1


class CatalogSync:
    """Refreshes the catalog off the event loop, then lets the manager reconcile."""

    def __init__(self, catalog: Catalog, manager: ModelManager, executor: Executor) -> None:
        self._catalog = catalog
        self._manager = manager
        self._executor = executor
        self._lock = asyncio.Lock()
        self._last_stale_check = 0.0
        #: False while the last revision check failed (the database is down or unreachable).
        self.registry_reachable = True

    async def refresh(self) -> None:
        """Rebuild the catalog now and bring loaded versions in line with it."""
        async with self._lock:
            await asyncio.get_running_loop().run_in_executor(self._executor, self._catalog.refresh)
            await self._manager.reconcile()

    async def refresh_if_stale(self) -> bool:
        """Refresh when the registry has moved on since the snapshot; True when it did."""
        if self._lock.locked():
            # A refresh is under way (the poller's or another request's): the catalog may already
            # carry the new revision while the versions are still being reconciled, so comparing
            # revisions now would wrongly say "nothing new". Wait for it and look again.
            async with self._lock:
                pass
            return True
        now = time.monotonic()
        if now - self._last_stale_check < _STALE_CHECK_INTERVAL:
            return False
        self._last_stale_check = now
        loop = asyncio.get_running_loop()
        try:
            revision = await loop.run_in_executor(self._executor, self._catalog.registry_revision)
        except Exception:
            return False  # registry unreachable: answer from the snapshot (a 404 stays a 404)
        if revision == self._catalog.revision:
            return False
        await self.refresh()
        return True

    async def poll_forever(
        self, repository_interval: float, revision_interval: float = 0.25, wake: asyncio.Event | None = None
    ) -> None:
        """Follow registry writes made elsewhere and rescan repository folders, until cancelled.

        ``wake``, when given, is set by the change feed after a write committed elsewhere: the
        revision is checked at once instead of at the next poll.
        """
        loop = asyncio.get_running_loop()
        last_scan = time.monotonic()
        while True:
            interval = min(revision_interval, repository_interval)
            if wake is None:
                await asyncio.sleep(interval)
            else:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(wake.wait(), timeout=interval)
                wake.clear()
            try:
                revision = await loop.run_in_executor(self._executor, self._catalog.registry_revision)
            except Exception as exc:
                if self.registry_reachable:
                    logger.warning("registry check failed (%s); serving what is loaded until it is back", exc)
                self.registry_reachable = False
                continue
            if not self.registry_reachable:
                logger.warning("the registry is reachable again; catching up")
                self.registry_reachable = True
            due = time.monotonic() - last_scan >= repository_interval
            if revision == self._catalog.revision and not due:
                continue
            last_scan = time.monotonic()
            try:
                async with self._lock:
                    if await loop.run_in_executor(self._executor, self._catalog.refresh):
                        await self._manager.reconcile()
            except Exception:
                logger.exception("catalog refresh failed; serving what is loaded")
