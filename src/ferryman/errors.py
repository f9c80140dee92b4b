"""One exception tree for the whole server; every class carries its status.

    FerrymanError                 500  base class; message + HTTP status
    ├── InvalidInput              400  bad request body, tensor, name, datatype or shape
    ├── Unauthenticated           401
    ├── Forbidden                 403
    ├── NotFound                  404  unknown model, version, alias
    ├── Conflict                  409  duplicate, still referenced, read-only source
    ├── PayloadTooLarge           413  body or upload over the configured limit
    ├── Overloaded                429  queue full (carries retry_after)
    ├── ModelFailed               500  the model raised, or its artifact is corrupt
    ├── RuntimeUnavailable        501  the framework's package is not installed (names the extra)
    ├── NotReady                  503  model or server not ready (yet)
    └── DeadlineExceeded          504

Adapters map these once: HTTP in ``protocols/http_errors.py``.
"""

from __future__ import annotations

__all__ = [
    "Conflict",
    "DeadlineExceeded",
    "FerrymanError",
    "Forbidden",
    "InvalidInput",
    "ModelFailed",
    "NotFound",
    "NotReady",
    "Overloaded",
    "PayloadTooLarge",
    "RuntimeUnavailable",
    "Unauthenticated",
]


class FerrymanError(Exception):
    """Base of every error Ferryman reports to a caller; ``status`` is the HTTP status."""

    status: int = 500

    def __init__(self, message: str, *, status: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        if status is not None:
            self.status = status

    def __str__(self) -> str:
        return self.message


class InvalidInput(FerrymanError):
    """The request is malformed or does not match the model's signature."""

    status = 400


class Unauthenticated(FerrymanError):
    """No valid credentials were presented."""

    status = 401


class Forbidden(FerrymanError):
    """The caller may not perform this action."""

    status = 403


class NotFound(FerrymanError):
    """The named model, version or alias does not exist."""

    status = 404


class Conflict(FerrymanError):
    """The action conflicts with the registry's current state."""

    status = 409


class PayloadTooLarge(FerrymanError):
    """The body or upload exceeds a configured limit."""

    status = 413


class Overloaded(FerrymanError):
    """The server sheds load; retry after ``retry_after`` seconds."""

    status = 429

    def __init__(self, message: str, *, retry_after: float = 1.0, status: int | None = None) -> None:
        super().__init__(message, status=status)
        self.retry_after = retry_after


class ModelFailed(FerrymanError):
    """The model raised while loading or predicting, or its artifact failed verification."""

    status = 500


class RuntimeUnavailable(FerrymanError):
    """The model's framework needs an optional extra that is not installed."""

    status = 501


class NotReady(FerrymanError):
    """The model or the server is not ready to serve."""

    status = 503


class DeadlineExceeded(FerrymanError):
    """The request's deadline passed before it could be served."""

    status = 504
