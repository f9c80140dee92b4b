"""The V2 inference endpoint as a bare ASGI app: the hot path, in front of everything else.

``POST /v2/models/{m}[/versions/{v}]/infer`` is answered here directly from the ASGI scope —
no router, no middleware stack, no Request object — because profiling showed the framework layers
costing as much event-loop time as decoding, validating and encoding together. Every other path
goes to the wrapped app (FastAPI: management API, docs, the other V2 routes). Errors use the same
map as everywhere else (``http_errors``), and every response carries ``x-request-id``.
"""

from __future__ import annotations

import itertools
import logging
import os
import time
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ferryman.errors import FerrymanError, InvalidInput, PayloadTooLarge
from ferryman.monitoring import tracing
from ferryman.monitoring.metrics import outcome_of
from ferryman.protocols.auth import Guard, error_headers
from ferryman.protocols.http_errors import error_body
from ferryman.protocols.request_id import REQUEST_ID, caller_request_id
from ferryman.protocols.v2_codec import (
    DEFAULT_MAX_TENSOR_ELEMENTS,
    decode_raw_binary_request,
    decode_request,
    encode_response,
)
from ferryman.serving.fallback import FALLBACK_PARAMETER
from ferryman.serving.handler import InferenceHandler
from ferryman.tensors import InferenceRequest

__all__ = ["SERVED_VERSION_HEADER", "V2InferenceApp", "request_deadline"]

logger = logging.getLogger(__name__)

#: Response header naming the version that answered (also ``model_version`` in the body).
SERVED_VERSION_HEADER = b"x-ferryman-served-version"
_PREFIX = "/v2/models/"
_SUFFIX = "/infer"
_JSON = b"application/json"
_BINARY = b"application/octet-stream"


class _ClientGone(Exception):
    """The client disconnected before its body arrived: nobody to answer."""


class _Unrouted(Exception):
    """A request refused before it reached a model version (counted apart in the metrics)."""

    def __init__(self, error: FerrymanError) -> None:
        super().__init__(error.message)
        self.error = error


def _retry_after(error: FerrymanError) -> list[tuple[bytes, bytes]] | None:
    retry = getattr(error, "retry_after", None)
    return [(b"retry-after", str(max(1, round(retry))).encode())] if retry is not None else None


def request_deadline(header: str | None, parameters: dict[str, Any] | None) -> float | None:
    """The request's deadline from ``x-ferryman-timeout-ms`` or the V2 ``timeout`` parameter (µs)."""
    seconds: float | None = None
    if header is not None:
        try:
            seconds = float(header) / 1000
        except ValueError:
            seconds = -1
        if not seconds > 0:
            raise InvalidInput(f"x-ferryman-timeout-ms must be a positive number of milliseconds, got {header!r}")
    elif parameters and "timeout" in parameters:
        timeout = parameters["timeout"]
        if not isinstance(timeout, int) or isinstance(timeout, bool) or timeout <= 0:
            raise InvalidInput("parameter 'timeout' must be a positive integer number of microseconds")
        seconds = timeout / 1_000_000
    return None if seconds is None else time.monotonic() + seconds


def _model_and_version(path: str) -> tuple[str, str | None] | None:
    """``/v2/models/m/infer`` → (m, None); ``/v2/models/m/versions/3/infer`` → (m, "3"); else None."""
    parts = path[len(_PREFIX) : -len(_SUFFIX)].split("/")
    if len(parts) == 1 and parts[0]:
        return parts[0], None
    if len(parts) == 3 and parts[0] and parts[1] == "versions" and parts[2]:
        return parts[0], parts[2]
    return None


