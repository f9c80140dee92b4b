"""The audit trail in the registry database: appends that keep the hash chain, filtered reads, verification.

Appends do not bump the registry revision (they are frequent, and every process polls that
counter to rebuild its catalog). They serialise on the chain's head row, ``audit_state``: on
SQLite the append transaction takes the database's write lock at ``BEGIN IMMEDIATE``, so several
processes on one file queue; on PostgreSQL ``SELECT … FOR UPDATE`` on that row makes concurrent
appenders wait and then read the head the previous one committed. Registry writes that must be
audited atomically (key changes) append inside their own write transaction with
:func:`append_records`.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Connection, Row, insert, select, update

from ferryman.errors import InvalidInput
from ferryman.registry import store
from ferryman.registry.core import RegistryCore, utc_now
from ferryman.registry.store import audit_log, audit_state
from ferryman.security.audit import (
    OUTCOMES,
    AuditEntry,
    AuditRecord,
    ChainVerifier,
    VerifyResult,
    canonical_details,
    record_hash,
)

__all__ = ["MAX_AUDIT_LIST", "AuditLog", "append_records"]

#: Most records one list call returns.
MAX_AUDIT_LIST = 10_000
_VERIFY_BATCH = 1000


def append_records(conn: Connection, entries: Sequence[AuditEntry]) -> list[AuditRecord]:
    """Append ``entries`` to the chain inside the caller's write transaction, in order."""
    head = conn.execute(
        select(audit_state.c.last_seq, audit_state.c.last_hash).where(audit_state.c.id == 1).with_for_update()
    ).one()
    seq, prev_hash = int(head.last_seq), str(head.last_hash)
    now = utc_now()
    rows: list[dict[str, Any]] = []
    records: list[AuditRecord] = []
    for entry in entries:
        seq += 1
        details = canonical_details(entry.details)
        fields: dict[str, Any] = {
            "seq": seq,
            "at": now if entry.at is None else entry.at.astimezone(UTC),
            "principal": entry.principal,
            "action": entry.action,
            "target": entry.target,
            "outcome": entry.outcome,
            "source_address": entry.source_address,
            "details": details,
            "prev_hash": prev_hash,
        }
        prev_hash = record_hash(**fields)
        rows.append({**fields, "hash": prev_hash})
        records.append(AuditRecord(**{**fields, "details": json.loads(details), "hash": prev_hash}))
    if rows:
        conn.execute(insert(audit_log), rows)
        conn.execute(update(audit_state).where(audit_state.c.id == 1).values(last_seq=seq, last_hash=prev_hash))
    return records


class AuditLog(RegistryCore):
    """Audit trail appends, reads and verification, part of RegistryService."""

    def append_audit(self, entry: AuditEntry) -> AuditRecord:
        """Append one record to the chain (without bumping the registry revision)."""
        return self.append_audit_many([entry])[0]

    def append_audit_many(self, entries: Sequence[AuditEntry]) -> list[AuditRecord]:
        """Append several records in one transaction, in order (for buffered authentication failures)."""
        if not entries:
            return []
        with store.append_transaction(self._engine) as conn:
            return append_records(conn, entries)

    def audit_head(self) -> tuple[int, str]:
        """``(last seq, last hash)`` of the chain (``(0, 64 zeros)`` when empty), to anchor it elsewhere."""
        with self._engine.connect() as conn:
            row = conn.execute(select(audit_state.c.last_seq, audit_state.c.last_hash)).one()
        return int(row.last_seq), str(row.last_hash)

    def list_audit(
        self,
        *,
        principal: str | None = None,
        action: str | None = None,
        target_prefix: str | None = None,
        outcome: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        before_seq: int | None = None,
        limit: int = 100,
    ) -> list[AuditRecord]:
        """Records matching every filter given, newest first.

        ``action`` is exact, or a prefix when it ends in ``*`` (``key.*``); ``since`` is
        inclusive and ``until`` exclusive; ``before_seq`` pages back from an earlier answer's
        last seq. InvalidInput naming the filter for a bad value.
        """
        if not 1 <= limit <= MAX_AUDIT_LIST:
            raise InvalidInput(f"limit: expected 1 to {MAX_AUDIT_LIST}, got {limit}")
        if outcome is not None and outcome not in OUTCOMES:
            raise InvalidInput(f"outcome: expected one of {', '.join(OUTCOMES)}, got {outcome!r}")
        for name, moment in (("since", since), ("until", until)):
            if moment is not None and moment.tzinfo is None:
                raise InvalidInput(f"{name}: expected a timezone-aware time")
        query = select(audit_log).order_by(audit_log.c.seq.desc()).limit(limit)
        if principal is not None:
            query = query.where(audit_log.c.principal == principal)
        if action is not None:
            if action.endswith("*"):
                query = query.where(audit_log.c.action.startswith(action[:-1], autoescape=True))
            else:
                query = query.where(audit_log.c.action == action)
        if target_prefix is not None:
            query = query.where(audit_log.c.target.startswith(target_prefix, autoescape=True))
        if outcome is not None:
            query = query.where(audit_log.c.outcome == outcome)
        if since is not None:
            query = query.where(audit_log.c.at >= since)
        if until is not None:
            query = query.where(audit_log.c.at < until)
        if before_seq is not None:
            query = query.where(audit_log.c.seq < before_seq)
        with self._engine.connect() as conn:
            return [_record(row) for row in conn.execute(query)]

    def verify_audit(self) -> VerifyResult:
        """Walk the whole chain and its head in one snapshot; names the first edited, missing or moved record."""
        with self._engine.connect() as conn:
            if conn.dialect.name == "postgresql":
                # One snapshot for the head and every record, so concurrent appends are not faults.
                conn = conn.execution_options(isolation_level="REPEATABLE READ")
            head = conn.execute(select(audit_state.c.last_seq, audit_state.c.last_hash)).one()
            verifier = ChainVerifier()
            rows = conn.execution_options(yield_per=_VERIFY_BATCH).execute(select(audit_log).order_by(audit_log.c.seq))
            try:
                for row in rows:
                    content = record_hash(
                        seq=row.seq,
                        at=row.at,
                        principal=row.principal,
                        action=row.action,
                        target=row.target,
                        outcome=row.outcome,
                        source_address=row.source_address,
                        details=row.details,
                        prev_hash=row.prev_hash,
                    )
                    if not verifier.feed(
                        seq=row.seq, prev_hash=row.prev_hash, stored_hash=row.hash, content_hash=content
                    ):
                        rows.close()
                        break
            except (ValueError, TypeError) as exc:
                # A column too mangled to parse (a timestamp that is not one) is tampering too.
                return verifier.unreadable(str(exc))
            return verifier.finish(int(head.last_seq), str(head.last_hash))


def _record(row: Row[Any]) -> AuditRecord:
    try:
        details = json.loads(row.details)
    except ValueError:
        details = {"unreadable": row.details[:200]}
    if not isinstance(details, dict):
        details = {"value": details}
    return AuditRecord(
        seq=row.seq,
        at=row.at,
        principal=row.principal,
        action=row.action,
        target=row.target,
        outcome=row.outcome,
        source_address=row.source_address,
        details=details,
        prev_hash=row.prev_hash,
        hash=row.hash,
    )
