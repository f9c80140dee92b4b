"""Alert rules, their state per target and the events they raised: part of RegistryService.

Alert rows are operational data, not registry configuration: they are written in append
transactions (no revision bump, so no process rebuilds its catalog for them). A state row is
changed only by :meth:`AlertStore.transition`, an update conditioned on the row's ``revision`` (or
an insert that the primary key refuses twice): when several processes evaluate the same rule at
once, exactly one of them moves the state, and only that one writes the event and its outbox rows.
"""

from __future__ import annotations

import fnmatch
import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, delete, func, insert, select, update
from sqlalchemy.exc import IntegrityError

from ferryman.errors import Conflict, NotFound
from ferryman.monitoring.alert_rules import SEVERITIES, AlertRule, parse_rule
from ferryman.registry import store
from ferryman.registry.core import RegistryCore, utc_now
from ferryman.registry.store import alert_events, alert_rules, alert_states, webhook_deliveries, webhooks

__all__ = ["AlertEvent", "AlertState", "AlertStore", "StoredRule"]

_MAX_RULES = 1000


@dataclass(frozen=True, slots=True)
class StoredRule:
    """A rule with its row id and who made it when."""

    id: int
    rule: AlertRule
    created_at: datetime
    created_by: str

    def to_dict(self) -> dict[str, Any]:
        """The rule as the API shows it."""
        return {**self.rule.to_dict(), "created_at": self.created_at.isoformat(), "created_by": self.created_by}


@dataclass(frozen=True, slots=True)
class AlertState:
    """Where one rule stands for one target (``model:version``): ``ok``, ``pending`` or ``firing``."""

    rule_id: int
    target: str
    state: str
    value: float | None
    since: datetime | None
    fired_at: datetime | None
    updated_at: datetime
    revision: int


@dataclass(frozen=True, slots=True)
class AlertEvent:
    """A firing or resolved event, as stored (``payload`` is what webhooks receive)."""

    id: int
    rule_name: str
    target: str
    kind: str
    severity: str
    value: float | None
    at: datetime
    payload: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        """The event as the API shows it."""
        return {
            "id": self.id,
            "rule": self.rule_name,
            "target": self.target,
            "kind": self.kind,
            "severity": self.severity,
            "value": self.value,
            "at": self.at.isoformat(),
        }


