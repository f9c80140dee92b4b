"""API keys in the registry database: create, list, rotate, revoke, and the table the key cache loads.

Every key change is one write transaction that bumps the registry revision — so every process
and replica polling it reloads its :class:`~ferryman.security.keys.KeyCache` within seconds — and
appends its audit record in the same transaction, so no key changes without a record of who did
it. Failed attempts (unknown key, bad role) change nothing and are audited by the caller.

Rotation creates a new key with the same name, role and models (and, when the old key expires,
the same lifetime, counted from now) and revokes the old one at once — or, with ``grace``, lets it
expire after that grace period, so a fleet of clients can switch over without an outage.

``last_used_at`` is written at most once per flush, not per request: the key cache collects the
ids it verified and the server calls :meth:`ApiKeys.mark_keys_used` periodically (say every 60 s).
That write neither bumps the revision nor audits (it is bookkeeping, not a change).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection, Row, insert, or_, select, update
from sqlalchemy.exc import IntegrityError

from ferryman.errors import Conflict, InvalidInput, NotFound
from ferryman.registry import store
from ferryman.registry.audit_log import append_records
from ferryman.registry.core import RegistryCore, Unchanged, utc_now
from ferryman.registry.store import api_keys
from ferryman.security.audit import AuditEntry
from ferryman.security.keys import KEY_ID_LENGTH, KeyRecord, StoredKey, generate_key, hash_key, key_id_of
from ferryman.security.permissions import Role, parse_role, validate_model_scope

__all__ = ["MAX_ROTATION_GRACE", "ApiKeys"]

#: Longest time an old key may keep working after a rotation.
MAX_ROTATION_GRACE = timedelta(days=30)
_CREATE_ATTEMPTS = 5
_MAX_TEXT = 255
_KEY_ID = re.compile(rf"[a-z0-9]{{{KEY_ID_LENGTH}}}", re.ASCII)


class ApiKeys(RegistryCore):
    """API key reads and writes, part of RegistryService."""

    def create_key(
        self,
        role: Role | str,
        models: Iterable[str] | None = None,
        *,
        expires_in: timedelta | None = None,
        name: str = "",
        created_by: str = "local",
        source_address: str = "",
    ) -> tuple[KeyRecord, str]:
        """Create a key; returns its record and its plaintext, which is never available again.

        ``models`` None means every model; names and patterns (``fraud-*``) restrict it.
        InvalidInput naming the field for a bad role, model list, lifetime or name.
        """
        granted = parse_role(role)
        scope = validate_model_scope(models)
        _check_text(name, "name")
        _check_text(created_by, "created_by")
        if expires_in is not None and expires_in <= timedelta(0):
            raise InvalidInput(f"expires_in: expected a positive duration, got {expires_in}")
        for attempt in range(1, _CREATE_ATTEMPTS + 1):
            try:
                with store.write_transaction(self._engine) as conn:
                    now = utc_now()
                    key_id, plaintext = generate_key()
                    expires_at = None if expires_in is None else now + expires_in
                    _insert(conn, key_id, plaintext, name, granted, scope, now, created_by, expires_at, None)
                    record = _get(conn, key_id)
                    details = {"key_id": key_id, "name": name, "role": granted.value, "models": _listed(scope)}
                    details["expires_at"] = None if expires_at is None else expires_at.isoformat()
                    _audit(conn, created_by, "key.create", key_id, source_address, details)
                return record, plaintext
            except IntegrityError:
                # Two 12-character random ids colliding is all but impossible; retrying is cheap.
                if attempt == _CREATE_ATTEMPTS:
                    raise
        raise AssertionError("unreachable")

    def get_key(self, key_id: str) -> KeyRecord:
        """One key's record; NotFound if there is no such key."""
        with self._engine.connect() as conn:
            return _get(conn, _key_id(key_id))

    def list_keys(self, *, include_revoked: bool = True) -> list[KeyRecord]:
        """Every key, oldest first (revoked ones too unless ``include_revoked`` is False)."""
        query = select(api_keys).order_by(api_keys.c.created_at, api_keys.c.key_id)
        if not include_revoked:
            query = query.where(api_keys.c.revoked_at.is_(None))
        with self._engine.connect() as conn:
            return [_record(row) for row in conn.execute(query)]

    def key_table(self) -> list[StoredKey]:
        """Every key with its hash: what ``KeyCache.load`` takes."""
        with self._engine.connect() as conn:
            return [StoredKey(_record(row), row.secret_hash) for row in conn.execute(select(api_keys))]

    def has_active_key(self, role: Role | str | None = None, *, now: datetime | None = None) -> bool:
        """True when some key (of ``role``, if given) is neither revoked nor expired at ``now``."""
        moment = utc_now() if now is None else now
        query = select(api_keys.c.key_id).where(
            api_keys.c.revoked_at.is_(None),
            or_(api_keys.c.expires_at.is_(None), api_keys.c.expires_at > moment),
        )
        if role is not None:
            query = query.where(api_keys.c.role == parse_role(role).value)
        with self._engine.connect() as conn:
            return conn.execute(query.limit(1)).first() is not None

    def revoke_key(self, key_id: str, *, by: str = "local", source_address: str = "") -> KeyRecord:
        """Revoke a key (by id, or the whole key) at once; NotFound if unknown. Revoking twice changes nothing."""
        _check_text(by, "by")
        key_id = _key_id(key_id)
        try:
            with store.write_transaction(self._engine) as conn:
                row = _row(conn, key_id)
                if row.revoked_at is not None:
                    raise Unchanged(_record(row))
                conn.execute(
                    update(api_keys).where(api_keys.c.key_id == key_id).values(revoked_at=utc_now(), revoked_by=by)
                )
                _audit(conn, by, "key.revoke", key_id, source_address, {"key_id": key_id})
                return _get(conn, key_id)
        except Unchanged as unchanged:
            same: KeyRecord = unchanged.value
            return same

    def rotate_key(
        self, key_id: str, *, by: str = "local", grace: timedelta | None = None, source_address: str = ""
    ) -> tuple[KeyRecord, str]:
        """Replace a key by a new one with the same name, role and models; returns the new record and plaintext.

        The old key is revoked now, or with ``grace`` expires after it (at most 30 days).
        NotFound if unknown; Conflict if it was revoked (rotation must not bring a revoked key's
        access back: create a new key instead).
        """
        _check_text(by, "by")
        key_id = _key_id(key_id)
        if grace is not None and not timedelta(0) < grace <= MAX_ROTATION_GRACE:
            raise InvalidInput(f"grace: expected a duration above 0 and at most {MAX_ROTATION_GRACE.days}d")
        for attempt in range(1, _CREATE_ATTEMPTS + 1):
            try:
                with store.write_transaction(self._engine) as conn:
                    old = _row(conn, key_id)
                    if old.revoked_at is not None:
                        raise Conflict(f"key {key_id} was revoked; create a new key instead of rotating it")
                    now = utc_now()
                    new_id, plaintext = generate_key()
                    expires_at = None if old.expires_at is None else now + (old.expires_at - old.created_at)
                    models = None if old.models is None else tuple(json.loads(old.models))
                    role = Role(old.role)
                    _insert(conn, new_id, plaintext, old.name, role, models, now, by, expires_at, key_id)
                    if grace is None:
                        retire: dict[str, Any] = {"revoked_at": now, "revoked_by": by}
                    else:
                        ends = now + grace
                        retire = {"expires_at": ends if old.expires_at is None else min(old.expires_at, ends)}
                    conn.execute(update(api_keys).where(api_keys.c.key_id == key_id).values(**retire))
                    details: dict[str, Any] = {"key_id": new_id, "replaces": key_id}
                    details["grace_s"] = None if grace is None else grace.total_seconds()
                    _audit(conn, by, "key.rotate", key_id, source_address, details)
                    return _get(conn, new_id), plaintext
            except IntegrityError:
                if attempt == _CREATE_ATTEMPTS:
                    raise
        raise AssertionError("unreachable")

    def mark_keys_used(self, key_ids: Iterable[str], *, at: datetime | None = None) -> int:
        """Set ``last_used_at`` (never backwards) for keys a key cache verified; returns how many rows moved.

        Bookkeeping: no revision bump, no audit record.
        """
        ids = sorted(set(key_ids))
        if not ids:
            return 0
        moment = utc_now() if at is None else at
        with store.append_transaction(self._engine) as conn:
            result = conn.execute(
                update(api_keys)
                .where(
                    api_keys.c.key_id.in_(ids),
                    or_(api_keys.c.last_used_at.is_(None), api_keys.c.last_used_at < moment),
                )
                .values(last_used_at=moment)
            )
            return int(result.rowcount)


