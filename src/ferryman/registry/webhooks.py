"""Webhooks and their outbox of deliveries: part of RegistryService.

A webhook's secret is stored (it signs every delivery) but never handed out: every read but
:meth:`WebhookStore.claim_deliveries` (the sender's) leaves it out. Deliveries are claimed with a
lease — an update conditioned on the row being due and unleased — so that of several processes
exactly one sends each attempt, and an attempt interrupted by a crash is retried once the lease ends.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import and_, delete, insert, or_, select, update
from sqlalchemy.exc import IntegrityError

from ferryman.errors import Conflict, NotFound
from ferryman.registry import store
from ferryman.registry.core import RegistryCore, utc_now
from ferryman.registry.store import alert_events, webhook_deliveries, webhooks

__all__ = ["Delivery", "WebhookStore"]

_MAX_WEBHOOKS = 100
_MAX_ERROR_CHARS = 500


@dataclass(frozen=True, slots=True)
class Delivery:
    """One claimed attempt: where to send what, and with which secret."""

    id: int
    webhook: str
    url: str
    secret: str
    attempts: int
    payload: dict[str, Any]


class WebhookStore(RegistryCore):
    """Webhook and delivery reads and writes."""

    def create_webhook(
        self,
        name: str,
        url: str,
        secret: str,
        min_severity: str,
        models: tuple[str, ...] | None = None,
        *,
        created_by: str = "local",
    ) -> dict[str, Any]:
        """Store a webhook (for the events of ``models``, None = all); returns it without its secret."""
        now = utc_now()
        try:
            with store.append_transaction(self._engine) as conn:
                count = len(conn.execute(select(webhooks.c.id)).all())
                if count >= _MAX_WEBHOOKS:
                    raise Conflict(f"name: at most {_MAX_WEBHOOKS} webhooks; delete one first")
                conn.execute(
                    insert(webhooks).values(
                        name=name,
                        url=url,
                        secret=secret,
                        min_severity=min_severity,
                        models=None if models is None else json.dumps(list(models)),
                        created_at=now,
                        created_by=created_by,
                    )
                )
        except IntegrityError:
            raise Conflict(f"name: a webhook named '{name}' already exists") from None
        return self.get_webhook(name)

    def list_webhooks(self) -> list[dict[str, Any]]:
        """Every webhook (never its secret), with its delivery counts by state."""
        with self._engine.connect() as conn:
            rows = conn.execute(select(webhooks).order_by(webhooks.c.name)).all()
            counts: dict[int, dict[str, int]] = {}
            for hook_id, state in conn.execute(select(webhook_deliveries.c.webhook_id, webhook_deliveries.c.state)):
                into = counts.setdefault(hook_id, {"pending": 0, "delivered": 0, "failed": 0})
                into[state] = into.get(state, 0) + 1
        return [
            {
                "name": row.name,
                "url": row.url,
                "min_severity": row.min_severity,
                "models": None if row.models is None else json.loads(row.models),
                "created_at": row.created_at.isoformat(),
                "created_by": row.created_by,
                "deliveries": counts.get(row.id, {"pending": 0, "delivered": 0, "failed": 0}),
            }
            for row in rows
        ]

    def get_webhook(self, name: str) -> dict[str, Any]:
        """One webhook without its secret; NotFound if unknown."""
        for hook in self.list_webhooks():
            if hook["name"] == name:
                return hook
        raise NotFound(f"no webhook named '{name}'")

    def delete_webhook(self, name: str) -> None:
        """Delete a webhook and its deliveries; NotFound if unknown."""
        with store.append_transaction(self._engine) as conn:
            hook_id = conn.execute(select(webhooks.c.id).where(webhooks.c.name == name)).scalar()
            if hook_id is None:
                raise NotFound(f"no webhook named '{name}'")
            conn.execute(delete(webhook_deliveries).where(webhook_deliveries.c.webhook_id == hook_id))
            conn.execute(delete(webhooks).where(webhooks.c.id == hook_id))

    def list_deliveries(self, *, limit: int = 100) -> list[dict[str, Any]]:
        """The newest deliveries: webhook, event, state, attempts, last error."""
        with self._engine.connect() as conn:
            rows = conn.execute(
                select(webhook_deliveries, webhooks.c.name, alert_events.c.kind, alert_events.c.rule_name)
                .join(webhooks, webhooks.c.id == webhook_deliveries.c.webhook_id)
                .join(alert_events, alert_events.c.id == webhook_deliveries.c.event_id)
                .order_by(webhook_deliveries.c.id.desc())
                .limit(limit)
            ).all()
        return [
            {
                "id": row.id,
                "webhook": row.name,
                "event_id": row.event_id,
                "event": row.kind,
                "rule": row.rule_name,
                "state": row.state,
                "attempts": row.attempts,
                "next_attempt_at": row.next_attempt_at.isoformat(),
                "last_error": row.last_error,
            }
            for row in rows
        ]

    def claim_deliveries(self, lease_s: float, limit: int = 20) -> list[Delivery]:
        """Lease up to ``limit`` due pending deliveries for ``lease_s`` seconds; returns those this call won."""
        now = utc_now()
        due = and_(
            webhook_deliveries.c.state == "pending",
            webhook_deliveries.c.next_attempt_at <= now,
            or_(webhook_deliveries.c.lease_until.is_(None), webhook_deliveries.c.lease_until < now),
        )
        claimed: list[Delivery] = []
        with store.append_transaction(self._engine) as conn:
            rows = conn.execute(
                select(
                    webhook_deliveries.c.id,
                    webhook_deliveries.c.attempts,
                    webhooks.c.name,
                    webhooks.c.url,
                    webhooks.c.secret,
                    alert_events.c.payload,
                )
                .join(webhooks, webhooks.c.id == webhook_deliveries.c.webhook_id)
                .join(alert_events, alert_events.c.id == webhook_deliveries.c.event_id)
                .where(due)
                .order_by(webhook_deliveries.c.id)
                .limit(limit)
            ).all()
            for row in rows:
                won = conn.execute(
                    update(webhook_deliveries)
                    .where(webhook_deliveries.c.id == row.id, due)
                    .values(lease_until=now + timedelta(seconds=lease_s), updated_at=now)
                ).rowcount
                if won == 1:
                    payload = json.loads(row.payload)
                    payload["delivery"] = row.id
                    claimed.append(Delivery(row.id, row.name, row.url, row.secret, row.attempts, payload))
        return claimed

    def finish_delivery(self, delivery_id: int, *, state: str, error: str | None, retry_at: datetime | None) -> None:
        """Record an attempt: ``delivered``, ``failed`` for good, or ``pending`` again at ``retry_at``."""
        now = utc_now()
        with store.append_transaction(self._engine) as conn:
            conn.execute(
                update(webhook_deliveries)
                .where(webhook_deliveries.c.id == delivery_id)
                .values(
                    state=state,
                    attempts=webhook_deliveries.c.attempts + 1,
                    next_attempt_at=retry_at or now,
                    lease_until=None,
                    last_error=None if error is None else error[:_MAX_ERROR_CHARS],
                    updated_at=now,
                )
            )
