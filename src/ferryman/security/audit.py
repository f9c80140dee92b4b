"""The audit trail's records, their hash chain, its verification, and redaction of secrets.

Each record's ``hash`` is SHA-256 over a canonical JSON of its fields — ``seq``, ``at``,
``principal``, ``action``, ``target``, ``outcome``, ``source_address``, the stored ``details`` text
and ``prev_hash`` — and ``prev_hash`` is the previous record's hash (64 zeros for the first). The
registry also keeps the chain's head (last seq and hash) in a one-row table updated in the same
transaction as each append. :class:`ChainVerifier` walks the records in ``seq`` order and names
the first record that is not what was written:

- an edited record no longer matches its own hash;
- a deleted record leaves a gap in ``seq`` (seqs are handed out gap-free from the head row,
  not by an autoincrement that a rolled-back transaction would skip), or, at the end, a chain
  shorter than its head;
- a moved record carries another ``seq`` than the one it was hashed with, and the record after
  it another ``prev_hash``.

Someone who can write the database can still rewrite the whole chain and its head consistently;
anchoring the head elsewhere (logging it, exporting it) is what detects that. Action names are
dotted, ``<object>.<verb>``: ``version.push``, ``alias.set``, ``key.create``, ``auth.failed``.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

__all__ = [
    "GENESIS_HASH",
    "OUTCOMES",
    "AuditEntry",
    "AuditRecord",
    "ChainVerifier",
    "Outcome",
    "VerifyResult",
    "canonical_details",
    "record_hash",
    "redact",
    "redact_text",
]

#: ``prev_hash`` of the first record.
GENESIS_HASH = "0" * 64

#: ``success``: done; ``denied``: refused for lack of credentials or permission;
#: ``failed``: refused or failed for any other reason.
Outcome = Literal["success", "denied", "failed"]
OUTCOMES: tuple[Outcome, ...] = ("success", "denied", "failed")

_ACTION = re.compile(r"[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*)*", re.ASCII)
_MAX_ACTION = 64
_MAX_PRINCIPAL = 255
_MAX_TARGET = 512
_MAX_SOURCE = 128
_MAX_DETAILS_CHARS = 16_384
_MAX_DEPTH = 8
_REDACTED = "[redacted]"

# Names whose values are secrets: anything about secrets, tokens, passwords, credentials or
# cookies, and names ending in "key(s)" (api_key, x-api-key, private_key) — but not key_id.
_SECRET_NAME = re.compile(r"secret|token|passw|pwd|authori[sz]ation|credential|cookie|private|keys?$", re.IGNORECASE)
# An fm_ API key (its id is kept: it names the key without granting anything), a JWT, a bearer value.
_API_KEY = re.compile(r"(fm_[a-z0-9]{12})_[A-Za-z0-9_-]{8,}")
_JWT = re.compile(r"eyJ[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]*")
_BEARER = re.compile(r"(?i)\b(bearer|basic)\s+[A-Za-z0-9._~+/=-]{8,}")


def redact_text(text: str) -> str:
    """``text`` with API keys (all but their id), JWTs and bearer credentials masked."""
    if "fm_" in text:
        text = _API_KEY.sub(r"\1_" + _REDACTED, text)
    if "eyJ" in text:
        text = _JWT.sub(_REDACTED, text)
    return _BEARER.sub(r"\1 " + _REDACTED, text)


def redact(details: Mapping[str, Any]) -> dict[str, Any]:
    """A JSON-safe copy of ``details`` with secrets masked.

    Values under secret-looking names (``key``, ``api_key``, ``secret``, ``token``, ``password``,
    ``authorization``, …; ``key_id`` is kept) become ``"[redacted]"``; strings anywhere have API
    keys, JWTs and bearer credentials masked. Values that are not JSON types become strings;
    nesting deeper than 8 levels is cut.
    """
    return {str(name): _redact_value(str(name), value, 1) for name, value in details.items()}


def _redact_value(name: str, value: Any, depth: int) -> Any:
    if _SECRET_NAME.search(name) and value is not None:
        return _REDACTED
    if isinstance(value, str):
        return redact_text(value)
    if value is None or isinstance(value, bool | int):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)
    if depth >= _MAX_DEPTH:
        return "[too deep]"
    if isinstance(value, Mapping):
        return {str(k): _redact_value(str(k), v, depth + 1) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [_redact_value("", v, depth + 1) for v in value]
    return redact_text(str(value))


def canonical_details(details: Mapping[str, Any]) -> str:
    """The stored text of ``details``: redacted, canonical JSON, at most 16 KiB (else a stub saying so)."""
    text = json.dumps(redact(details), sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    if len(text) > _MAX_DETAILS_CHARS:
        return json.dumps({"truncated": True, "chars": len(text)}, sort_keys=True, separators=(",", ":"))
    return text


def _clip(text: str, limit: int) -> str:
    text = redact_text(text)
    return text if len(text) <= limit else text[: limit - 1] + "…"


@dataclass(frozen=True, slots=True)
class AuditEntry:
    """What happened, before it becomes a record: redacted and clipped, never refused for its content.

    ``action`` must be dotted lowercase (``alias.set``) and ``outcome`` one of :data:`OUTCOMES`
    (ValueError otherwise: those are the caller's constants, not user input). ``at`` defaults to
    the time of the append.
    """

    principal: str
    action: str
    target: str
    outcome: Outcome
    source_address: str = ""
    details: Mapping[str, Any] = field(default_factory=dict)
    at: datetime | None = None

    def __post_init__(self) -> None:
        if len(self.action) > _MAX_ACTION or not _ACTION.fullmatch(self.action):
            raise ValueError(f"audit action {self.action!r} must be dotted lowercase, such as 'alias.set'")
        if self.outcome not in OUTCOMES:
            raise ValueError(f"audit outcome {self.outcome!r} must be one of {', '.join(OUTCOMES)}")
        if self.at is not None and self.at.tzinfo is None:
            raise ValueError("audit timestamps must be timezone-aware")
        object.__setattr__(self, "principal", _clip(self.principal, _MAX_PRINCIPAL))
        object.__setattr__(self, "target", _clip(self.target, _MAX_TARGET))
        object.__setattr__(self, "source_address", _clip(self.source_address, _MAX_SOURCE))


@dataclass(frozen=True, slots=True)
class AuditRecord:
    """One record of the audit trail as stored."""

    seq: int
    at: datetime
    principal: str
    action: str
    target: str
    outcome: str
    source_address: str
    details: dict[str, Any]
    prev_hash: str
    hash: str

    def to_dict(self) -> dict[str, Any]:
        """Serialise for the management API and the CLI."""
        return {
            "seq": self.seq,
            "at": self.at.isoformat(),
            "principal": self.principal,
            "action": self.action,
            "target": self.target,
            "outcome": self.outcome,
            "source_address": self.source_address,
            "details": self.details,
            "prev_hash": self.prev_hash,
            "hash": self.hash,
        }


def record_hash(
    *,
    seq: int,
    at: datetime,
    principal: str,
    action: str,
    target: str,
    outcome: str,
    source_address: str,
    details: str,
    prev_hash: str,
) -> str:
    """SHA-256 (hex) of a record's canonical JSON; ``details`` is the stored text, hashed as is."""
    canonical = json.dumps(
        {
            "seq": seq,
            "at": at.astimezone(UTC).isoformat(timespec="microseconds"),
            "principal": principal,
            "action": action,
            "target": target,
            "outcome": outcome,
            "source_address": source_address,
            "details": details,
            "prev_hash": prev_hash,
        },
        sort_keys=True,
        separators=(",", ":"),
        ensure_ascii=True,
    )
    return hashlib.sha256(canonical.encode("ascii")).hexdigest()


@dataclass(frozen=True, slots=True)
class VerifyResult:
    """The outcome of checking the chain: ``checked`` records were intact before ``first_bad_seq``."""

    ok: bool
    checked: int
    first_bad_seq: int | None
    reason: str

    def to_dict(self) -> dict[str, Any]:
        """Serialise for the management API and the CLI."""
        return {"ok": self.ok, "checked": self.checked, "first_bad_seq": self.first_bad_seq, "reason": self.reason}


class ChainVerifier:
    """Checks records fed in ``seq`` order, then the chain's recorded head; stops at the first fault."""

    def __init__(self) -> None:
        self._expected = 1
        self._prev = GENESIS_HASH
        self._checked = 0
        self._fault: VerifyResult | None = None

    def feed(self, *, seq: int, prev_hash: str, stored_hash: str, content_hash: str) -> bool:
        """Check the next record (``content_hash`` recomputed from its fields); False once a fault is found."""
        if self._fault is not None:
            return False
        if seq != self._expected:
            return self._fail(self._expected, f"record {self._expected} is missing (the next record is {seq})")
        if content_hash != stored_hash:
            return self._fail(seq, f"record {seq} does not match its hash: it was edited or moved")
        if prev_hash != self._prev:
            what = "the chain's start" if seq == 1 else f"record {seq - 1}"
            return self._fail(seq, f"record {seq} does not follow {what}: a record before it was changed or removed")
        self._prev = stored_hash
        self._expected += 1
        self._checked += 1
        return True

    def unreadable(self, problem: str) -> VerifyResult:
        """The result when the record after the last one fed could not even be read (a mangled column)."""
        if self._fault is None:
            self._fail(self._expected, f"record {self._expected} cannot be read: {problem}")
        assert self._fault is not None
        return self._fault

    def finish(self, head_seq: int, head_hash: str) -> VerifyResult:
        """The result, once every record was fed, given the head the registry recorded."""
        if self._fault is not None:
            return self._fault
        last = self._expected - 1
        if last < head_seq:
            self._fail(self._expected, f"records {self._expected} to {head_seq} are missing (the chain ends at {last})")
        elif last > head_seq:
            self._checked = head_seq
            self._fail(head_seq + 1, f"records after {head_seq}, the chain's recorded head, were not appended by it")
        elif self._prev != head_hash:
            self._fail(last, f"record {last} is not the chain's recorded head")
        if self._fault is not None:
            return self._fault
        return VerifyResult(True, self._checked, None, f"{self._checked} records intact")

    def _fail(self, seq: int, reason: str) -> bool:
        self._fault = VerifyResult(False, self._checked, seq, reason)
        return False
