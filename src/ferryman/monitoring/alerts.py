"""The alert evaluator: every few seconds, in every process, each rule against each of its targets.

A rule's targets are the versions of the models its ``model`` names (a name or an fnmatch pattern),
or the one ``version`` it names. For each, the signal's value (``monitoring/alert_signals.py``)
moves the stored state (``registry/alerts.py``):

- ``ok`` → ``pending`` when the condition holds, → ``firing`` once it held for ``for`` seconds
  (at once when ``for`` is 0): a *firing* event;
- ``firing`` → ``ok`` when it no longer holds: a *resolved* event; ``pending`` → ``ok`` quietly;
- no data (too few requests or labels in the window): no change.

The state lives in the registry, so it survives restarts: a rule firing before a restart is still
firing after it, and fires no second event. Every change is an update conditioned on the row's
revision; when several processes evaluate at once, one wins and only the winner records the event
(with its webhook outbox rows, in the same transaction) and logs it. Request-level signals
(error rate, latency, drift, data quality) are this process's own measurements; live accuracy
comes from the feedback stored in the registry, the same for every process.

The same loop refreshes the ``ferryman_live_*`` gauges over the last ``live_window_s``.
"""

from __future__ import annotations

import asyncio
import fnmatch
import logging
from collections.abc import Callable, Iterator
from concurrent.futures import Executor
from datetime import datetime, timedelta

from prometheus_client.core import CounterMetricFamily, Metric

from ferryman.errors import FerrymanError
from ferryman.monitoring.accuracy import Figures, accuracy_families, figures_of
from ferryman.monitoring.alert_rules import AlertRule
from ferryman.monitoring.alert_signals import Key, SignalHistory
from ferryman.registry.alerts import AlertState, StoredRule
from ferryman.registry.core import utc_now
from ferryman.registry.feedback_windows import LabelledRow
from ferryman.registry.service import RegistryService

__all__ = ["AlertEvaluator"]

logger = logging.getLogger(__name__)

Targets = Callable[[], dict[str, list[int]]]


