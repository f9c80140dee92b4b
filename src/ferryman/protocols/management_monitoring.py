"""Management API for monitoring: a version's drift report, with its data-quality counts.

``GET /api/v1/models/{m}/versions/{v}/drift`` answers the report of ``monitoring/drift.py`` over
the version's current window, computed on request (after the monitoring queue is drained, so it
covers every request answered before it was asked), plus ``status`` and ``note``: ``monitoring``;
``learning`` (no sample was pushed: the profile is being learned from traffic); ``no traffic``;
``no profile`` (learning failed); ``disabled`` (``monitoring_enabled`` is off). Whatever the
status, the document has the same keys, with the verdict ``not enough data`` when nothing was tested.
"""

from __future__ import annotations

import asyncio
from concurrent.futures import Executor
from typing import Any

from fastapi import APIRouter
from fastapi import Path as PathParam
from starlette.responses import Response

from ferryman.errors import NotFound
from ferryman.monitoring.version_monitor import MonitorSettings, empty_report
from ferryman.protocols.management_releases import NAME, json_response
from ferryman.serving.manager import ModelManager
from ferryman.serving.monitoring_tap import MonitoringTap

__all__ = ["MonitoringApi"]

VERSION = PathParam(ge=1, description="Version number")


class MonitoringApi:
    """Routes for drift and data-quality reports (no prefix; ManagementApi mounts them under /api/v1)."""

    def __init__(self, tap: MonitoringTap, manager: ModelManager, executor: Executor) -> None:
        self._tap = tap
        self._manager = manager
        self._executor = executor

    async def drift(self, name: str, version: int) -> dict[str, Any]:
        """The drift document of one version; NotFound for an unknown model or version."""
        model = self._manager.model(name)
        if version not in model.versions:
            raise NotFound(f"model '{name}' has no version {version}")
        pipeline = self._tap.pipeline
        if pipeline is None:
            return {
                "model": name,
                "version": version,
                "status": "disabled",
                "note": "monitoring is off on this server (monitoring_enabled: false)",
                **empty_report(MonitorSettings(), None, None),
                "profile": {"source": None, "rows": None},
                "sample_rate": None,
                "dropped": 0,
            }
        document = await asyncio.get_running_loop().run_in_executor(self._executor, pipeline.report, name, version)
        document["sample_rate"] = self._tap.sample_rate
        document["dropped"] = pipeline.dropped
        return document

    def router(self) -> APIRouter:
        """The routes, relative to ``/api/v1``."""
        api = APIRouter(tags=["monitoring"])

        @api.get(
            "/models/{name}/versions/{version}/drift",
            summary="Drift of a version's inputs and predictions against its reference profile, with data quality",
        )
        async def drift(name: str = NAME, version: int = VERSION) -> Response:
            return json_response(await self.drift(name, version))

        return api
