"""The Open Inference Protocol (V2) over gRPC: ``inference.GRPCInferenceService`` on a ``grpc.aio`` server.

A thin adapter, like ``v2_infer.py``: each RPC admits the caller through the same :class:`Guard`
(the metadata stands in for HTTP headers, the peer certificate for the ASGI ``tls`` extension, the
RPC's rule comes from ``route_permissions.GRPC_METHODS``), decodes into the same internal request
(``v2_grpc_codec``), calls the same :class:`InferenceHandler`, and maps errors once
(``v2_grpc_errors``). The RPC's deadline becomes the request's deadline. The repository RPCs of
Triton's superset are not registered, so they answer UNIMPLEMENTED.
"""

from __future__ import annotations

import itertools
import logging
import os
import time
from collections.abc import Awaitable, Callable
from functools import lru_cache
from typing import Any

import grpc

from ferryman import __version__
from ferryman.errors import FerrymanError, InvalidInput
from ferryman.monitoring.metrics import outcome_of
from ferryman.protocols.auth import Guard
from ferryman.protocols.request_id import REQUEST_ID
from ferryman.protocols.route_permissions import GRPC_METHODS
from ferryman.protocols.v2_grpc_codec import decode_infer_request, encode_infer_response
from ferryman.protocols.v2_grpc_errors import grpc_status, trailers_for
from ferryman.protocols.v2_grpc_messages import SERVICE, V2Messages, v2_messages
from ferryman.protocols.v2_infer import request_deadline
from ferryman.serving.handler import InferenceHandler
from ferryman.serving.manager import ModelManager
from ferryman.serving.router import resolve_version
from ferryman.tensors import InferenceRequest

__all__ = ["V2GrpcService"]

logger = logging.getLogger(__name__)

_Rpc = Callable[[Any, Any], Awaitable[Any]]
_SERVED_VERSION = "x-ferryman-served-version"


@lru_cache(maxsize=256)
def _subject(pem: bytes) -> str:
    """A client certificate's subject (RFC 4514), as the HTTP side reads it."""
    from cryptography import x509  # only mTLS calls read certificates

    return x509.load_pem_x509_certificate(pem).subject.rfc4514_string()


def _client(peer: str) -> tuple[str, int] | None:
    """``ipv4:1.2.3.4:5`` / ``ipv6:[::1]:5`` → (address, port); None for other transports."""
    kind, _, rest = peer.partition(":")
    if kind not in ("ipv4", "ipv6"):
        return None
    host, _, port = rest.rpartition(":")
    return host.strip("[]"), int(port) if port.isdigit() else 0


def call_scope(method: str, context: Any) -> dict[str, Any]:
    """What the guard reads from an HTTP request, built from an RPC: metadata, peer, client certificate."""
    headers = [
        (key.encode("latin-1"), value if isinstance(value, bytes) else value.encode("latin-1"))
        for key, value in context.invocation_metadata() or ()
    ]
    scope: dict[str, Any] = {
        "type": "grpc",
        "method": "GRPC",
        "path": f"/{SERVICE}/{method}",
        "headers": headers,
        "client": _client(context.peer() or ""),
    }
    certificates = (context.auth_context() or {}).get("x509_pem_cert")
    if certificates:
        scope["extensions"] = {"tls": {"client_cert_name": _subject(certificates[0])}}
    return scope


