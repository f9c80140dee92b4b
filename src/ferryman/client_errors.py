"""How the client turns a server's error answer into the matching :mod:`ferryman.errors` class."""

from __future__ import annotations

import httpx
import orjson

from ferryman.errors import (
    Conflict,
    DeadlineExceeded,
    FerrymanError,
    Forbidden,
    InvalidInput,
    NotFound,
    NotReady,
    Overloaded,
    PayloadTooLarge,
    RuntimeUnavailable,
    Unauthenticated,
)

__all__ = ["error_from_response"]

#: The error each status stands for; the statuses come from the classes, as the server sends them.
_ERRORS_BY_STATUS: dict[int, type[FerrymanError]] = {
    cls.status: cls
    for cls in (
        InvalidInput,
        Unauthenticated,
        Forbidden,
        NotFound,
        Conflict,
        PayloadTooLarge,
        Overloaded,
        RuntimeUnavailable,
        NotReady,
        DeadlineExceeded,
    )
}


def error_from_response(response: httpx.Response) -> FerrymanError:
    """Turn a non-2xx response into the matching error, carrying the server's message."""
    message = ""
    try:
        body = orjson.loads(response.content)
        if isinstance(body, dict) and "error" in body:
            message = str(body["error"])
        elif isinstance(body, dict) and "detail" in body:
            message = str(body["detail"])
    except orjson.JSONDecodeError:
        message = response.text.strip()[:500]
    if not message:
        message = f"{response.request.method} {response.request.url.path}: {response.reason_phrase}"
    status = response.status_code
    cls = _ERRORS_BY_STATUS.get(status)
    if cls is None:
        return FerrymanError(message, status=status)
    if cls is Overloaded:
        retry_after = _retry_after(response.headers.get("Retry-After"))
        return Overloaded(message, retry_after=retry_after, status=status)
    return cls(message, status=status)


def _retry_after(value: str | None) -> float:
    try:
        return max(0.0, float(value)) if value is not None else 1.0
    except ValueError:
        return 1.0
