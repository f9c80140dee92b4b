"""The one map from Ferryman errors to HTTP responses: ``{"error": "..."}`` with the class's status."""

from __future__ import annotations

import logging

import orjson
from fastapi.exceptions import RequestValidationError
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response

from ferryman.errors import FerrymanError, Overloaded

__all__ = ["error_body", "error_response", "install_error_handlers"]

logger = logging.getLogger(__name__)


def error_body(message: str) -> bytes:
    """The V2 error body: ``{"error": "..."}``."""
    return orjson.dumps({"error": message})


def error_response(status: int, message: str, headers: dict[str, str] | None = None) -> Response:
    """A V2-style error response."""
    return Response(error_body(message), status_code=status, media_type="application/json", headers=headers)


async def _ferryman_error(_: Request, exc: Exception) -> Response:
    assert isinstance(exc, FerrymanError)
    headers = {"Retry-After": str(max(1, round(exc.retry_after)))} if isinstance(exc, Overloaded) else None
    if exc.status >= 500:
        logger.warning("%s: %s", type(exc).__name__, exc.message)
    return error_response(exc.status, exc.message, headers)


async def _http_error(_: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    return error_response(exc.status_code, str(exc.detail), dict(exc.headers) if exc.headers else None)


async def _validation_error(_: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestValidationError)
    problems = []
    for error in exc.errors():
        where = ".".join(str(part) for part in error.get("loc", ()) if part != "body")
        problems.append(f"{where or 'body'}: {error.get('msg', 'invalid')}")
    return error_response(400, "; ".join(problems) or "invalid request")


async def _unexpected(_: Request, exc: Exception) -> Response:
    logger.exception("unhandled error", exc_info=exc)
    return error_response(500, f"internal error: {type(exc).__name__}")


def install_error_handlers(app: Starlette) -> None:
    """Register the mapping on an app (FastAPI or Starlette)."""
    app.add_exception_handler(FerrymanError, _ferryman_error)
    app.add_exception_handler(HTTPException, _http_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(Exception, _unexpected)
