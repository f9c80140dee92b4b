"""Where the request path meets monitoring: sampled copies of answered requests, never in their way.

The handler calls :meth:`MonitoringTap.offer` once an answer is built. Per version the tap keeps
two countdowns drawn from a geometric distribution — one for drift and data quality
(``monitoring_sample_rate``), one for the version's payload log (its ``payload_log.sample_rate``)
— so an unsampled request costs a dict lookup and two decrements, and a sampled one an append
to a bounded queue (``monitoring/pipeline.py``, ``monitoring/payload_log.py``). A countdown
rather than ``random() < rate`` per request: one random draw per *sampled* request, and the same
unbiased Bernoulli sampling (gaps between sampled requests are geometric either way).

The drift countdown also keeps each version's monitoring within a budget
(``monitoring_max_samples_per_second``): at each sampled request the tap estimates the version's
request rate from the gaps it drew (a gap is exactly the requests that went by), and when that
rate times ``monitoring_sample_rate`` exceeds the budget it samples at budget / rate instead. So a
quiet version is watched request by request, a busy one at a fixed cost whatever its traffic, and
the estimate costs a clock read per *sampled* request, nothing per unsampled one.

Requests refused by validation are counted as ``rejected`` under the field the error names.
Answers from a fallback are not the model's own and are skipped.
"""

from __future__ import annotations

import itertools
import logging
import math
import random
import re
import time
from collections.abc import Callable, Iterator, Mapping
from typing import Any

from prometheus_client.core import GaugeMetricFamily, Metric

from ferryman.config import Settings
from ferryman.errors import FerrymanError
from ferryman.monitoring.drift_metrics import monitoring_families
from ferryman.monitoring.payload_config import PayloadLogConfig, parse_payload_log
from ferryman.monitoring.payload_log import PayloadLogger, PayloadRecord
from ferryman.monitoring.pipeline import MonitoringPipeline, ProfileRepository
from ferryman.monitoring.version_monitor import MonitorSettings
from ferryman.serving.fallback import FALLBACK_PARAMETER
from ferryman.serving.manager import ModelManager
from ferryman.tensors import InferenceRequest, InferenceResponse

__all__ = ["MonitoringTap", "build_monitoring_tap", "rejected_field"]

logger = logging.getLogger(__name__)

#: The field named by validation's messages: "unknown input 'x'", "missing input 'x'", "input 'x': ...".
_FIELD = re.compile(r"(?:unknown |missing )?input '([^']{1,200})'")


def rejected_field(message: str) -> str | None:
    """The input a validation error names, if it names one."""
    match = _FIELD.match(message)
    return match.group(1) if match is not None else None


def build_monitoring_tap(settings: Settings, profiles: ProfileRepository, manager: ModelManager) -> MonitoringTap:
    """The tap, its monitoring pipeline (unless ``monitoring_enabled`` is off) and the payload logger."""
    pipeline = None
    if settings.monitoring_enabled:
        pipeline = MonitoringPipeline(
            profiles,
            MonitorSettings(
                window_rows=settings.monitoring_window_rows,
                min_rows=settings.monitoring_min_rows,
                significance=settings.monitoring_significance,
                profile_rows=settings.monitoring_profile_rows,
            ),
            queue_records=settings.monitoring_queue_records,
            report_seconds=settings.monitoring_report_seconds,
        )
    payloads = PayloadLogger(settings.home / "payloads", queue_records=settings.payload_queue_records)

    def runtime_config(model: str, version: int) -> Mapping[str, Any]:
        return manager.model(model).versions[version].runtime_config

    return MonitoringTap(
        pipeline,
        payloads,
        runtime_config,
        settings.monitoring_sample_rate,
        max_samples_per_second=settings.monitoring_max_samples_per_second,
    )


class _Route:
    """What the tap knows about one version: its payload-log config, both countdowns, its request rate."""

    __slots__ = (
        "drift_countdown",
        "drift_gap",
        "payload",
        "payload_countdown",
        "rate",
        "window_requests",
        "window_start",
    )

    def __init__(
        self, payload: PayloadLogConfig | None, drift_countdown: int, payload_countdown: int, now: float
    ) -> None:
        self.payload = payload
        self.drift_countdown = drift_countdown
        self.drift_gap = drift_countdown
        self.payload_countdown = payload_countdown
        #: Requests per second over the last full window (None until one has passed), and the current window.
        self.rate: float | None = None
        self.window_requests = 0
        self.window_start = now


#: Seconds over which a version's request rate is measured for the sampling budget.
_RATE_WINDOW_S = 1.0


