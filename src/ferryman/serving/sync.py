"""Keeping the catalog and the loaded versions in step with the registry and repository folders.

Writes made through this process refresh at once (the management API awaits :meth:`refresh`);
writes from elsewhere (another process on the same database, a new version folder) are picked
up by :meth:`poll_forever`, which rescans every ``interval`` seconds.
"""

from __future__ import annotations

import asyncio
import logging
from concurrent.futures import Executor

from ferryman.serving.catalog import Catalog
from ferryman.serving.manager import ModelManager

__all__ = ["CatalogSync"]

logger = logging.getLogger(__name__)


class CatalogSync:
    """Refreshes the catalog off the event loop, then lets the manager reconcile."""

    def __init__(self, catalog: Catalog, manager: ModelManager, executor: Executor) -> None:
        self._catalog = catalog
        self._manager = manager
        self._executor = executor
        self._lock = asyncio.Lock()

    async def refresh(self) -> None:
        """Rebuild the catalog now and bring loaded versions in line with it."""
        async with self._lock:
            loop = asyncio.get_running_loop()
            await loop.run_in_executor(self._executor, self._catalog.refresh)
            await self._manager.reconcile()

    async def poll_forever(self, interval: float) -> None:
        """Rescan sources every ``interval`` seconds; reconcile only when something changed."""
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(interval)
            try:
                async with self._lock:
                    if await loop.run_in_executor(self._executor, self._catalog.refresh):
                        await self._manager.reconcile()
            except Exception:
                logger.exception("catalog refresh failed; serving what is loaded")
