"""Rolling an alias back: one atomic write to the version it pointed at before its latest change.

Rollback is "undo the latest change", and is itself a change: it is recorded in the alias's
history like any other, so rolling back twice returns to where it started (4 → 5, rollback → 4,
rollback → 5). Going further back is an explicit ``set_alias`` to the version wanted.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Connection, Row, select

from ferryman.errors import Conflict, NotFound
from ferryman.registry import queries, references, store
from ferryman.registry.core import RegistryCore, utc_now, write_alias
from ferryman.registry.records import ChangeEvent
from ferryman.registry.store import alias_history, aliases, versions

__all__ = ["AliasRollback"]


class AliasRollback(RegistryCore):
    """Alias rollback, part of RegistryService."""

    def rollback_target(self, name: str, alias: str) -> tuple[int, int]:
        """``(current, previous)``: what :meth:`rollback_alias` would do now, or why it cannot."""
        with self._engine.connect() as conn:
            return _rollback_target(conn, queries.model_row(conn, name), alias)

    def rollback_alias(
        self, name: str, alias: str, *, changed_by: str = "local", expected_version: int | None = None
    ) -> tuple[int, int]:
        """Point ``alias`` back at the version it pointed at before its latest change.

        Returns ``(from_version, to_version)``. NotFound when the alias is not set; Conflict
        when it has no previous version, that version was deleted, a rollout moves the alias,
        or (with ``expected_version``) the alias no longer points at that version.
        """
        with store.write_transaction(self._engine) as conn:
            model = queries.model_row(conn, name)
            current, previous = _rollback_target(conn, model, alias)
            if expected_version is not None and current != expected_version:
                raise Conflict(
                    f"alias '{alias}' of '{name}' points at version {current}, not the expected version "
                    f"{expected_version}; read it again and retry"
                )
            references.refuse_alias_under_rollout(conn, model, alias)
            write_alias(conn, model.id, alias, current, previous, changed_by, utc_now())
        self._notify([ChangeEvent("alias_set", name, version=previous, alias=alias)])
        return current, previous


def _rollback_target(conn: Connection, model: Row[Any], alias: str) -> tuple[int, int]:
    current = conn.execute(
        select(aliases.c.version_number).where(aliases.c.model_id == model.id, aliases.c.name == alias)
    ).scalar_one_or_none()
    if current is None:
        raise NotFound(f"model '{model.name}' has no alias '{alias}'")
    latest = conn.execute(
        select(alias_history.c.from_version)
        .where(alias_history.c.model_id == model.id, alias_history.c.alias == alias)
        .order_by(alias_history.c.id.desc())
        .limit(1)
    ).first()
    previous = None if latest is None else latest.from_version
    if previous is None:
        raise Conflict(
            f"alias '{alias}' of '{model.name}' has no previous version to roll back to: "
            f"its latest change created it pointing at version {current}"
        )
    exists = conn.execute(
        select(versions.c.id).where(versions.c.model_id == model.id, versions.c.number == previous)
    ).first()
    if exists is None:
        raise Conflict(
            f"cannot roll back alias '{alias}' of '{model.name}' to version {previous}: that version was deleted"
        )
    return current, previous