class MonitoringTap:
    """Hands sampled answered requests to the monitoring pipeline and to payload logging."""

    def __init__(
        self,
        pipeline: MonitoringPipeline | None,
        payloads: PayloadLogger,
        runtime_config: Callable[[str, int], Mapping[str, Any]],
        sample_rate: float = 1.0,
        *,
        max_samples_per_second: float = 0.0,
        seed: int | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not 0 < sample_rate <= 1:
            raise ValueError("sample_rate must be above 0 and at most 1")
        if max_samples_per_second < 0:
            raise ValueError("max_samples_per_second must be 0 (no budget) or more")
        self.max_samples_per_second = max_samples_per_second
        self._clock = clock
        self.pipeline = pipeline
        self.payloads = payloads
        self.sample_rate = sample_rate
        self._runtime_config = runtime_config
        self._routes: dict[tuple[str, int], _Route] = {}
        self._random = random.Random(seed)  # noqa: S311 - sampling, not secrets  # nosec B311

    def offer(
        self, request: InferenceRequest, response: InferenceResponse, model: str, version: int, started: float
    ) -> None:
        """Consider one answered request (called on the event loop; never raises)."""
        try:
            self._offer(request, response, model, version, started)
        except Exception:  # monitoring must never fail a request that was answered
            logger.exception("monitoring tap failed for %s version %s", model, version)

    def _offer(
        self, request: InferenceRequest, response: InferenceResponse, model: str, version: int, started: float
    ) -> None:
        route = self._routes.get((model, version))
        if route is None:
            route = self._route(model, version)
        pipeline = self.pipeline
        if pipeline is not None:
            route.drift_countdown -= 1
            if route.drift_countdown <= 0:
                gap = self._gap(self._drift_rate(route))
                route.drift_countdown = route.drift_gap = gap
                if response.parameters is None or FALLBACK_PARAMETER not in response.parameters:
                    pipeline.submit(model, version, request.inputs, response.outputs)
        payload = route.payload
        if payload is not None:
            route.payload_countdown -= 1
            if route.payload_countdown <= 0:
                route.payload_countdown = self._gap(payload.sample_rate)
                self.payloads.submit(
                    PayloadRecord(
                        payload,
                        model,
                        version,
                        request.request_id,
                        time.time(),
                        (time.perf_counter() - started) * 1000,
                        request.inputs,
                        response.outputs,
                    )
                )

    def _drift_rate(self, route: _Route) -> float:
        """The sampling rate for the next gap: ``sample_rate``, lowered to keep within the budget."""
        budget = self.max_samples_per_second
        if budget <= 0:
            return self.sample_rate
        now = self._clock()
        route.window_requests += route.drift_gap
        elapsed = now - route.window_start
        if elapsed >= _RATE_WINDOW_S:
            route.rate = route.window_requests / elapsed
            route.window_requests = 0
            route.window_start = now
        rate = route.rate
        if rate is None:  # the first window: judge by what has gone by so far (at least 0.1 s of it)
            rate = route.window_requests / max(elapsed, 0.1 * _RATE_WINDOW_S)
        if rate * self.sample_rate <= budget:
            return self.sample_rate
        return budget / rate

    def start(self) -> None:
        """Start the monitoring worker and the payload writer (server start-up)."""
        if self.pipeline is not None:
            self.pipeline.start()
        self.payloads.start()

    def close(self) -> None:
        """Stop both threads; payload records still waiting are written first (server shutdown)."""
        if self.pipeline is not None:
            self.pipeline.close()
        self.payloads.close()

    def metric_families(self) -> Iterator[Metric]:
        """Drift, data-quality, monitoring-queue and payload-log metrics (read at scrape time)."""
        pipeline = self.pipeline
        monitors = pipeline.monitors() if pipeline is not None else []
        dropped = pipeline.dropped if pipeline is not None else 0
        queued = pipeline.queued if pipeline is not None else 0
        payload_queue = GaugeMetricFamily(
            "ferryman_payload_queue_records", "Payload-log records waiting for the writer thread."
        )
        payload_queue.add_metric([], self.payloads.queued)
        return itertools.chain(monitoring_families(monitors, dropped, queued, self.payloads.counts()), (payload_queue,))

    def rejected(self, model: str, version: int, error: FerrymanError) -> None:
        """Count a request validation refused, under the input field its message names."""
        pipeline = self.pipeline
        if pipeline is None:
            return
        field = rejected_field(error.message)
        if field is not None:
            pipeline.rejected(model, version, field)

    def _route(self, model: str, version: int) -> _Route:
        try:
            payload = parse_payload_log(self._runtime_config(model, version))
        except Exception as exc:  # a config stored before the check existed, or a repository folder's
            logger.warning("%s version %s: payload logging off: %s", model, version, exc)
            payload = None
        payload_gap = self._gap(payload.sample_rate) if payload is not None else 1
        route = self._routes[(model, version)] = _Route(
            payload, self._gap(self.sample_rate), payload_gap, self._clock()
        )
        return route

    def _gap(self, rate: float) -> int:
        """Requests until the next sampled one: geometric with mean ``1 / rate`` (1 when everything is sampled)."""
        if rate >= 1:
            return 1
        return 1 + int(math.log(1.0 - self._random.random()) / math.log(1.0 - rate))
