"""Structured logging: JSON lines when stderr is not a terminal, readable lines when it is."""

from __future__ import annotations

import logging
import sys
from datetime import UTC, datetime

import orjson

from ferryman.monitoring.tracing import current_trace_id
from ferryman.protocols.request_id import REQUEST_ID
from ferryman.security.audit import redact_text

__all__ = ["configure_logging"]


class _JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        document = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
            "request_id": REQUEST_ID.get(),
        }
        trace_id = current_trace_id()
        if trace_id is not None:
            document["trace_id"] = trace_id
        if record.exc_info:
            document["exception"] = self.formatException(record.exc_info)
        return orjson.dumps(document).decode()


class _RedactingHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Masks API keys, JWTs and bearer credentials in every line, exceptions included (docs/security.md)."""

    def format(self, record: logging.LogRecord) -> str:
        return redact_text(super().format(record))


def configure_logging(level: str) -> None:
    """Send Ferryman's and uvicorn's logs to stderr in one format, with credentials masked."""
    handler = _RedactingHandler(sys.stderr)
    if sys.stderr.isatty():
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)-7s %(name)s: %(message)s"))
    else:
        handler.setFormatter(_JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
