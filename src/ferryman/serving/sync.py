"""Keeping the catalog and the loaded versions in step with the registry and repository folders.

Writes made through this process refresh at once (the management API awaits :meth:`refresh`).
Writes from elsewhere — another worker process or replica on the same database — are noticed by
polling the registry's revision counter (one single-row query) every ``revision_interval``
seconds, and on demand when a request names a model or version this process has not seen yet.
Repository folders are rescanned every ``repository_interval`` seconds.
"""

from __future__ import annotations

import asyncio
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

    async def refresh(self) -> None:
        """Rebuild the catalog now and bring loaded versions in line with it."""
        async with self._lock:
            await asyncio.get_running_loop().run_in_executor(self._executor, self._catalog.refresh)
            await self._manager.reconcile()

    async def refresh_if_stale(self) -> bool:
        """Refresh when the registry has moved on since the snapshot; True when it did."""
        now = time.monotonic()
        if now - self._last_stale_check < _STALE_CHECK_INTERVAL:
            return False
        self._last_stale_check = now
        loop = asyncio.get_running_loop()
        revision = await loop.run_in_executor(self._executor, self._catalog.registry_revision)
        if revision == self._catalog.revision:
            return False
        await self.refresh()
        return True

    async def poll_forever(self, repository_interval: float, revision_interval: float = 0.25) -> None:
        """Follow registry writes made elsewhere and rescan repository folders, until cancelled."""
        loop = asyncio.get_running_loop()
        last_scan = time.monotonic()
        while True:
            await asyncio.sleep(min(revision_interval, repository_interval))
            try:
                revision = await loop.run_in_executor(self._executor, self._catalog.registry_revision)
                due = time.monotonic() - last_scan >= repository_interval
                if revision == self._catalog.revision and not due:
                    continue
                last_scan = time.monotonic()
                async with self._lock:
                    if await loop.run_in_executor(self._executor, self._catalog.refresh):
                        await self._manager.reconcile()
            except Exception:
                logger.exception("catalog refresh failed; serving what is loaded")
