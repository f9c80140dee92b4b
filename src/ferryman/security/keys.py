"""API keys: their format, how they are hashed, durations, and the in-memory table that verifies them.

A key reads ``fm_<key id>_<secret>``: ``fm_`` so secret scanners and :func:`redact` recognise
it, a 12-character key id (lowercase letters and digits; the lookup key, never secret, shown in
listings and audit records) and 43 characters of ``secrets.token_urlsafe(32)`` (256 random bits).

Only ``sha256:<hex>`` of the whole key is stored. A slow password hash (bcrypt, scrypt, Argon2)
exists to make guessing low-entropy passwords expensive; a 256-bit random secret cannot be guessed
at any speed, so it would only add ~100 ms of CPU to every request. SHA-256 takes about a
microsecond, which lets :class:`KeyCache` check every request against the hash itself, with no
cache of plaintext keys. Digests are compared with :func:`hmac.compare_digest`.

:class:`KeyCache` holds every key's digest and principal in memory: a request costs one regex
match, one SHA-256 and one dict lookup, never a database query. It is rebuilt from the registry
(``RegistryService.key_table()``) whenever the registry revision moves — every key change bumps
it — so a revocation reaches every process and replica within one revision poll.
"""

from __future__ import annotations

import hashlib
import hmac
import math
import re
import secrets
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Literal

from ferryman.errors import InvalidInput, Unauthenticated
from ferryman.security.permissions import Role
from ferryman.security.principal import Principal

__all__ = [
    "KEY_ID_LENGTH",
    "KEY_PREFIX",
    "KeyCache",
    "KeyRecord",
    "KeyRejected",
    "KeyState",
    "RejectReason",
    "StoredKey",
    "generate_key",
    "hash_key",
    "key_id_of",
    "parse_duration",
]

KEY_PREFIX = "fm_"
KEY_ID_LENGTH = 12
_KEY_ID_ALPHABET = "abcdefghijklmnopqrstuvwxyz0123456789"
_SECRET_BYTES = 32
# Accepts longer secrets than we issue so the length can grow without breaking old keys.
_KEY_FORMAT = re.compile(r"fm_([a-z0-9]{12})_[A-Za-z0-9_-]{43,128}", re.ASCII)
_MAX_KEY_CHARS = 3 + KEY_ID_LENGTH + 1 + 128
_HASH_SCHEME = "sha256:"
# Domain separation: this digest can never be mistaken for a SHA-256 of the same bytes elsewhere.
_HASH_DOMAIN = b"ferryman-api-key-v1\x00"
_DURATION = re.compile(r"([1-9][0-9]{0,6})([smhdw])", re.ASCII)
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
_MAX_DURATION = timedelta(days=3660)

#: Why a key was refused; recorded in the audit trail, never told to the caller.
RejectReason = Literal["malformed", "unknown", "wrong secret", "revoked", "expired"]
#: A key's state at some moment.
KeyState = Literal["active", "expired", "revoked"]


def generate_key() -> tuple[str, str]:
    """A new ``(key_id, plaintext)`` with a random id and 256 random bits of secret."""
    key_id = "".join(secrets.choice(_KEY_ID_ALPHABET) for _ in range(KEY_ID_LENGTH))
    return key_id, f"{KEY_PREFIX}{key_id}_{secrets.token_urlsafe(_SECRET_BYTES)}"


def key_id_of(plaintext: str) -> str | None:
    """The key id of a well-formed key, else None (never raises, never echoes the key)."""
    if not isinstance(plaintext, str) or len(plaintext) > _MAX_KEY_CHARS:
        return None
    match = _KEY_FORMAT.fullmatch(plaintext)
    return None if match is None else match.group(1)


def _digest(plaintext: str) -> bytes:
    return hashlib.sha256(_HASH_DOMAIN + plaintext.encode()).digest()


def hash_key(plaintext: str) -> str:
    """The stored form of a key: ``sha256:<hex>``."""
    return _HASH_SCHEME + _digest(plaintext).hex()


def parse_duration(text: str, *, option: str = "--expires") -> timedelta:
    """``90d``, ``12h``, ``30m``, ``45s`` or ``2w`` as a timedelta; InvalidInput naming ``option``."""
    match = _DURATION.fullmatch(text.strip()) if isinstance(text, str) else None
    if match is None:
        raise InvalidInput(f"{option}: expected a positive duration such as 90d, 12h, 30m, 45s or 2w, got {text!r}")
    duration = timedelta(seconds=int(match.group(1)) * _UNIT_SECONDS[match.group(2)])
    if duration > _MAX_DURATION:
        raise InvalidInput(f"{option}: at most {_MAX_DURATION.days}d, got {text!r}")
    return duration


