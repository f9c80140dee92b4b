"""The one map from Ferryman errors to gRPC status codes (the gRPC twin of ``http_errors.py``).

The table is keyed by the error's HTTP status, so a class that carries another status (``Overloaded``
answering 503) maps the way its HTTP answer does. The message goes out as the status details, as
it does in the V2 REST ``{"error": ...}`` body; a retry hint rides in the ``retry-after`` trailer.
"""

from __future__ import annotations

import logging
import math
from typing import Any

import grpc

from ferryman.errors import FerrymanError

__all__ = ["STATUS_CODES", "grpc_status", "trailers_for"]

logger = logging.getLogger(__name__)

#: HTTP status of a FerrymanError → gRPC status code. Anything not listed is INTERNAL.
STATUS_CODES: dict[int, grpc.StatusCode] = {
    400: grpc.StatusCode.INVALID_ARGUMENT,
    401: grpc.StatusCode.UNAUTHENTICATED,
    403: grpc.StatusCode.PERMISSION_DENIED,
    404: grpc.StatusCode.NOT_FOUND,
    # A conflict with the registry's state (stale expectation, still referenced): retry after re-reading.
    409: grpc.StatusCode.ABORTED,
    413: grpc.StatusCode.RESOURCE_EXHAUSTED,
    429: grpc.StatusCode.RESOURCE_EXHAUSTED,
    500: grpc.StatusCode.INTERNAL,
    501: grpc.StatusCode.UNIMPLEMENTED,
    503: grpc.StatusCode.UNAVAILABLE,
    504: grpc.StatusCode.DEADLINE_EXCEEDED,
}


def grpc_status(error: FerrymanError) -> grpc.StatusCode:
    """The gRPC status code for ``error``."""
    return STATUS_CODES.get(error.status, grpc.StatusCode.INTERNAL)


def trailers_for(error: FerrymanError) -> tuple[tuple[str, str], ...]:
    """Trailing metadata a refusal carries: ``retry-after`` (whole seconds) when the error has a retry hint."""
    retry: Any = getattr(error, "retry_after", None)
    if retry is None:
        return ()
    return (("retry-after", str(max(1, math.ceil(float(retry))))),)