class AlertEvaluator:
    """Evaluates every rule on a timer and keeps the live-accuracy gauges fresh."""

    def __init__(
        self,
        registry: RegistryService,
        history: SignalHistory,
        targets: Targets,
        executor: Executor,
        *,
        interval_s: float = 5.0,
        live_window_s: float = 3600.0,
        on_event: Callable[[], None] | None = None,
    ) -> None:
        self._registry = registry
        self._history = history
        self._targets = targets
        self._executor = executor
        self._interval_s = interval_s
        self._live_window_s = live_window_s
        self._on_event = on_event
        self._longest_window_s = live_window_s
        #: The live figures of every version over the last ``live_window_s`` (read at scrape time).
        self.live: dict[Key, Figures] = {}
        #: Events this process recorded (firing and resolved), and evaluation rounds completed.
        self.events = 0
        self.rounds = 0

    async def run_forever(self) -> None:
        """Evaluate until cancelled."""
        loop = asyncio.get_running_loop()
        self._history.take(self._longest_window_s)
        while True:
            await asyncio.sleep(self._interval_s)
            try:
                self._history.take(self._longest_window_s)
                targets = self._targets()
                recorded = await loop.run_in_executor(self._executor, self.evaluate, targets)
                if recorded and self._on_event is not None:
                    self._on_event()
            except Exception:
                logger.exception("alert evaluation failed; trying again at the next tick")

    def metric_families(self) -> Iterator[Metric]:
        """The ``ferryman_live_*`` gauges and this process's evaluation counters."""
        yield from accuracy_families(dict(self.live), self._live_window_s)
        rounds = CounterMetricFamily("ferryman_alert_evaluations", "Alert evaluation rounds this process completed.")
        rounds.add_metric([], self.rounds)
        events = CounterMetricFamily(
            "ferryman_alert_events", "Firing and resolved events this process recorded (one process per event)."
        )
        events.add_metric([], self.events)
        yield from (rounds, events)

    def evaluate(self, targets: dict[str, list[int]]) -> int:
        """One round over every rule (blocking: run in the executor); returns the events recorded."""
        now = utc_now()
        cache: dict[tuple[str, float], dict[Key, Figures]] = {}

        def live(model: str, window_s: float) -> dict[Key, Figures]:
            found = cache.get((model, window_s))
            if found is None:
                found = cache[(model, window_s)] = self._live_figures(model, window_s, now)
            return found

        self.live = {key: figures for model in targets for key, figures in live(model, self._live_window_s).items()}
        rules = self._registry.list_alert_rules()
        self._longest_window_s = max([self._live_window_s, *(stored.rule.window_s for stored in rules)])
        states = {(state.rule_id, state.target): state for state in self._registry.list_alert_states()}
        recorded = 0
        for stored in rules:
            for key in _targets_of(stored.rule, targets):
                target = f"{key[0]}:{key[1]}"
                value = self._history.value(stored.rule, key, live)
                recorded += self._step(stored, key, target, value, states.get((stored.id, target)), now)
        self.events += recorded
        self.rounds += 1
        return recorded

    def _live_figures(self, model: str, window_s: float, now: datetime) -> dict[Key, Figures]:
        try:
            rows = self._registry.labelled_feedback_since(model, now - timedelta(seconds=window_s))
        except FerrymanError:  # deleted meanwhile
            return {}
        grouped: dict[int, list[LabelledRow]] = {}
        for row in rows:
            if row.version is not None:
                grouped.setdefault(row.version, []).append(row)
        return {(model, version): figures_of(group) for version, group in grouped.items()}

    def _step(
        self, stored: StoredRule, key: Key, target: str, value: float | None, state: AlertState | None, now: datetime
    ) -> int:
        """Apply one observation to one state; returns 1 when this process recorded an event."""
        if value is None:
            return 0
        rule = stored.rule
        current = state.state if state is not None else "ok"
        if rule.breached(value):
            if current == "firing":
                return 0
            since = state.since if state is not None and current == "pending" and state.since else now
            if (now - since).total_seconds() >= rule.for_s:
                values = {"state": "firing", "value": value, "since": since, "fired_at": now}
                event = _event("firing", rule, key, target, value, since, now)
                return self._move(stored, target, state, values, event)
            if current == "ok":
                self._move(stored, target, state, {"state": "pending", "value": value, "since": now, "fired_at": None})
            return 0
        if current == "firing":
            values = {"state": "ok", "value": value, "since": None, "fired_at": None}
            fired_at = state.fired_at if state is not None else None
            resolved = _event("resolved", rule, key, target, value, fired_at, now)
            return self._move(stored, target, state, values, resolved)
        if current == "pending":
            self._move(stored, target, state, {"state": "ok", "value": value, "since": None, "fired_at": None})
        return 0

    def _move(
        self,
        stored: StoredRule,
        target: str,
        state: AlertState | None,
        values: dict[str, object],
        event: dict[str, object] | None = None,
    ) -> int:
        if not self._registry.transition(stored.id, target, state, values, event):
            return 0  # another process got there first; it records the event
        if event is None:
            return 0
        rule = stored.rule
        log = logger.warning if event["event"] == "firing" else logger.info
        log(
            "alert %s: rule=%s target=%s severity=%s signal=%s value=%.6g %s threshold=%.6g window=%gs event_id=%s",
            event["event"],
            rule.name,
            target,
            rule.severity,
            rule.signal + (f"[{rule.feature}]" if rule.feature else ""),
            values["value"],
            rule.comparison,
            rule.threshold,
            rule.window_s,
            event.get("id"),
        )
        return 1


def _targets_of(rule: AlertRule, targets: dict[str, list[int]]) -> Iterator[Key]:
    for model, versions in targets.items():
        if model != rule.model and not fnmatch.fnmatchcase(model, rule.model):
            continue
        for version in versions:
            if rule.version is None or version == rule.version:
                yield model, version


def _event(
    kind: str, rule: AlertRule, key: Key, target: str, value: float, since: datetime | None, now: datetime
) -> dict[str, object]:
    return {
        "event": kind,
        "rule": rule.to_dict(),
        "model": key[0],
        "version": key[1],
        "target": target,
        "value": value,
        "threshold": rule.threshold,
        "since": None if since is None else since.isoformat(),
        "observed_at": now.isoformat(),
    }
