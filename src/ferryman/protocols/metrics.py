"""``GET /metrics``: Prometheus text format, or OpenMetrics when the scraper asks for it."""

from __future__ import annotations

from prometheus_client import CollectorRegistry
from prometheus_client.exposition import choose_encoder
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

__all__ = ["metrics_route"]


def metrics_route(registry: CollectorRegistry) -> Route:
    """The scrape endpoint over ``registry``."""

    async def metrics(request: Request) -> Response:
        encoder, content_type = choose_encoder(request.headers.get("accept", ""))
        return Response(encoder(registry), media_type=content_type)

    return Route("/metrics", metrics, methods=["GET"])
