"""Open Inference Protocol (V2) over REST: decode → InferenceHandler → encode. No logic lives here.

These are plain Starlette routes (no pydantic, no dependency injection) because they are the
hot path; their OpenAPI description is added by hand in ``protocols/openapi.py``.
"""

from __future__ import annotations

import time
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from ferryman import __version__
from ferryman.errors import InvalidInput, NotReady, PayloadTooLarge
from ferryman.protocols.v2_codec import decode_raw_binary_request, decode_request, encode_response
from ferryman.serving.handler import InferenceHandler
from ferryman.serving.manager import ModelManager
from ferryman.serving.router import resolve_version
from ferryman.tensors import InferenceRequest

__all__ = ["V2Routes", "read_body"]

_JSON = "application/json"
_EXTENSIONS = ["binary_tensor_data"]


def _json(document: Any, status: int = 200) -> Response:
    return Response(orjson.dumps(document), status_code=status, media_type=_JSON)


async def read_body(request: Request, limit: int) -> bytes:
    """Read the whole body, refusing (413) anything over ``limit`` bytes before buffering it."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise PayloadTooLarge(f"request body of {declared} bytes exceeds the limit of {limit} bytes")
    if declared is not None:
        return await request.body()
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise PayloadTooLarge(f"request body exceeds the limit of {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def _deadline(header: str | None, parameters: dict[str, Any] | None) -> float | None:
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


class V2Routes:
    """The V2 REST endpoints, bound to one handler and manager."""

    def __init__(self, handler: InferenceHandler, manager: ModelManager, max_request_bytes: int) -> None:
        self._handler = handler
        self._manager = manager
        self._limit = max_request_bytes
        self.ready = False

    def routes(self) -> list[Route]:
        """Starlette routes for every V2 endpoint."""
        return [
            Route("/v2/health/live", self.live, methods=["GET"]),
            Route("/v2/health/ready", self.server_ready, methods=["GET"]),
            Route("/v2", self.server_metadata, methods=["GET"]),
            Route("/v2/models/{model}", self.model_metadata, methods=["GET"]),
            Route("/v2/models/{model}/versions/{version}", self.model_metadata, methods=["GET"]),
            Route("/v2/models/{model}/ready", self.model_ready, methods=["GET"]),
            Route("/v2/models/{model}/versions/{version}/ready", self.model_ready, methods=["GET"]),
            Route("/v2/models/{model}/infer", self.infer, methods=["POST"]),
            Route("/v2/models/{model}/versions/{version}/infer", self.infer, methods=["POST"]),
        ]

    async def live(self, _: Request) -> Response:
        """Liveness: the process answers."""
        return _json({"live": True})

    async def server_ready(self, _: Request) -> Response:
        """Readiness: the startup load of every model's default version has finished."""
        if not self.ready:
            raise NotReady("server is still loading models")
        return _json({"ready": True})

    async def server_metadata(self, _: Request) -> Response:
        """Server name, version and protocol extensions."""
        return _json({"name": "ferryman", "version": __version__, "extensions": _EXTENSIONS})

    async def model_metadata(self, request: Request) -> Response:
        """A model version's inputs and outputs."""
        name = request.path_params["model"]
        version = request.path_params.get("version")
        model = self._manager.model(name)
        loaded, signature = await self._handler.signature(name, version)
        entry = model.versions[loaded.version]
        return _json(
            {
                "name": name,
                "versions": [str(v) for v in sorted(model.versions)],
                "platform": entry.framework or "",
                "inputs": [spec.to_dict() for spec in signature.inputs],
                "outputs": [spec.to_dict() for spec in signature.outputs],
            }
        )

    async def model_ready(self, request: Request) -> Response:
        """200 when the version (or the model's default) is loaded, else 503."""
        name = request.path_params["model"]
        version = request.path_params.get("version")
        model = self._manager.model(name)
        number = None
        if version is not None:
            number = resolve_version(model, version, None)
        if not self._manager.model_ready(name, number):
            raise NotReady(f"model '{name}'{f' version {number}' if number else ''} is not loaded")
        return _json({"name": name, "ready": True})

    async def infer(self, request: Request) -> Response:
        """Decode a V2 request (JSON or binary extension), run it, encode the answer."""
        name = request.path_params["model"]
        version = request.path_params.get("version")
        self._manager.model(name)  # an unknown model is a 404 whatever the body says
        body = await read_body(request, self._limit)
        header = request.headers.get("inference-header-content-length")
        inference: InferenceRequest
        if header is None:
            inference = decode_request(body, None, name, version)
        else:
            if not header.isdigit():
                raise InvalidInput(f"Inference-Header-Content-Length must be a non-negative integer, got {header!r}")
            length = int(header)
            if length == 0:
                _, signature = await self._handler.signature(name, version)
                if len(signature.inputs) != 1:
                    raise InvalidInput(
                        f"a raw binary request (Inference-Header-Content-Length: 0) needs a model with "
                        f"exactly one input; model '{name}' has {len(signature.inputs)}"
                    )
                inference = decode_raw_binary_request(body, signature.inputs[0], name, version)
            else:
                inference = decode_request(body, length, name, version)
        inference.deadline = _deadline(request.headers.get("x-ferryman-timeout-ms"), inference.parameters)
        response = await self._handler.infer(inference)
        payload, header_length = encode_response(response, inference.binary_outputs, inference.all_outputs_binary)
        if header_length is None:
            return Response(payload, media_type=_JSON)
        return Response(
            payload,
            media_type="application/octet-stream",
            headers={"inference-header-content-length": str(header_length)},
        )