class AlertStore(RegistryCore):
    """Alert rule, state and event reads and writes."""

    def create_alert_rule(self, rule: AlertRule, *, created_by: str = "local") -> StoredRule:
        """Store a new rule; Conflict if a rule of that name exists."""
        now = utc_now()
        try:
            with store.append_transaction(self._engine) as conn:
                count = conn.execute(select(func.count()).select_from(alert_rules)).scalar_one()
                if count >= _MAX_RULES:
                    raise Conflict(f"name: at most {_MAX_RULES} alert rules; delete one first")
                result = conn.execute(
                    insert(alert_rules).values(
                        name=rule.name, spec=json.dumps(rule.to_dict()), created_at=now, created_by=created_by
                    )
                )
                rule_id = int(result.inserted_primary_key[0])  # type: ignore[index]
        except IntegrityError:
            raise Conflict(f"name: an alert rule named '{rule.name}' already exists") from None
        return StoredRule(rule_id, rule, now, created_by)

    def list_alert_rules(self) -> list[StoredRule]:
        """Every rule, by name."""
        with self._engine.connect() as conn:
            rows = conn.execute(select(alert_rules).order_by(alert_rules.c.name)).all()
        return [StoredRule(row.id, parse_rule(json.loads(row.spec)), row.created_at, row.created_by) for row in rows]

    def get_alert_rule(self, name: str) -> StoredRule:
        """One rule; NotFound if unknown."""
        for stored in self.list_alert_rules():
            if stored.rule.name == name:
                return stored
        raise NotFound(f"no alert rule named '{name}'")

    def delete_alert_rule(self, name: str) -> None:
        """Delete a rule and its states (its events stay); NotFound if unknown."""
        with store.append_transaction(self._engine) as conn:
            rule_id = conn.execute(select(alert_rules.c.id).where(alert_rules.c.name == name)).scalar()
            if rule_id is None:
                raise NotFound(f"no alert rule named '{name}'")
            conn.execute(delete(alert_states).where(alert_states.c.rule_id == rule_id))
            conn.execute(delete(alert_rules).where(alert_rules.c.id == rule_id))

    def list_alert_states(self) -> list[AlertState]:
        """Every rule's state per target."""
        with self._engine.connect() as conn:
            rows = conn.execute(select(alert_states).order_by(alert_states.c.rule_id, alert_states.c.target)).all()
        return [
            AlertState(r.rule_id, r.target, r.state, r.value, r.since, r.fired_at, r.updated_at, r.revision)
            for r in rows
        ]

    def list_alert_events(self, *, limit: int = 100, after_id: int = 0) -> list[AlertEvent]:
        """Events newest first (at most ``limit``), or with ids above ``after_id``."""
        with self._engine.connect() as conn:
            query = select(alert_events).where(alert_events.c.id > after_id)
            rows = conn.execute(query.order_by(alert_events.c.id.desc()).limit(limit)).all()
        return [
            AlertEvent(r.id, r.rule_name, r.target, r.kind, r.severity, r.value, r.at, json.loads(r.payload))
            for r in rows
        ]

    def transition(
        self,
        rule_id: int,
        target: str,
        expected: AlertState | None,
        values: dict[str, Any],
        event: dict[str, Any] | None = None,
    ) -> bool:
        """Move a state from ``expected`` (None: no row yet) to ``values``; with ``event``, record it.

        Returns False, writing nothing, when another process moved the state first. The event and
        one outbox row per webhook that takes its severity commit in the same transaction.
        """
        now = utc_now()
        try:
            with store.append_transaction(self._engine) as conn:
                if expected is None:
                    conn.execute(
                        insert(alert_states).values(
                            rule_id=rule_id, target=target, updated_at=now, revision=1, **values
                        )
                    )
                else:
                    moved = conn.execute(
                        update(alert_states)
                        .where(
                            alert_states.c.rule_id == rule_id,
                            alert_states.c.target == target,
                            alert_states.c.revision == expected.revision,
                        )
                        .values(updated_at=now, revision=expected.revision + 1, **values)
                    ).rowcount
                    if moved != 1:
                        return False
                if event is not None:
                    _record_event(conn, event, now)
        except IntegrityError:
            return False  # another process inserted the row first
        return True


def _receives(models: str | None, model: str) -> bool:
    """Whether a webhook with this ``models`` column takes events of ``model``."""
    return models is None or any(fnmatch.fnmatchcase(model, pattern) for pattern in json.loads(models))


def _record_event(conn: Connection, event: dict[str, Any], now: datetime) -> None:
    """Insert the event, give it its id in the payload, and queue it for each webhook."""
    result = conn.execute(
        insert(alert_events).values(
            rule_name=event["rule"]["name"],
            target=event["target"],
            kind=event["event"],
            severity=event["rule"]["severity"],
            value=event.get("value"),
            at=now,
            payload="{}",
        )
    )
    event_id = int(result.inserted_primary_key[0])  # type: ignore[index]
    event["id"] = event_id
    event["at"] = now.isoformat()
    conn.execute(update(alert_events).where(alert_events.c.id == event_id).values(payload=json.dumps(event)))
    rank = SEVERITIES.index(event["rule"]["severity"])
    hooks = conn.execute(select(webhooks.c.id, webhooks.c.min_severity, webhooks.c.models)).all()
    rows = [
        {
            "webhook_id": hook.id,
            "event_id": event_id,
            "state": "pending",
            "attempts": 0,
            "next_attempt_at": now,
            "updated_at": now,
        }
        for hook in hooks
        if SEVERITIES.index(hook.min_severity) <= rank and _receives(hook.models, event["model"])
    ]
    if rows:
        conn.execute(insert(webhook_deliveries), rows)
