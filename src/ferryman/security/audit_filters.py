"""Reading the audit trail's time filters: an ISO-8601 time, or a duration meaning "that long ago"."""

from __future__ import annotations

from datetime import UTC, datetime

from ferryman.errors import InvalidInput
from ferryman.security.keys import parse_duration

__all__ = ["parse_moment"]


def parse_moment(text: str, *, option: str, now: datetime | None = None) -> datetime:
    """``2025-01-31T12:00:00+00:00`` (naive = UTC) or ``90m``/``24h``/``7d`` ago; InvalidInput naming ``option``."""
    value = text.strip()
    if value and value[-1] in "smhdw" and value[:-1].isdigit():
        return (now or datetime.now(UTC)) - parse_duration(value, option=option)
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise InvalidInput(f"{option}: expected an ISO-8601 time or a duration such as 24h, got {text!r}") from None
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)
