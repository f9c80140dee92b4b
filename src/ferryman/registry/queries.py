"""Read queries shared by the registry service: rows in, immutable records out."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from sqlalchemy import Connection, Row, func, select

from ferryman.errors import NotFound
from ferryman.registry.records import ModelRecord, VersionRecord
from ferryman.registry.store import aliases, models, versions
from ferryman.tensors import Signature

__all__ = ["alias_map", "model_records", "model_row", "version_record", "version_row"]


def version_record(model: str, row: Row[Any]) -> VersionRecord:
    """Build a VersionRecord from a ``versions`` row."""
    return VersionRecord(
        model=model,
        version=row.number,
        framework=row.framework,
        sha256=row.sha256,
        size=row.size,
        filename=row.filename,
        signature=Signature.from_dict(json.loads(row.signature)),
        runtime_config=json.loads(row.runtime_config),
        description=row.description,
        created_by=row.created_by,
        created_at=row.created_at,
        artifact_signature=row.artifact_signature,
    )


def model_row(conn: Connection, name: str) -> Row[Any]:
    """The ``models`` row called ``name``; NotFound if there is none."""
    row = conn.execute(select(models).where(models.c.name == name)).first()
    if row is None:
        raise NotFound(f"model '{name}' not found")
    return row


def version_row(conn: Connection, model: Row[Any], version: int) -> Row[Any]:
    """The ``versions`` row numbered ``version`` of ``model``; NotFound if there is none."""
    row = conn.execute(select(versions).where(versions.c.model_id == model.id, versions.c.number == version)).first()
    if row is None:
        raise NotFound(f"model '{model.name}' has no version {version}")
    return row


def alias_map(conn: Connection, model_ids: Sequence[int]) -> dict[int, dict[str, int]]:
    """``{model id: {alias: version}}`` for the given models."""
    found: dict[int, dict[str, int]] = {model_id: {} for model_id in model_ids}
    rows = conn.execute(
        select(aliases.c.model_id, aliases.c.name, aliases.c.version_number)
        .where(aliases.c.model_id.in_(model_ids))
        .order_by(aliases.c.name)
    )
    for row in rows:
        found[row.model_id][row.name] = row.version_number
    return found


def model_records(conn: Connection, name: str | None = None) -> list[ModelRecord]:
    """ModelRecords sorted by name: all models, or only the one called ``name``."""
    query = (
        select(
            models.c.id,
            models.c.name,
            models.c.description,
            models.c.created_at,
            func.max(versions.c.number).label("latest"),
            func.count(versions.c.id).label("version_count"),
        )
        .select_from(models.outerjoin(versions, versions.c.model_id == models.c.id))
        .group_by(models.c.id, models.c.name, models.c.description, models.c.created_at)
        .order_by(models.c.name)
    )
    if name is not None:
        query = query.where(models.c.name == name)
    rows = conn.execute(query).all()
    alias_maps = alias_map(conn, [row.id for row in rows]) if rows else {}
    return [
        ModelRecord(
            name=row.name,
            description=row.description,
            created_at=row.created_at,
            latest_version=row.latest,
            version_count=row.version_count,
            aliases=alias_maps[row.id],
        )
        for row in rows
    ]