def _check_text(value: str, field: str) -> None:
    if not isinstance(value, str) or len(value) > _MAX_TEXT or not value.isprintable():
        raise InvalidInput(f"{field}: expected printable text of at most {_MAX_TEXT} characters")


def _listed(scope: tuple[str, ...] | None) -> list[str] | None:
    return None if scope is None else list(scope)


def _insert(
    conn: Connection,
    key_id: str,
    plaintext: str,
    name: str,
    role: Role,
    scope: tuple[str, ...] | None,
    now: datetime,
    created_by: str,
    expires_at: datetime | None,
    replaces: str | None,
) -> None:
    conn.execute(
        insert(api_keys).values(
            key_id=key_id,
            secret_hash=hash_key(plaintext),
            name=name,
            role=role.value,
            models=None if scope is None else json.dumps(list(scope)),
            created_at=now,
            created_by=created_by,
            expires_at=expires_at,
            replaces=replaces,
        )
    )


def _audit(conn: Connection, by: str, action: str, key_id: str, source_address: str, details: dict[str, Any]) -> None:
    append_records(conn, [AuditEntry(by, action, f"key/{key_id}", "success", source_address, details)])


def _row(conn: Connection, key_id: str) -> Row[Any]:
    row = conn.execute(select(api_keys).where(api_keys.c.key_id == key_id)).first()
    if row is None:
        raise NotFound(f"no API key with id {key_id!r}")
    return row


def _key_id(value: str) -> str:
    """The key id in ``value``: an id, or a whole key (revoking a leaked key by pasting it works)."""
    if isinstance(value, str) and _KEY_ID.fullmatch(value):
        return value
    from_key = key_id_of(value)
    if from_key is None:
        # Never echo the value: it may be a mistyped secret.
        raise InvalidInput(f"key_id: expected a {KEY_ID_LENGTH}-character key id (lowercase letters and digits)")
    return from_key


def _get(conn: Connection, key_id: str) -> KeyRecord:
    return _record(_row(conn, key_id))


def _record(row: Row[Any]) -> KeyRecord:
    return KeyRecord(
        key_id=row.key_id,
        name=row.name,
        role=Role(row.role),
        models=None if row.models is None else tuple(json.loads(row.models)),
        created_at=row.created_at,
        created_by=row.created_by,
        expires_at=row.expires_at,
        revoked_at=row.revoked_at,
        revoked_by=row.revoked_by,
        last_used_at=row.last_used_at,
        replaces=row.replaces,
    )
