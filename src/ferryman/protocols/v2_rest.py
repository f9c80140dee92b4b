"""Open Inference Protocol (V2) over REST: health, server and model metadata, readiness.

Plain Starlette routes (no pydantic, no dependency injection); their OpenAPI description is added
by hand in ``protocols/openapi.py``. The inference endpoint itself is ``protocols/v2_infer.py``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from ferryman import __version__
from ferryman.errors import NotReady
from ferryman.serving.drain import DrainState
from ferryman.serving.handler import InferenceHandler
from ferryman.serving.manager import ModelManager
from ferryman.serving.router import resolve_version

__all__ = ["V2Routes"]

_JSON = "application/json"
_EXTENSIONS = ["binary_tensor_data"]


def _json(document: Any, status: int = 200) -> Response:
    return Response(orjson.dumps(document), status_code=status, media_type=_JSON)


class V2Routes:
    """The V2 REST endpoints, bound to one handler and manager."""

    def __init__(
        self,
        handler: InferenceHandler,
        manager: ModelManager,
        max_request_bytes: int,
        drain: DrainState | None = None,
    ) -> None:
        self._handler = handler
        self._manager = manager
        self._limit = max_request_bytes
        self._drain = drain or DrainState()
        self.ready = False
        #: False while the registry database cannot be reached (set by the composition root).
        self.registry_reachable: Callable[[], bool] = lambda: True

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
        ]

    async def live(self, _: Request) -> Response:
        """Liveness: the process answers."""
        return _json({"live": True})

    async def server_ready(self, _: Request) -> Response:
        """Readiness: the startup load (and warm-up) of every model's default version has finished, no SIGTERM yet."""
        if self._drain.draining:
            raise NotReady("server is shutting down: draining in-flight requests")
        if not self.ready:
            raise NotReady("server is still loading models")
        # Without its database a replica still serves what it has loaded; only with nothing
        # loaded is it of no use to the load balancer.
        if not self.registry_reachable() and not self._manager.loaded_versions():
            raise NotReady("the registry database is unreachable and no model is loaded: nothing to serve")
        return _json({"ready": True})

    async def server_metadata(self, _: Request) -> Response:
        """Server name, version and protocol extensions."""
        return _json({"name": "ferryman", "version": __version__, "extensions": _EXTENSIONS})

    async def model_metadata(self, request: Request) -> Response:
        """A model version's inputs and outputs."""
        name = request.path_params["model"]
        version = request.path_params.get("version")
        model = await self._handler.model(name)
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
        model = await self._handler.model(name)
        number = None
        if version is not None:
            number = resolve_version(model, version, None)
        if not self._manager.model_ready(name, number):
            raise NotReady(f"model '{name}'{f' version {number}' if number else ''} is not loaded")
        return _json({"name": name, "ready": True})