class V2InferenceApp:
    """Answers V2 inference requests itself and hands every other request to ``fallback``."""

    def __init__(
        self,
        handler: InferenceHandler,
        fallback: ASGIApp,
        max_request_bytes: int,
        *,
        guard: Guard | None = None,
        max_tensor_elements: int = DEFAULT_MAX_TENSOR_ELEMENTS,
    ) -> None:
        self._handler = handler
        self._fallback = fallback
        self._limit = max_request_bytes
        self._guard = guard
        self._max_elements = max_tensor_elements
        # Request ids: a per-process random prefix and a counter (unique, and no syscall per request).
        self._id_prefix = os.urandom(4).hex()
        self._ids = itertools.count(1)
        self._outcomes = handler.protocol_outcomes("v2_rest")

    @property
    def app(self) -> ASGIApp:
        """The app every request but inference goes to."""
        return self._fallback

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "")
        if scope["type"] != "http" or not path.startswith(_PREFIX) or not path.endswith(_SUFFIX):
            await self._fallback(scope, receive, send)
            return
        target = _model_and_version(path)
        if target is None:
            await self._fallback(scope, receive, send)
            return
        request_id = caller_request_id(scope) or f"{self._id_prefix}{next(self._ids):x}".encode()
        REQUEST_ID.set(request_id.decode())
        tracer = tracing.TRACER
        if tracer is None:
            await self._answer(scope, receive, send, target, request_id)
            return
        with tracing.request_span(tracer, scope["headers"], *target, request_id.decode()) as record:

            async def send_recorded(message: Message) -> None:
                if message["type"] == "http.response.start":
                    record(message["status"])
                await send(message)

            await self._answer(scope, receive, send_recorded, target, request_id)

    async def _answer(
        self, scope: Scope, receive: Receive, send: Send, target: tuple[str, str | None], request_id: bytes
    ) -> None:
        """Admit, decode, serve and encode one inference request, answering errors as HTTP."""
        outcomes = self._outcomes
        if scope["method"] != "POST":
            outcomes["invalid"] += 1
            await _respond(send, 405, error_body("Method Not Allowed"), _JSON, request_id, None)
            return
        if self._guard is not None:
            try:
                await self._guard.admit_inference(scope, target[0])
            except FerrymanError as refusal:
                outcomes[outcome_of(refusal)] += 1
                body = error_body(refusal.message)
                await _respond(send, refusal.status, body, _JSON, request_id, error_headers(refusal))
                return
        try:
            payload, header_length, served, fallback = await self._infer(scope, receive, *target, request_id)
        except _ClientGone:
            return
        except _Unrouted as wrapped:
            exc = wrapped.error
            self._handler.record_unrouted(exc)
            outcomes[outcome_of(exc)] += 1
            await _respond(send, exc.status, error_body(exc.message), _JSON, request_id, _retry_after(exc))
            return
        except FerrymanError as exc:
            outcomes[outcome_of(exc)] += 1
            if exc.status >= 500:
                logger.warning("%s: %s", type(exc).__name__, exc.message)
            await _respond(send, exc.status, error_body(exc.message), _JSON, request_id, _retry_after(exc))
            return
        except Exception as exc:
            outcomes["failed"] += 1
            logger.exception("unhandled error in inference")
            await _respond(send, 500, error_body(f"internal error: {type(exc).__name__}"), _JSON, request_id, None)
            return
        outcomes["ok"] += 1
        extra = [(SERVED_VERSION_HEADER, served)]
        if fallback:
            extra.append((b"x-ferryman-fallback", fallback.encode()))
        if header_length is None:
            await _respond(send, 200, payload, _JSON, request_id, extra)
        else:
            extra.append((b"inference-header-content-length", str(header_length).encode()))
            await _respond(send, 200, payload, _BINARY, request_id, extra)

    async def _infer(
        self, scope: Scope, receive: Receive, name: str, version: str | None, request_id: bytes
    ) -> tuple[bytes, int | None, bytes, str | None]:
        tracer = tracing.TRACER if tracing.TRACER is None else tracing.recording_tracer()
        try:
            if tracer is None:
                inference = await self._decode(scope, receive, name, version)
            else:
                with tracer.start_as_current_span("ferryman.decode"):
                    inference = await self._decode(scope, receive, name, version)
        except FerrymanError as exc:
            raise _Unrouted(exc) from exc
        inference.request_id = request_id.decode("latin-1")
        inference.headers = scope["headers"]
        response = await self._handler.infer(inference)
        if tracer is None:
            payload, header_length = encode_response(response, inference.binary_outputs, inference.all_outputs_binary)
        else:
            with tracer.start_as_current_span("ferryman.encode"):
                payload, header_length = encode_response(
                    response, inference.binary_outputs, inference.all_outputs_binary
                )
        fallback = response.parameters.get(FALLBACK_PARAMETER) if response.parameters else None
        return payload, header_length, response.model_version.encode(), fallback

    async def _decode(self, scope: Scope, receive: Receive, name: str, version: str | None) -> InferenceRequest:
        await self._handler.model(name)  # an unknown model is a 404 whatever the body says
        headers = _headers(scope)
        body = await self._read_body(receive, headers.get("content-length"))
        header = headers.get("inference-header-content-length")
        inference: InferenceRequest
        if header is None:
            inference = decode_request(body, None, name, version, max_elements=self._max_elements)
        elif not header.isdigit():
            raise InvalidInput(f"Inference-Header-Content-Length must be a non-negative integer, got {header!r}")
        elif header == "0" or int(header) == 0:
            _, signature = await self._handler.signature(name, version)
            if len(signature.inputs) != 1:
                raise InvalidInput(
                    "a raw binary request (Inference-Header-Content-Length: 0) needs a model with exactly one "
                    f"input; model '{name}' has {len(signature.inputs)}"
                )
            inference = decode_raw_binary_request(
                body, signature.inputs[0], name, version, max_elements=self._max_elements
            )
        else:
            inference = decode_request(body, int(header), name, version, max_elements=self._max_elements)
        inference.deadline = request_deadline(headers.get("x-ferryman-timeout-ms"), inference.parameters)
        return inference

    async def _read_body(self, receive: Receive, declared: str | None) -> bytes:
        """The whole body, refusing (413) anything over the limit before buffering it."""
        if declared is not None and declared.isdigit() and int(declared) > self._limit:
            raise PayloadTooLarge(f"request body of {declared} bytes exceeds the limit of {self._limit} bytes")
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                raise _ClientGone
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self._limit:
                raise PayloadTooLarge(f"request body exceeds the limit of {self._limit} bytes")
            chunks.append(chunk)
            if not message.get("more_body", False):
                return chunks[0] if len(chunks) == 1 else b"".join(chunks)


def _headers(scope: Scope) -> dict[str, str]:
    """The few request headers the endpoint reads, decoded (ASGI gives lower-case names)."""
    wanted = {}
    for key, value in scope["headers"]:
        if key in _READ_HEADERS:
            wanted[key.decode()] = value.decode("latin-1")
    return wanted


_READ_HEADERS = frozenset({b"content-length", b"inference-header-content-length", b"x-ferryman-timeout-ms"})


async def _respond(
    send: Send,
    status: int,
    body: bytes,
    content_type: bytes,
    request_id: bytes,
    extra: list[tuple[bytes, bytes]] | None,
) -> None:
    headers = [
        (b"content-type", content_type),
        (b"content-length", str(len(body)).encode()),
        (b"x-request-id", request_id),
    ]
    if extra:
        headers.extend(extra)
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
