"""Request ids: taken from the caller's ``x-request-id`` or generated, returned on every response.

A pure ASGI middleware (no BaseHTTPMiddleware) so it costs one header on the hot path. The id
is also put in a context variable for log records.
"""

from __future__ import annotations

import contextvars
import itertools
import os

from starlette.types import ASGIApp, Message, Receive, Scope, Send

__all__ = ["REQUEST_ID", "RequestIdMiddleware", "caller_request_id"]

#: The current request's id, for log records.
REQUEST_ID: contextvars.ContextVar[str] = contextvars.ContextVar("ferryman_request_id", default="-")

_HEADER = b"x-request-id"


def caller_request_id(scope: Scope) -> bytes | None:
    """The caller's ``x-request-id``, when it is short and printable; else None."""
    for key, value in scope["headers"]:
        if key == _HEADER:
            # Only echo ids that are short and printable, so a caller cannot inject into logs.
            if 0 < len(value) <= 128 and value.isascii() and value.decode().isprintable():
                return bytes(value)
            return None
    return None


class RequestIdMiddleware:
    """Adds ``x-request-id`` to every HTTP response."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self._prefix = os.urandom(4).hex()
        self._ids = itertools.count(1)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = caller_request_id(scope) or f"{self._prefix}{next(self._ids):x}".encode()
        REQUEST_ID.set(request_id.decode())

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                message.setdefault("headers", [])
                message["headers"] = [*message["headers"], (_HEADER, request_id)]
            await send(message)

        await self.app(scope, receive, send_with_id)
