"""Traffic policies: how a model's unversioned requests are split, kept sticky, shadowed or banditised.

The policy's format is ``traffic_spec.py``'s (``parse_traffic_policy``); the
registry checks it parses, that every target it names is a version or alias of the model, and
stores it as given, with a per-model revision that only grows (the ETag of the HTTP API) and a
history of every change.
"""

from __future__ import annotations

import json
from typing import Any

from sqlalchemy import Connection, Row, insert, select, update

from ferryman.errors import Conflict, InvalidInput, NotFound
from ferryman.registry import queries, store
from ferryman.registry.core import RegistryCore, Unchanged, to_json, utc_now
from ferryman.registry.records import ChangeEvent, TrafficPolicyChange
from ferryman.registry.references import policy_targets
from ferryman.registry.store import aliases, models, traffic_policies, traffic_policy_history, versions
from ferryman.registry.traffic_spec import parse_traffic_policy

__all__ = ["TrafficPolicies"]


class TrafficPolicies(RegistryCore):
    """Traffic policy reads and writes, part of RegistryService."""

    def get_traffic_policy(self, name: str) -> tuple[dict[str, Any] | None, int]:
        """``(policy, revision)``; ``(None, revision)`` when there is none (revision 0: never set)."""
        with self._engine.connect() as conn:
            model = queries.model_row(conn, name)
            row = _policy_row(conn, model.id)
        if row is None:
            return None, 0
        return (None if row.policy is None else json.loads(row.policy)), row.revision

    def traffic_policies(self) -> dict[str, tuple[dict[str, Any], int]]:
        """Every model's current policy and revision, by model name (for building the catalog)."""
        with self._engine.connect() as conn:
            rows = conn.execute(
                select(models.c.name, traffic_policies.c.policy, traffic_policies.c.revision)
                .join(models, models.c.id == traffic_policies.c.model_id)
                .where(traffic_policies.c.policy.is_not(None))
            )
            return {row.name: (json.loads(row.policy), row.revision) for row in rows}

    def traffic_policy_history(self, name: str) -> list[TrafficPolicyChange]:
        """Every change of the model's traffic policy, newest first."""
        with self._engine.connect() as conn:
            model = queries.model_row(conn, name)
            rows = conn.execute(
                select(traffic_policy_history)
                .where(traffic_policy_history.c.model_id == model.id)
                .order_by(traffic_policy_history.c.id.desc())
            )
            return [
                TrafficPolicyChange(
                    model=model.name,
                    revision=row.revision,
                    old_policy=None if row.old_policy is None else json.loads(row.old_policy),
                    new_policy=None if row.new_policy is None else json.loads(row.new_policy),
                    changed_by=row.changed_by,
                    changed_at=row.changed_at,
                )
                for row in rows
            ]

    def set_traffic_policy(
        self,
        name: str,
        policy: dict[str, Any],
        *,
        expected_revision: int | None = None,
        changed_by: str = "local",
    ) -> int:
        """Replace the model's traffic policy; returns its new revision.

        InvalidInput naming the field when the policy does not parse; NotFound naming a target
        that is neither a version nor an alias of the model; Conflict when ``expected_revision``
        is given and is not the current one. Setting the current policy again changes nothing.
        """
        if not isinstance(policy, dict):
            raise InvalidInput("the traffic policy must be a JSON object")
        parse_traffic_policy(policy)
        targets = policy_targets(policy)
        encoded = to_json(policy, "the traffic policy")
        try:
            with store.write_transaction(self._engine) as conn:
                model = queries.model_row(conn, name)
                _check_targets(conn, model, targets)
                row = _policy_row(conn, model.id)
                current = 0 if row is None else row.revision
                _check_revision(name, current, expected_revision)
                old = None if row is None else row.policy
                if old == encoded:
                    raise Unchanged(current)
                _write(conn, model.id, row is not None, old, encoded, current + 1, changed_by)
        except Unchanged as unchanged:
            same: int = unchanged.value
            return same
        self._notify([ChangeEvent("traffic_policy_set", name)])
        return current + 1

    def clear_traffic_policy(
        self, name: str, *, expected_revision: int | None = None, changed_by: str = "local"
    ) -> int:
        """Remove the model's traffic policy (its history stays); returns the new revision.

        NotFound when the model has none; Conflict on an unexpected revision.
        """
        with store.write_transaction(self._engine) as conn:
            model = queries.model_row(conn, name)
            row = _policy_row(conn, model.id)
            if row is None or row.policy is None:
                raise NotFound(f"model '{name}' has no traffic policy")
            _check_revision(name, row.revision, expected_revision)
            _write(conn, model.id, True, row.policy, None, row.revision + 1, changed_by)
        self._notify([ChangeEvent("traffic_policy_cleared", name)])
        return int(row.revision) + 1


def _policy_row(conn: Connection, model_id: int) -> Row[Any] | None:
    return conn.execute(select(traffic_policies).where(traffic_policies.c.model_id == model_id)).first()


def _check_revision(name: str, current: int, expected: int | None) -> None:
    if expected is not None and current != expected:
        raise Conflict(
            f"the traffic policy of '{name}' is at revision {current}, not the expected revision {expected}; "
            "read it again and retry"
        )


def _check_targets(conn: Connection, model: Row[Any], targets: set[str]) -> None:
    numbers = set(conn.execute(select(versions.c.number).where(versions.c.model_id == model.id)).scalars().all())
    names = set(conn.execute(select(aliases.c.name).where(aliases.c.model_id == model.id)).scalars().all())
    for target in sorted(targets):
        if target.isdigit():
            if int(target) not in numbers:
                raise NotFound(f"the traffic policy names version {target}, but '{model.name}' has no version {target}")
        elif target not in names:
            raise NotFound(f"the traffic policy names alias '{target}', but '{model.name}' has no alias '{target}'")


def _write(
    conn: Connection,
    model_id: int,
    exists: bool,
    old: str | None,
    new: str | None,
    revision: int,
    changed_by: str,
) -> None:
    now = utc_now()
    fields = {"policy": new, "revision": revision, "updated_at": now, "updated_by": changed_by}
    if exists:
        conn.execute(update(traffic_policies).where(traffic_policies.c.model_id == model_id).values(**fields))
    else:
        conn.execute(insert(traffic_policies).values(model_id=model_id, **fields))
    conn.execute(
        insert(traffic_policy_history).values(
            model_id=model_id,
            revision=revision,
            old_policy=old,
            new_policy=new,
            changed_by=changed_by,
            changed_at=now,
        )
    )
