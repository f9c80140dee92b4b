"""Running the server: register artifacts given on the command line, then serve with uvicorn."""

from __future__ import annotations

import gc
import logging
import math
import multiprocessing
import os
import re
import signal
import socket
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import uvicorn

from ferryman.app import Components, build_components, create_app
from ferryman.config import Settings
from ferryman.logs import configure_logging
from ferryman.protocols.v2_grpc_endpoint import grpc_settings
from ferryman.registry.intake import IntakeRequest
from ferryman.security.audit import AuditEntry
from ferryman.security.exposure import check_exposure
from ferryman.security.tls import uvicorn_tls_options
from ferryman.serving.drain import DrainingServer, DrainState

__all__ = ["register_artifacts", "serve"]

logger = logging.getLogger(__name__)


def _name_for(path: Path) -> str:
    """A model name from a file or folder name: ``churn-model.onnx`` → ``churn-model``."""
    stem = path.name if path.is_dir() else path.stem
    name = re.sub(r"[^A-Za-z0-9._-]+", "-", stem).strip("-._")
    return name or "model"


def register_artifacts(components: Components, artifacts: Sequence[Path]) -> list[str]:
    """Register each artifact as a version of a model named after it (reusing identical bytes)."""
    names: list[str] = []
    for path in artifacts:
        if not path.exists():
            raise FileNotFoundError(f"{path} does not exist")
        name = _name_for(path)
        staged = components.artifacts.stage_path(path)
        record, created = components.intake.register(staged, IntakeRequest(name=name))
        if created:
            target = f"models/{name}/versions/{record.version}"
            details = {"source": "command line", "file": path.name}
            components.registry.append_audit(AuditEntry("local", "version.push", target, "success", "", details))
        logger.info("%s %s:%d from %s", "registered" if created else "already registered", name, record.version, path)
        names.append(name)
    return names


def serve(settings: Settings, artifacts: Sequence[Path] = ()) -> None:
    """Build the server, register ``artifacts`` on the fly, and serve until interrupted.

    With ``settings.workers > 1`` the parent only prepares the registry, then supervises that many
    worker processes, each a complete server with its own models, all listening on the same port
    through ``SO_REUSEPORT`` (the kernel spreads connections across them).
    """
    configure_logging(settings.log_level)
    settings = grpc_settings(settings)  # gRPC off, with a warning, when its extra is missing and not asked for
    components = build_components(settings)
    check_exposure(settings, components.registry)  # refuses an unauthenticated non-loopback server
    uvicorn_tls_options(settings)  # unreadable TLS files fail here, once, not in every worker
    _audit_start(components)
    register_artifacts(components, artifacts)
    if settings.workers == 1:
        _run_uvicorn(create_app(components), settings, sockets=None, drain=components.drain)
        return
    components.inference_pool.shutdown()
    components.io_pool.shutdown()
    _supervise(settings)


def _audit_start(components: Components) -> None:
    settings = components.settings
    details = {
        "workers": settings.workers,
        "tls": settings.tls_cert is not None,
        "mtls": settings.tls_client_ca is not None,
        "oidc_issuer": settings.oidc_issuer,
        "insecure": settings.insecure,
        "metrics_auth": settings.metrics_auth,
        "rate_limit_per_s": settings.rate_limit_per_s,
    }
    target = f"{settings.host}:{settings.port}"
    components.registry.append_audit(AuditEntry("local", "server.start", target, "success", "", details))


def _run_uvicorn(app: Any, settings: Settings, sockets: list[socket.socket] | None, drain: DrainState) -> None:
    # Everything allocated so far (imports, the registry, loaded frameworks) lives as long as the
    # process: move it out of the collector's sight, so collections during serving (and the full
    # collection after an unload) walk only what serving allocates.
    gc.freeze()
    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        loop="uvloop" if sys.platform != "win32" else "asyncio",
        **uvicorn_tls_options(settings),  # http protocol, and the SSL context when TLS is on
        access_log=False,
        log_config=None,
        # No X-Forwarded-* rewriting: it costs a middleware hop per request and we trust no proxy yet.
        proxy_headers=False,
        timeout_graceful_shutdown=math.ceil(settings.drain_timeout_seconds),
    )
    DrainingServer(config, drain, settings.drain_timeout_seconds).run(sockets=sockets)
    if drain.cut:
        # A cut request's prediction may still block an inference thread, which the interpreter
        # would join at exit: the drain timeout is the promise, so leave without waiting for it.
        logger.warning("exiting after the drain timeout with %d request(s) cut", drain.cut)
        logging.shutdown()
        os._exit(0)


def _reuse_port_socket(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((host, port))
    return sock


def _worker_main(settings_json: str, index: int) -> None:
    """Entry point of one worker process (spawned: a fresh interpreter, no state shared by fork)."""
    settings = Settings.model_validate_json(settings_json)
    configure_logging(settings.log_level)
    sock = _reuse_port_socket(settings.host, settings.port)
    sock.listen(2048)
    logger.info("worker %d listening on %s:%d", index, settings.host, settings.port)
    components = build_components(settings, sweep_staging=False)
    _run_uvicorn(create_app(components), settings, sockets=[sock], drain=components.drain)


def _supervise(settings: Settings) -> None:
    # Reserve the port (and resolve port 0) with an SO_REUSEPORT socket that never listens.
    reserved = _reuse_port_socket(settings.host, settings.port)
    settings = settings.model_copy(update={"port": reserved.getsockname()[1]})
    # Likewise the gRPC port, which every worker binds with grpc.so_reuseport (protocols/v2_grpc_endpoint.py).
    reserved_grpc = _reuse_port_socket(settings.host, settings.grpc_port) if settings.grpc_port >= 0 else None
    if reserved_grpc is not None:
        settings = settings.model_copy(update={"grpc_port": reserved_grpc.getsockname()[1]})
    context = multiprocessing.get_context("spawn")
    payload = settings.model_dump_json()
    workers = [
        context.Process(target=_worker_main, args=(payload, i), name=f"ferryman-worker-{i}")
        for i in range(settings.workers)
    ]
    for worker in workers:
        worker.start()
    logger.info("started %d workers on %s:%d", len(workers), settings.host, settings.port)
    stopping = False

    def stop(signum: int, _frame: object) -> None:
        nonlocal stopping
        stopping = True
        for worker in workers:
            if worker.is_alive() and worker.pid is not None:
                os.kill(worker.pid, signal.SIGTERM)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    try:
        while not stopping:
            for index, worker in enumerate(workers):
                worker.join(timeout=0.5 / len(workers))
                if not stopping and not worker.is_alive():
                    logger.error("worker %d exited with %s; starting a new one", index, worker.exitcode)
                    workers[index] = context.Process(target=_worker_main, args=(payload, index), name=worker.name)
                    workers[index].start()
        for worker in workers:
            worker.join(timeout=settings.drain_timeout_seconds + 10)  # each drains, then exits 0
            if worker.is_alive():
                worker.kill()
    finally:
        reserved.close()
        if reserved_grpc is not None:
            reserved_grpc.close()