@dataclass(frozen=True, slots=True)
class KeyRecord:
    """An API key as listed: everything but its secret and hash."""

    key_id: str
    name: str
    role: Role
    models: tuple[str, ...] | None
    created_at: datetime
    created_by: str
    expires_at: datetime | None
    revoked_at: datetime | None
    revoked_by: str | None
    last_used_at: datetime | None
    replaces: str | None

    @property
    def hint(self) -> str:
        """How the key starts, to recognise it (``fm_<key id>_…``)."""
        return f"{KEY_PREFIX}{self.key_id}_…"

    def state(self, now: datetime) -> KeyState:
        """Whether the key is active, expired or revoked at ``now``."""
        if self.revoked_at is not None:
            return "revoked"
        if self.expires_at is not None and now >= self.expires_at:
            return "expired"
        return "active"

    def to_dict(self, now: datetime) -> dict[str, Any]:
        """Serialise for the management API and the CLI (with its state at ``now``)."""

        def iso(moment: datetime | None) -> str | None:
            return None if moment is None else moment.isoformat()

        return {
            "key_id": self.key_id,
            "hint": self.hint,
            "name": self.name,
            "role": self.role.value,
            "models": None if self.models is None else list(self.models),
            "state": self.state(now),
            "created_at": iso(self.created_at),
            "created_by": self.created_by,
            "expires_at": iso(self.expires_at),
            "revoked_at": iso(self.revoked_at),
            "revoked_by": self.revoked_by,
            "last_used_at": iso(self.last_used_at),
            "replaces": self.replaces,
        }


@dataclass(frozen=True, slots=True)
class StoredKey:
    """A key with its stored hash: what :class:`KeyCache` is built from."""

    record: KeyRecord
    secret_hash: str


class KeyRejected(Unauthenticated):
    """A presented API key was refused (401).

    The message is the same whatever the reason; ``reason`` and ``key_id`` (None when the key
    was malformed) are for the audit trail only.
    """

    def __init__(self, reason: RejectReason, key_id: str | None) -> None:
        super().__init__("invalid, expired or revoked API key")
        self.reason: RejectReason = reason
        self.key_id = key_id


@dataclass(frozen=True, slots=True)
class _Entry:
    digest: bytes
    principal: Principal
    expires_at: float
    revoked: bool


#: How many distinct valid keys one process remembers as verified (then it starts over).
_MAX_VERIFIED = 4096
_MISSING = _Entry(b"\x00" * 32, Principal("", Role.VIEWER), 0.0, True)


class KeyCache:
    """Every API key's digest and principal, in memory: verifies a key without touching the database.

    :meth:`load` swaps in a whole new table with one assignment, so :meth:`verify` needs no lock
    and may run on the event loop while another thread loads. ``clock`` returns wall-clock
    seconds since the epoch: expiry is a calendar time, so this is the one place where wall time,
    not monotonic time, is right.
    """

    def __init__(self, *, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        self._entries: dict[str, _Entry] = {}
        self._used: set[str] = set()
        # Keys that verified since the last load, by plaintext: a repeat caller skips the regex,
        # the SHA-256 and the constant-time compare (bench/auth_overhead.py). Only valid keys get
        # in, so junk cannot fill it; a load (any key change) empties it, so a revocation is
        # never served from here; expiry is still checked on every hit.
        self._verified: dict[str, tuple[str, _Entry]] = {}

    def __len__(self) -> int:
        return len(self._entries)

    def load(self, keys: Iterable[StoredKey]) -> None:
        """Replace the table with ``keys`` (revoked ones included, so refusals say why)."""
        entries: dict[str, _Entry] = {}
        for key in keys:
            record = key.record
            if not key.secret_hash.startswith(_HASH_SCHEME):
                raise ValueError(f"key {record.key_id}: unknown hash scheme")
            principal = Principal(
                record.name or f"key:{record.key_id}", record.role, record.models, record.key_id, "key"
            )
            expires = math.inf if record.expires_at is None else record.expires_at.timestamp()
            digest = bytes.fromhex(key.secret_hash[len(_HASH_SCHEME) :])
            entries[record.key_id] = _Entry(digest, principal, expires, record.revoked_at is not None)
        self._entries, self._verified = entries, {}

    def verify(self, plaintext: str) -> Principal:
        """The principal of a valid key; KeyRejected (401) otherwise, with the same message whatever the reason."""
        known = self._verified.get(plaintext)
        if known is not None and self._clock() < known[1].expires_at:
            self._used.add(known[0])
            return known[1].principal
        key_id = key_id_of(plaintext)
        if key_id is None:
            raise KeyRejected("malformed", None)
        # Hash even for an unknown id so that the time taken does not tell which ids exist.
        digest = _digest(plaintext)
        entry = self._entries.get(key_id, _MISSING)
        if not hmac.compare_digest(digest, entry.digest):
            raise KeyRejected("unknown" if entry is _MISSING else "wrong secret", key_id)
        if entry.revoked:
            raise KeyRejected("revoked", key_id)
        if self._clock() >= entry.expires_at:
            raise KeyRejected("expired", key_id)
        self._used.add(key_id)
        if len(self._verified) >= _MAX_VERIFIED:
            self._verified = {}
        self._verified[plaintext] = (key_id, entry)
        return entry.principal

    def drain_used(self) -> set[str]:
        """The ids of keys verified since the last call (for ``RegistryService.mark_keys_used``).

        Best effort by design: a verify racing the swap may be counted in the next period.
        """
        used, self._used = self._used, set()
        return used
