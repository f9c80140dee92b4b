"""Progressive rollouts: the stored state a rollout controller advances.

A rollout moves one alias (``production`` by default) from the version it points at to another,
through increasing percentages of the alias's traffic (``steps``), spending ``interval_s`` on each
step and checking ``guards`` before the next. The alias itself moves only when the rollout
completes, in the same transaction that marks it completed; while the rollout is running or
paused nobody else may move or delete that alias, nor delete either version. At most one rollout
per model is active. Every write is optimistic where a controller is involved: ``revision`` is
the registry revision of the rollout's latest write, unique across all rollouts.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Row, insert, select, update

from ferryman.errors import Conflict, InvalidInput, NotFound
from ferryman.registry import queries, references, store
from ferryman.registry.core import RegistryCore, to_json, utc_now, write_alias
from ferryman.registry.records import (
    ACTIVE_ROLLOUT_STATES,
    ROLLOUT_STATES,
    ChangeEvent,
    RolloutRecord,
    validate_alias_name,
)
from ferryman.registry.rollout_spec import parse_duration, parse_guards, parse_steps
from ferryman.registry.store import aliases, models, registry_state, rollouts

__all__ = ["Rollouts"]


class Rollouts(RegistryCore):
    """Rollout reads and writes, part of RegistryService."""

    # -- reads ---------------------------------------------------------------------------------

    def get_rollout(self, name: str) -> RolloutRecord | None:
        """The model's latest rollout (active or finished), or None if it never had one."""
        with self._engine.connect() as conn:
            model = queries.model_row(conn, name)
            row = _latest_row(conn, model.id)
        return None if row is None else _record(model.name, row)

    def list_rollouts(self, name: str) -> list[RolloutRecord]:
        """Every rollout of the model, newest first."""
        with self._engine.connect() as conn:
            model = queries.model_row(conn, name)
            rows = conn.execute(select(rollouts).where(rollouts.c.model_id == model.id).order_by(rollouts.c.id.desc()))
            return [_record(model.name, row) for row in rows]

    def active_rollouts(self) -> dict[str, RolloutRecord]:
        """Every running or paused rollout, by model name (for the catalog and the controller)."""
        with self._engine.connect() as conn:
            rows = conn.execute(
                select(rollouts, models.c.name.label("model_name"))
                .join(models, models.c.id == rollouts.c.model_id)
                .where(rollouts.c.state.in_(ACTIVE_ROLLOUT_STATES))
                .order_by(rollouts.c.id)
            )
            return {row.model_name: _record(row.model_name, row) for row in rows}

    # -- writes --------------------------------------------------------------------------------

    def start_rollout(
        self,
        name: str,
        *,
        to_version: int,
        steps: Any,
        interval: Any,
        alias: str = "production",
        guards: Any = None,
        created_by: str = "local",
    ) -> RolloutRecord:
        """Start moving ``alias`` to ``to_version`` step by step; the first step starts now.

        ``steps`` are percentages ending at 100 (a list, or text such as ``"5,25,50,100"``),
        ``interval`` seconds or a duration text (``"10m"``), ``guards`` an object of
        ``max_error_rate``, ``max_p99_ms``, ``min_agreement``. InvalidInput naming the field;
        NotFound for an unknown model, alias or version; Conflict when the alias already points
        at ``to_version`` or another rollout of the model is running or paused.
        """
        if isinstance(to_version, bool) or not isinstance(to_version, int) or to_version < 1:
            raise InvalidInput(f"to: expected a positive version number, got {to_version!r}")
        validate_alias_name(alias)
        plan = {
            "steps": to_json(list(parse_steps(steps)), "steps"),
            "interval_s": parse_duration(interval),
            "guards": to_json(parse_guards(guards), "guards"),
        }
        with store.write_transaction(self._engine) as conn:
            model = queries.model_row(conn, name)
            current = _alias_version(conn, model, alias)
            queries.version_row(conn, model, to_version)
            if current == to_version:
                raise Conflict(f"alias '{alias}' of '{name}' already points at version {to_version}")
            active = references.active_rollout_row(conn, model.id)
            if active is not None:
                raise Conflict(
                    f"model '{name}' already has rollout #{active.id} ({active.state}, {active.alias} "
                    f"{active.from_version} → {active.to_version}); abort it or let it finish first"
                )
            now = utc_now()
            result = conn.execute(
                insert(rollouts).values(
                    model_id=model.id,
                    alias=alias,
                    from_version=current,
                    to_version=to_version,
                    step_index=0,
                    state="running",
                    reason="",
                    step_started_at=now,
                    created_by=created_by,
                    created_at=now,
                    updated_at=now,
                    revision=_registry_revision(conn),
                    **plan,
                )
            )
            inserted = result.inserted_primary_key
            assert inserted is not None
            record = _record(name, _row(conn, int(inserted[0])))
        self._notify([ChangeEvent("rollout_started", name, version=to_version, alias=alias)])
        return record

    def update_rollout(
        self,
        name: str,
        expected_revision: int,
        *,
        step_index: int | None = None,
        state: str | None = None,
        reason: str | None = None,
        step_started_at: datetime | None = None,
        changed_by: str = "rollout",
    ) -> RolloutRecord:
        """Change the model's active rollout if it is still at ``expected_revision`` (for the controller).

        Setting ``state="completed"`` also points the alias at ``to_version`` in the same
        transaction (recorded in its history as ``changed_by``). Conflict when the rollout moved
        on (another revision) or has already finished; InvalidInput for an unknown state or a
        step index out of range.
        """
        if state is not None and state not in ROLLOUT_STATES:
            raise InvalidInput(f"state: expected one of {', '.join(ROLLOUT_STATES)}, got {state!r}")
        with store.write_transaction(self._engine) as conn:
            model = queries.model_row(conn, name)
            row = _require_latest(conn, model)
            if row.revision != expected_revision:
                raise Conflict(
                    f"rollout #{row.id} of '{name}' is at revision {row.revision}, not the expected revision "
                    f"{expected_revision}; read it again and retry"
                )
            _require_active(name, row)
            last = len(json.loads(row.steps)) - 1
            values: dict[str, Any] = {}
            if step_index is not None:
                if isinstance(step_index, bool) or not isinstance(step_index, int) or not 0 <= step_index <= last:
                    raise InvalidInput(f"step_index: expected 0 to {last}, got {step_index!r}")
                values["step_index"] = step_index
            if state is not None:
                values["state"] = state
            if reason is not None:
                values["reason"] = reason
            if step_started_at is not None:
                values["step_started_at"] = step_started_at
            now = utc_now()
            moved = state == "completed" and _complete(conn, model.id, row, changed_by, now)
            if state == "completed":
                values["step_index"] = last
            record = _update(conn, name, row.id, values, now)
        events = [ChangeEvent("rollout_changed", name, version=record.to_version, alias=record.alias)]
        if moved:
            events.append(ChangeEvent("alias_set", name, version=record.to_version, alias=record.alias))
        self._notify(events)
        return record

    def pause_rollout(self, name: str, *, changed_by: str = "local", reason: str = "") -> RolloutRecord:
        """Hold a running rollout at its current step; Conflict unless it is running."""
        return self._transition(name, ("running",), "paused", reason or f"paused by {changed_by}", restart=False)

    def resume_rollout(self, name: str, *, changed_by: str = "local", reason: str = "") -> RolloutRecord:
        """Continue a paused rollout; its current step starts over. Conflict unless it is paused."""
        return self._transition(name, ("paused",), "running", reason or f"resumed by {changed_by}", restart=True)

    def abort_rollout(self, name: str, *, changed_by: str = "local", reason: str = "") -> RolloutRecord:
        """Stop a running or paused rollout; the alias stays where it was, so all traffic goes back to it."""
        return self._transition(
            name, ("running", "paused"), "aborted", reason or f"aborted by {changed_by}", restart=False
        )

    def _transition(
        self, name: str, allowed: tuple[str, ...], state: str, reason: str, *, restart: bool
    ) -> RolloutRecord:
        with store.write_transaction(self._engine) as conn:
            model = queries.model_row(conn, name)
            row = _require_latest(conn, model)
            if row.state not in allowed:
                wanted = " or ".join(allowed)
                raise Conflict(f"rollout #{row.id} of '{name}' is {row.state}, not {wanted}")
            now = utc_now()
            values: dict[str, Any] = {"state": state, "reason": reason}
            if restart:
                values["step_started_at"] = now
            record = _update(conn, name, row.id, values, now)
        self._notify([ChangeEvent("rollout_changed", name, version=record.to_version, alias=record.alias)])
        return record


