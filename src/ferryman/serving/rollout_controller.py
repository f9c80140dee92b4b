"""Progressive rollouts: shift an alias's traffic to a new version step by step, or roll back.

The rollout itself lives in the registry (``registry/rollouts.py``); the router diverts the
current step's share of the alias's requests to the new version. This controller runs in every
server process, ticking twice a second, and for each *running* rollout:

1. the first time it sees a step, loads the new version (a version that fails to load fails the
   rollout: nothing changes for users) and snapshots that version's request counters;
2. checks the guards on what the new version served since then — ``max_error_rate`` (model
   failures and deadline misses over requests), ``max_p99_ms`` (p99 latency, interpolated in the
   latency histogram) and ``min_agreement`` (shadow copies of the alias's other requests whose
   decision matched) — once a guard has ``MIN_SAMPLE`` observations, and always when the step
   ends; a breach rolls the rollout back, saying which guard, by how much, at which step;
3. when the step's interval has passed with no breach, moves to the next step — after the last,
   completes: the alias points at the new version in the same registry transaction.

Every process judges what it served; writes carry the rollout's revision, so when several
processes act at once one wins and the others read the new state (a 409 is expected here).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from concurrent.futures import Executor
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from ferryman.errors import Conflict, FerrymanError
from ferryman.monitoring.metrics import LATENCY_BUCKETS, RequestMetrics, histogram_quantile
from ferryman.registry.records import RolloutRecord
from ferryman.registry.service import RegistryService
from ferryman.security.audit import AuditEntry
from ferryman.serving.manager import ModelManager
from ferryman.serving.shadow import ShadowRunner
from ferryman.serving.sync import CatalogSync

__all__ = ["MIN_SAMPLE", "RolloutController", "StepWindow"]

logger = logging.getLogger(__name__)

#: Audit actions of the controller's own writes, by the state they set (anything else is a step).
_AUDIT_ACTIONS = {"completed": "rollout.complete", "rolled_back": "rollout.rollback", "failed": "rollout.fail"}
#: Observations a guard needs before it is judged in the middle of a step.
MIN_SAMPLE = 50
_ERROR_OUTCOMES = ("failed", "deadline")


@dataclass(slots=True)
class StepWindow:
    """Counters of the new version when this process first saw the step (subtracted later)."""

    rollout_id: int
    step_index: int
    outcomes: dict[str, int]
    latency: list[int]
    compared: int
    agreed: int


@dataclass(frozen=True, slots=True)
class StepFigures:
    """What the new version did during the step, in this process."""

    requests: int
    errors: int
    p99_ms: float | None
    compared: int
    agreed: int

    def breach(self, guards: dict[str, float], final: bool) -> str | None:
        """The first guard this step breaks, described; None when all hold (so far)."""
        limit = guards.get("max_error_rate")
        if limit is not None and self.requests and (final or self.requests >= MIN_SAMPLE):
            rate = self.errors / self.requests
            if rate > limit:
                return f"error rate {rate:.2%} ({self.errors}/{self.requests}) is over the {limit:.2%} limit"
        limit = guards.get("max_p99_ms")
        if (
            limit is not None
            and self.p99_ms is not None
            and (final or self.requests >= MIN_SAMPLE)
            and self.p99_ms > limit
        ):
            return f"p99 latency {self.p99_ms:.1f} ms is over the {limit:g} ms limit"
        limit = guards.get("min_agreement")
        if limit is not None and self.compared and (final or self.compared >= MIN_SAMPLE):
            agreement = self.agreed / self.compared
            if agreement < limit:
                return f"agreement with the current version {agreement:.2%} is under the {limit:.2%} minimum"
        return None


class RolloutController:
    """Advances, completes and rolls back the rollouts the catalog shows as running."""

    def __init__(
        self,
        registry: RegistryService,
        manager: ModelManager,
        sync: CatalogSync,
        metrics: RequestMetrics,
        shadows: ShadowRunner,
        executor: Executor,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self._registry = registry
        self._manager = manager
        self._sync = sync
        self._metrics = metrics
        self._shadows = shadows
        self._executor = executor
        self._clock = clock
        self._windows: dict[str, StepWindow] = {}

    async def run_forever(self, interval: float = 0.5) -> None:
        """Tick until cancelled; a failing tick is logged and the next one tries again."""
        while True:
            await asyncio.sleep(interval)
            try:
                await self.tick()
            except Exception:
                logger.exception("rollout controller tick failed")

    async def tick(self) -> None:
        """Check every running rollout once."""
        models = self._manager.catalog_models()
        for name in [n for n in self._windows if n not in models or models[n].rollout is None]:
            del self._windows[name]
        for model in list(models.values()):
            rollout = model.rollout
            if rollout is not None and rollout.state == "running":
                await self._check(rollout)

    async def _check(self, rollout: RolloutRecord) -> None:
        name = rollout.model
        window = self._windows.get(name)
        if window is None or window.rollout_id != rollout.id or window.step_index != rollout.step_index:
            try:
                await self._manager.load(name, rollout.to_version)
            except FerrymanError as exc:
                await self._update(rollout, state="failed", reason=f"version {rollout.to_version}: {exc.message}")
                return
            window = self._windows[name] = self._snapshot(rollout)
        figures = self._figures(rollout, window)
        step = f"step {rollout.step_index + 1}/{len(rollout.steps)} ({rollout.steps[rollout.step_index]:g}%)"
        elapsed = (self._clock() - rollout.step_started_at).total_seconds()
        final = elapsed >= rollout.interval_s
        breach = figures.breach(rollout.guards, final)
        if breach is not None:
            reason = f"rolled back at {step}: {breach}"
            logger.warning("rollout of model '%s' to version %s %s", name, rollout.to_version, reason)
            await self._update(rollout, state="rolled_back", reason=reason)
            return
        if not final:
            return
        evidence = f"{figures.requests} requests, {figures.errors} errors"
        if figures.p99_ms is not None:
            evidence += f", p99 {figures.p99_ms:.1f} ms"
        if figures.compared:
            evidence += f", agreement {figures.agreed / figures.compared:.2%} of {figures.compared}"
        if rollout.step_index == len(rollout.steps) - 1:
            reason = f"completed: {step} passed ({evidence}); alias '{rollout.alias}' → version {rollout.to_version}"
            logger.info("rollout of model '%s' %s", name, reason)
            await self._update(rollout, state="completed", reason=reason)
        else:
            reason = f"{step} passed ({evidence})"
            await self._update(rollout, step_index=rollout.step_index + 1, step_started_at=self._clock(), reason=reason)

    def _snapshot(self, rollout: RolloutRecord) -> StepWindow:
        stats = self._metrics.stats(rollout.model, str(rollout.to_version))
        shadow = self._shadows.stats_for(rollout.model, rollout.to_version)
        return StepWindow(
            rollout.id,
            rollout.step_index,
            dict(stats.outcomes),
            list(stats.latency.counts),
            shadow.compared,
            shadow.agreed,
        )

    def _figures(self, rollout: RolloutRecord, window: StepWindow) -> StepFigures:
        stats = self._metrics.stats(rollout.model, str(rollout.to_version))
        outcomes = {key: value - window.outcomes.get(key, 0) for key, value in stats.outcomes.items()}
        counts = [now - then for now, then in zip(stats.latency.counts, window.latency, strict=True)]
        p99 = histogram_quantile(LATENCY_BUCKETS, counts, 0.99)
        shadow = self._shadows.stats_for(rollout.model, rollout.to_version)
        return StepFigures(
            requests=sum(outcomes.values()),
            errors=sum(outcomes[key] for key in _ERROR_OUTCOMES),
            p99_ms=None if p99 is None else p99 * 1000,
            compared=shadow.compared - window.compared,
            agreed=shadow.agreed - window.agreed,
        )

    async def _update(self, rollout: RolloutRecord, **fields: Any) -> None:
        loop = asyncio.get_running_loop()

        def update_and_audit() -> None:
            self._registry.update_rollout(rollout.model, rollout.revision, **fields)
            # Only the process whose write won records it (the others got a Conflict above).
            action = _AUDIT_ACTIONS.get(str(fields.get("state")), "rollout.step")
            target = f"models/{rollout.model}/rollouts/{rollout.id}"
            details = {"to_version": rollout.to_version, "step_index": fields.get("step_index", rollout.step_index)}
            details["reason"] = fields.get("reason", "")
            self._registry.append_audit(AuditEntry("rollout-controller", action, target, "success", "", details))

        try:
            await loop.run_in_executor(self._executor, update_and_audit)
        except Conflict:
            logger.debug("rollout of model '%s' moved on elsewhere; reading it again", rollout.model)
        await self._sync.refresh()
