"""Management API for experiments: feedback on predictions, and the experiment report.

``POST /api/v1/models/{m}/feedback`` stores rewards and labels. Each item names a request id;
when this process served that request recently, the item is completed with the version that
served it and what it predicted (so accuracy and label-driven bandit rewards can be computed).
Feedback for a request id the server does not know is still stored (a client may name the
``version`` itself) and counted as ``unmatched`` in the answer, never an error for the others.

``GET /api/v1/models/{m}/experiment`` compares the versions in the model's current traffic
policy or rollout side by side (``serving/experiment_report.py``).
"""

from __future__ import annotations

import asyncio
from concurrent.futures import Executor
from typing import Any

from fastapi import APIRouter, Query, Request
from starlette.responses import Response

from ferryman.errors import InvalidInput
from ferryman.protocols.management_releases import NAME, json_response, read_object, refuse_unknown
from ferryman.registry.service import RegistryService
from ferryman.serving.experiment_report import ExperimentReporter
from ferryman.serving.experiments import ExperimentRecorder

__all__ = ["ExperimentApi"]

_MAX_FEEDBACK_BODY = 16 << 20


class ExperimentApi:
    """Routes for feedback and experiment reports."""

    def __init__(
        self,
        registry: RegistryService,
        recorder: ExperimentRecorder,
        reporter: ExperimentReporter,
        executor: Executor,
    ) -> None:
        self._registry = registry
        self._recorder = recorder
        self._reporter = reporter
        self._executor = executor

    def complete(self, name: str, items: list[Any]) -> int:
        """Fill in ``version`` and ``prediction`` from the ledger; returns how many items stayed unmatched."""
        unmatched = 0
        for item in items:
            if not isinstance(item, dict) or not isinstance(item.get("request_id"), str):
                continue  # the registry names the malformed field
            served = self._recorder.lookup(item["request_id"])
            if served is not None and served.model == name:
                item.setdefault("version", served.version)
                if served.prediction is not None:
                    item.setdefault("prediction", served.prediction)
            elif item.get("version") is None:
                unmatched += 1
        return unmatched

    def router(self) -> APIRouter:
        """The routes, relative to ``/api/v1``."""
        api = APIRouter(tags=["experiments"])

        @api.post(
            "/models/{name}/feedback",
            status_code=202,
            summary="Record rewards or labels for earlier predictions",
            openapi_extra={
                "requestBody": {
                    "required": True,
                    "content": {
                        "application/json": {
                            "schema": {
                                "type": "object",
                                "example": {"request_id": "1f2e3d4c1", "label": 1},
                                "description": '{"request_id", "reward"|"label", "version"?} or {"items": [...]}',
                            }
                        }
                    },
                }
            },
        )
        async def feedback(request: Request, name: str = NAME) -> Response:
            body = await read_object(request, limit=_MAX_FEEDBACK_BODY)
            if "items" in body:
                refuse_unknown(body, ("items",))
                items = body["items"]
                field: str | None = "items"
            else:
                items, field = [body], None
            unmatched = self.complete(name, items) if isinstance(items, list) else 0
            loop = asyncio.get_running_loop()
            count = await loop.run_in_executor(
                self._executor, lambda: self._registry.record_feedback(name, items, field=field)
            )
            return json_response(
                {"model": name, "count": count, "matched": count - unmatched, "unmatched": unmatched}, 202
            )

        @api.get("/models/{name}/experiment", summary="Compare the versions of the current policy side by side")
        async def experiment(
            name: str = NAME,
            confidence: float = Query(0.95, description="Confidence level of the comparisons"),
            baseline: int | None = Query(None, description="Version to compare the others with"),
        ) -> Response:
            if not 0.5 <= confidence < 1:
                raise InvalidInput(f"confidence must be at least 0.5 and below 1, got {confidence}")
            return json_response(await self._reporter.report(name, confidence, baseline))

        return api
