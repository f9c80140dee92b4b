"""What the registry's writers share: the engine, change notification and the alias write.

``RegistryService`` is assembled from several writer classes (aliases and versions in
``service.py``; traffic policies, version policies, rollouts, rollback and feedback in their own
modules); each extends :class:`RegistryCore` and so writes through the same engine, lock and
listeners.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Connection, Engine, insert, update

from ferryman.errors import InvalidInput
from ferryman.registry.artifacts import ArtifactStore
from ferryman.registry.records import ChangeEvent
from ferryman.registry.store import alias_history, aliases

__all__ = ["RegistryCore", "Unchanged", "quoted", "record_alias_change", "to_json", "utc_now", "write_alias"]


class Unchanged(Exception):
    """Raised inside a write transaction to roll it back and return ``value`` instead."""

    def __init__(self, value: Any) -> None:
        super().__init__()
        self.value = value


class RegistryCore:
    """The state every registry writer uses; ``RegistryService`` provides the implementation."""

    _engine: Engine
    _artifacts: ArtifactStore

    def _notify(self, events: Sequence[ChangeEvent]) -> None:
        """Tell the subscribers about committed changes (implemented by RegistryService)."""
        raise NotImplementedError


def utc_now() -> datetime:
    """The current time, timezone-aware in UTC (what every registry timestamp is)."""
    return datetime.now(UTC)


def to_json(value: Any, what: str) -> str:
    """Serialise ``value`` for a Text column; InvalidInput naming ``what`` if it cannot be."""
    try:
        return json.dumps(value, sort_keys=True, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise InvalidInput(f"{what} must be JSON-serialisable: {exc}") from exc


def quoted(names: Sequence[str]) -> str:
    """``'a', 'b'`` for messages."""
    return ", ".join(f"'{n}'" for n in names)


def write_alias(
    conn: Connection,
    model_id: int,
    alias: str,
    previous: int | None,
    version: int,
    changed_by: str,
    changed_at: datetime,
) -> None:
    """Point ``alias`` at ``version`` (creating it when ``previous`` is None) and record the change."""
    fields = {"version_number": version, "updated_at": changed_at, "updated_by": changed_by}
    if previous is None:
        conn.execute(insert(aliases).values(model_id=model_id, name=alias, **fields))
    else:
        conn.execute(update(aliases).where(aliases.c.model_id == model_id, aliases.c.name == alias).values(**fields))
    record_alias_change(conn, model_id, alias, previous, version, changed_by, changed_at)


def record_alias_change(
    conn: Connection,
    model_id: int,
    alias: str,
    from_version: int | None,
    to_version: int | None,
    changed_by: str,
    changed_at: datetime,
) -> None:
    """Append one entry to the alias's history."""
    conn.execute(
        insert(alias_history).values(
            model_id=model_id,
            alias=alias,
            from_version=from_version,
            to_version=to_version,
            changed_by=changed_by,
            changed_at=changed_at,
        )
    )
