"""The gRPC listener of one server process, started and stopped by the app's lifespan.

It binds ``host:grpc_port`` (``-1`` = no gRPC, ``0`` = a free port, logged) with the HTTP side's
TLS material: ``tls_cert``/``tls_key`` make it TLS-only (gRPC's TLS stack negotiates TLS 1.2 or 1.3
and nothing older), and ``tls_client_ca`` makes every connection present a certificate that chains
to it. With several worker processes each binds the same port with ``SO_REUSEPORT``; a single
process binds exclusively, so a port already taken is an error instead of shared traffic.

``grpcio`` is the optional ``grpc`` extra: without it ``ferryman serve`` serves REST only and says so
(:func:`grpc_settings`), unless ``grpc_port`` was set explicitly, which is then an error naming the extra.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from ferryman.config import Settings
from ferryman.errors import InvalidInput, RuntimeUnavailable
from ferryman.protocols.auth import Guard
from ferryman.serving.handler import InferenceHandler
from ferryman.serving.manager import ModelManager

__all__ = ["GrpcEndpoint", "grpc_settings"]

logger = logging.getLogger(__name__)

_GRACE_S = 5.0
_MISSING = "gRPC needs the 'grpc' extra: pip install 'ferryman[grpc]'"


def grpc_settings(settings: Settings) -> Settings:
    """``settings``, with gRPC off (and a warning) when the extra is missing and ``grpc_port`` was not set.

    Called once before worker processes are started, so each of them sees the same decision.
    """
    if settings.grpc_port < 0:
        return settings
    try:
        import grpc  # noqa: F401
        import grpc_tools  # noqa: F401
    except ImportError:
        if "grpc_port" in settings.model_fields_set:
            raise RuntimeUnavailable(f"grpc_port: {_MISSING}") from None
        logger.warning("serving REST only: %s (or set grpc_port to -1 to silence this)", _MISSING)
        return settings.model_copy(update={"grpc_port": -1})
    return settings


class GrpcEndpoint:
    """Serves the V2 gRPC service for one process; ``port`` is the bound port once started."""

    def __init__(
        self,
        settings: Settings,
        handler: InferenceHandler,
        manager: ModelManager,
        guard: Guard | None,
        ready: Callable[[], bool],
    ) -> None:
        self._settings = settings
        self._handler = handler
        self._manager = manager
        self._guard = guard
        self._ready = ready
        self._server: Any = None
        self.port: int | None = None

    @property
    def enabled(self) -> bool:
        """Whether the settings ask for gRPC at all (``grpc_port`` is not -1)."""
        return self._settings.grpc_port >= 0

    async def start(self) -> None:
        """Bind and start serving (nothing when gRPC is off or, unasked for, not installed)."""
        settings = self._settings
        if not self.enabled:
            return
        try:
            import grpc

            from ferryman.protocols.v2_grpc import V2GrpcService
        except ImportError:
            raise RuntimeUnavailable(f"grpc_port: {_MISSING}") from None
        service = V2GrpcService(
            self._handler, self._manager, self._guard, self._ready, max_tensor_elements=settings.max_tensor_elements
        )
        options = [
            ("grpc.so_reuseport", 1 if settings.workers > 1 else 0),
            ("grpc.max_receive_message_length", settings.max_request_bytes),
            ("grpc.max_send_message_length", -1),
        ]
        server = grpc.aio.server(options=options)
        server.add_generic_rpc_handlers((service.rpc_handler(),))
        host = f"[{settings.host}]" if ":" in settings.host and not settings.host.startswith("[") else settings.host
        address = f"{host}:{settings.grpc_port}"
        try:
            credentials = _server_credentials(settings)
            if credentials is None:
                port = server.add_insecure_port(address)
            else:
                port = server.add_secure_port(address, credentials)
        except RuntimeError as exc:
            raise InvalidInput(f"grpc_port: cannot listen on {address}: {exc}") from None
        await server.start()
        self._server, self.port = server, port
        security = "" if settings.tls_cert is None else " (mTLS)" if settings.tls_client_ca is not None else " (TLS)"
        logger.info("gRPC (V2) listening on %s:%d%s", host, port, security)

    async def stop(self) -> None:
        """Stop accepting calls and let running ones finish (a few seconds at most)."""
        if self._server is not None:
            await self._server.stop(_GRACE_S)
            self._server = None


def _server_credentials(settings: Settings) -> Any:
    """``grpc.ssl_server_credentials`` from the HTTP side's TLS settings, or None without TLS."""
    if settings.tls_cert is None or settings.tls_key is None:
        return None
    import grpc

    try:
        chain = settings.tls_cert.read_bytes()
        key = settings.tls_key.read_bytes()
        ca = settings.tls_client_ca.read_bytes() if settings.tls_client_ca is not None else None
    except OSError as exc:
        raise InvalidInput(f"TLS files: {exc}") from None
    return grpc.ssl_server_credentials([(key, chain)], root_certificates=ca, require_client_auth=ca is not None)