class V2GrpcService:
    """The V2 gRPC service bound to one handler, manager and guard."""

    def __init__(
        self,
        handler: InferenceHandler,
        manager: ModelManager,
        guard: Guard | None,
        ready: Callable[[], bool],
        *,
        max_tensor_elements: int,
    ) -> None:
        self._handler = handler
        self._manager = manager
        self._guard = guard
        self._ready = ready
        self._max_elements = max_tensor_elements
        self._messages: V2Messages = v2_messages()
        self._outcomes = handler.protocol_outcomes("v2_grpc")  # ferryman_protocol_requests_total
        self._id_prefix = f"g{os.urandom(4).hex()}"
        self._ids = itertools.count(1)

    def rpc_handler(self) -> Any:
        """The ``grpc.GenericRpcHandler`` serving every method of the service."""
        m = self._messages
        methods: dict[str, tuple[_Rpc, Any, Any]] = {
            "ServerLive": (self._server_live, m.ServerLiveRequest, m.ServerLiveResponse),
            "ServerReady": (self._server_ready, m.ServerReadyRequest, m.ServerReadyResponse),
            "ModelReady": (self._model_ready, m.ModelReadyRequest, m.ModelReadyResponse),
            "ServerMetadata": (self._server_metadata, m.ServerMetadataRequest, m.ServerMetadataResponse),
            "ModelMetadata": (self._model_metadata, m.ModelMetadataRequest, m.ModelMetadataResponse),
            "ModelInfer": (self._model_infer, m.ModelInferRequest, m.ModelInferResponse),
        }
        handlers = {
            name: grpc.unary_unary_rpc_method_handler(
                self._guarded(name, rpc),
                request_deserializer=request.FromString,
                response_serializer=response.SerializeToString,
            )
            for name, (rpc, request, response) in methods.items()
        }
        return grpc.method_handlers_generic_handler(SERVICE, handlers)

    def _guarded(self, method: str, rpc: _Rpc) -> _Rpc:
        """``rpc`` behind the guard, with a request id and every error mapped to its status code."""
        rule = GRPC_METHODS[method]
        outcomes = self._outcomes if method == "ModelInfer" else None

        async def call(request: Any, context: Any) -> Any:
            request_id = self._request_id(context)
            REQUEST_ID.set(request_id)
            trailers: tuple[tuple[str, str], ...] = (("x-request-id", request_id),)
            try:
                if rule.permission is not None and self._guard is not None and not self._guard.open:
                    scope = call_scope(method, context)
                    model = (request.model_name if method == "ModelInfer" else request.name) if rule.model else None
                    if method == "ModelInfer":
                        await self._guard.admit_inference(scope, model or "")
                    else:
                        await self._guard.admit(scope, rule.permission, model or None)
                answer = await rpc(request, context)
            except FerrymanError as exc:
                if exc.status >= 500:
                    logger.warning("%s: %s", type(exc).__name__, exc.message)
                if outcomes is not None:
                    outcomes[outcome_of(exc)] += 1
                code, message, trailers = grpc_status(exc), exc.message, trailers + trailers_for(exc)
            except Exception as exc:
                logger.exception("unhandled error in %s", method)
                if outcomes is not None:
                    outcomes["failed"] += 1
                code, message = grpc.StatusCode.INTERNAL, f"internal error: {type(exc).__name__}"
            else:
                if outcomes is not None:
                    outcomes["ok"] += 1
                served = answer.model_version if method == "ModelInfer" else ""
                context.set_trailing_metadata(trailers + (((_SERVED_VERSION, served),) if served else ()))
                return answer
            await context.abort(code, message, trailers)  # raises: the RPC ends with this status

        return call

    def _request_id(self, context: Any) -> str:
        for key, value in context.invocation_metadata() or ():
            # Only echo ids that are short and printable (as on HTTP), so a caller cannot inject into logs.
            if key == "x-request-id" and isinstance(value, str) and 0 < len(value) <= 128 and value.isprintable():
                return value
        return f"{self._id_prefix}{next(self._ids):x}"

    # -- the RPCs ----------------------------------------------------------------------------------

    async def _server_live(self, _request: Any, _context: Any) -> Any:
        return self._messages.ServerLiveResponse(live=True)

    async def _server_ready(self, _request: Any, _context: Any) -> Any:
        return self._messages.ServerReadyResponse(ready=self._ready())

    async def _server_metadata(self, _request: Any, _context: Any) -> Any:
        return self._messages.ServerMetadataResponse(name="ferryman", version=__version__, extensions=[])

    async def _model_ready(self, request: Any, _context: Any) -> Any:
        model = await self._handler.model(_required(request.name, "name"))
        number = resolve_version(model, request.version, None) if request.version else None
        return self._messages.ModelReadyResponse(ready=self._manager.model_ready(request.name, number))

    async def _model_metadata(self, request: Any, _context: Any) -> Any:
        name = _required(request.name, "name")
        model = await self._handler.model(name)
        loaded, signature = await self._handler.signature(name, request.version or None)
        tensor = self._messages.ModelMetadataResponse.TensorMetadata
        return self._messages.ModelMetadataResponse(
            name=name,
            versions=[str(v) for v in sorted(model.versions)],
            platform=model.versions[loaded.version].framework or "",
            inputs=[tensor(name=s.name, datatype=s.datatype, shape=s.shape) for s in signature.inputs],
            outputs=[tensor(name=s.name, datatype=s.datatype, shape=s.shape) for s in signature.outputs],
        )

    async def _model_infer(self, request: Any, context: Any) -> Any:
        try:
            await self._handler.model(_required(request.model_name, "model_name"))  # 404 before decoding
            inference = decode_infer_request(request, max_elements=self._max_elements)
            inference.deadline = _deadline(context, inference)
        except FerrymanError as exc:
            self._handler.record_unrouted(exc)
            raise
        inference.request_id = REQUEST_ID.get()
        inference.headers = [
            (key.encode("latin-1"), value.encode("latin-1"))
            for key, value in context.invocation_metadata() or ()
            if isinstance(value, str)
        ]
        response = await self._handler.infer(inference)
        return encode_infer_response(response, self._messages, raw=bool(request.raw_input_contents))


def _required(value: str, field: str) -> str:
    if not value:
        raise InvalidInput(f"{field}: required")
    return value


def _deadline(context: Any, inference: InferenceRequest) -> float | None:
    """The earliest of the RPC's deadline, ``x-ferryman-timeout-ms`` metadata and the V2 ``timeout`` parameter."""
    header = next((v for k, v in context.invocation_metadata() or () if k == "x-ferryman-timeout-ms"), None)
    candidates = [request_deadline(header, inference.parameters)]
    remaining = context.time_remaining()
    if remaining is not None:
        candidates.append(time.monotonic() + max(0.0, float(remaining)))
    deadlines = [d for d in candidates if d is not None]
    return min(deadlines) if deadlines else None
