"""Which versions stay loaded: the model's version policy, plus what its traffic is routed to.

After every catalog change the manager asks :class:`VersionKeeper` to bring memory in line:
versions the policy keeps (``CatalogModel.versions_to_keep``: aliased + latest N, or an explicit
list, plus traffic-policy and rollout targets) are loaded; a version that *was* kept and no longer
is gets unloaded (after its in-flight requests finish, like every unload); a version loaded only
because a request named it explicitly stays until it has been idle for ``idle_unload_s``. The
serving default always stays, and versions the memory budget unloaded are not brought back (they
load again on their next request).
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING

from ferryman.errors import FerrymanError

if TYPE_CHECKING:
    from ferryman.serving.catalog import CatalogModel
    from ferryman.serving.manager import ModelManager

__all__ = ["IDLE_UNLOAD_S", "VersionKeeper"]

logger = logging.getLogger(__name__)

#: A version nothing keeps loaded (loaded for an explicit request) is unloaded once idle this long.
IDLE_UNLOAD_S = 60.0


class VersionKeeper:
    """Loads and unloads versions as their models' version and traffic policies say."""

    def __init__(self, manager: ModelManager, idle_unload_s: float = IDLE_UNLOAD_S) -> None:
        self._manager = manager
        self._idle_unload_s = idle_unload_s
        #: Versions loaded because a policy keeps them, per model.
        self._kept: dict[str, set[int]] = {}

    async def apply(self, models: dict[str, CatalogModel]) -> None:
        """Bring every model's loaded versions in line with what its policies keep."""
        for name in [name for name in self._kept if name not in models]:
            del self._kept[name]
        for model in models.values():
            await self._apply(model)

    async def _apply(self, model: CatalogModel) -> None:
        from ferryman.serving.manager import EVICTED_REASON, VersionState

        manager = self._manager
        keep = model.versions_to_keep()
        for number in sorted(keep):
            state, reason = manager.state(model.name, number)
            if state is not VersionState.UNLOADED or reason == EVICTED_REASON:
                continue  # loaded, loading, failed (and named), or the memory budget's choice
            try:
                await manager.load(model.name, number)
            except FerrymanError as exc:
                logger.error("%s (kept loaded by the model's version or traffic policy)", exc.message)
        dropped = self._kept.get(model.name, set()) - keep
        self._kept[model.name] = keep
        now = time.monotonic()
        default = manager.serving_default(model.name)
        for loaded in manager.loaded_versions():
            if loaded.model != model.name or loaded.version in keep or loaded.version == default:
                continue
            idle = loaded.inflight == 0 and now - loaded.last_used >= self._idle_unload_s
            if loaded.version in dropped or idle:
                await manager.unload(model.name, loaded.version)