def _registry_revision(conn: Connection) -> int:
    return int(conn.execute(select(registry_state.c.revision)).scalar_one())


def _alias_version(conn: Connection, model: Row[Any], alias: str) -> int:
    current = conn.execute(
        select(aliases.c.version_number).where(aliases.c.model_id == model.id, aliases.c.name == alias)
    ).scalar_one_or_none()
    if current is None:
        raise NotFound(
            f"model '{model.name}' has no alias '{alias}'; point it at the version serving now before rolling out"
        )
    return int(current)


def _latest_row(conn: Connection, model_id: int) -> Row[Any] | None:
    return conn.execute(
        select(rollouts).where(rollouts.c.model_id == model_id).order_by(rollouts.c.id.desc()).limit(1)
    ).first()


def _require_latest(conn: Connection, model: Row[Any]) -> Row[Any]:
    row = _latest_row(conn, model.id)
    if row is None:
        raise NotFound(f"model '{model.name}' has no rollout")
    return row


def _require_active(name: str, row: Row[Any]) -> None:
    if row.state not in ACTIVE_ROLLOUT_STATES:
        raise Conflict(f"rollout #{row.id} of '{name}' is {row.state} and can no longer change")


def _complete(conn: Connection, model_id: int, row: Row[Any], changed_by: str, now: datetime) -> bool:
    """Point the rollout's alias at its new version; True when that moved the alias."""
    current = conn.execute(
        select(aliases.c.version_number).where(aliases.c.model_id == model_id, aliases.c.name == row.alias)
    ).scalar_one_or_none()
    if current == row.to_version:
        return False
    write_alias(conn, model_id, row.alias, current, row.to_version, changed_by, now)
    return True


def _row(conn: Connection, rollout_id: int) -> Row[Any]:
    return conn.execute(select(rollouts).where(rollouts.c.id == rollout_id)).one()


def _update(conn: Connection, name: str, rollout_id: int, values: dict[str, Any], now: datetime) -> RolloutRecord:
    conn.execute(
        update(rollouts)
        .where(rollouts.c.id == rollout_id)
        .values(updated_at=now, revision=_registry_revision(conn), **values)
    )
    return _record(name, _row(conn, rollout_id))


def _record(model: str, row: Row[Any]) -> RolloutRecord:
    return RolloutRecord(
        id=row.id,
        model=model,
        alias=row.alias,
        from_version=row.from_version,
        to_version=row.to_version,
        steps=tuple(json.loads(row.steps)),
        step_index=row.step_index,
        interval_s=row.interval_s,
        guards=json.loads(row.guards),
        state=row.state,
        reason=row.reason,
        step_started_at=row.step_started_at,
        created_by=row.created_by,
        created_at=row.created_at,
        updated_at=row.updated_at,
        revision=row.revision,
    )
