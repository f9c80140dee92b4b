"""Feedback → bandits: stored feedback is read incrementally and fed to each model's bandit.

Every process reads the ``feedback`` table by id (so feedback posted to any process or replica
teaches every process's bandit), about once a second, for the models whose traffic policy has a
bandit. A fresh process starts from the first row, so a bandit's knowledge survives restarts.
A reward is the item's ``reward``; without one, a label is turned into a reward: for binary
bandits 1 when it equals what the version predicted and 0 otherwise, for continuous bandits the
negative absolute error.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import math
from concurrent.futures import Executor
from typing import Any

from ferryman.errors import FerrymanError
from ferryman.registry.records import FeedbackRecord
from ferryman.registry.service import RegistryService
from ferryman.serving.manager import ModelManager

__all__ = ["FeedbackFollower", "reward_of"]

logger = logging.getLogger(__name__)

_PAGE = 5000


def reward_of(record: FeedbackRecord, kind: str) -> float | None:
    """The bandit reward one feedback record gives, or None when it gives none."""
    if record.reward is not None:
        return record.reward
    if record.label is None or record.prediction is None:
        return None
    if kind == "binary":
        return 1.0 if record.label == record.prediction else 0.0
    label, prediction = _number(record.label), _number(record.prediction)
    return None if label is None or prediction is None else -abs(label - prediction)


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        return None
    return float(value)


class FeedbackFollower:
    """Keeps each bandit up to date with the feedback stored for its model."""

    def __init__(self, registry: RegistryService, manager: ModelManager, executor: Executor) -> None:
        self._registry = registry
        self._manager = manager
        self._executor = executor
        self._cursors: dict[str, int] = {}
        #: Rewards applied so far (for tests and the experiment report).
        self.applied = 0

    async def run_forever(self, interval: float = 1.0) -> None:
        """Poll until cancelled."""
        while True:
            await asyncio.sleep(interval)
            try:
                await self.tick()
            except Exception:
                logger.exception("feeding feedback to bandits failed")

    async def tick(self) -> None:
        """Apply the feedback stored since the last tick to every bandit."""
        loop = asyncio.get_running_loop()
        for model in list(self._manager.catalog_models().values()):
            traffic = model.traffic
            if traffic is None or traffic.bandit is None or traffic.policy.bandit is None:
                continue
            kind = traffic.policy.bandit.reward
            while True:
                cursor = self._cursors.get(model.name, 0)
                read = functools.partial(self._registry.read_feedback, model.name, after_id=cursor, limit=_PAGE)
                try:
                    rows = await loop.run_in_executor(self._executor, read)
                except FerrymanError:
                    break
                for row in rows:
                    reward = reward_of(row, kind)
                    if reward is None or row.version is None:
                        continue
                    try:
                        if traffic.record_reward(row.version, reward):
                            self.applied += 1
                    except FerrymanError as exc:  # e.g. a reward of 5 for a binary bandit: skip that row
                        logger.warning("feedback %s for model '%s' ignored: %s", row.id, model.name, exc.message)
                if rows:
                    self._cursors[model.name] = rows[-1].id
                if len(rows) < _PAGE:
                    break
