"""Prometheus metrics that cost next to nothing on the request path.

The request path only increments plain Python integers and fixed-bucket histograms (no locks: all
updates happen on the event loop thread). Nothing is formatted until a scrape, when
:class:`FerrymanCollector` reads the live numbers and prometheus-client writes the text format
(or OpenMetrics) from a registry of our own — never the global one.

Names, units and labels (``model``, ``version``; never a request id) are documented in
``docs/metrics.md``. With ``--workers N`` each worker process keeps its own numbers; scrape each
worker (or run one worker per pod, as Kubernetes deployments do).
"""

from __future__ import annotations

import bisect
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry, ProcessCollector
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

__all__ = [
    "LATENCY_BUCKETS",
    "LOAD_BUCKETS",
    "FerrymanCollector",
    "Histogram",
    "LoadHistory",
    "RequestMetrics",
    "VersionStats",
    "build_registry",
    "histogram_quantile",
    "outcome_of",
]

#: Seconds: from 0.1 ms to 10 s, dense where model servers live.
LATENCY_BUCKETS = (
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
)  # fmt: skip
#: Rows per batch.
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)
#: Seconds one version load takes: from 10 ms to 5 min.
LOAD_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0)

#: Request outcomes, by the status class of the answer.
OUTCOMES = ("ok", "invalid", "not_found", "overloaded", "deadline", "failed")


def outcome_of(error: Exception) -> str:
    """The outcome label of a failed request."""
    status = getattr(error, "status", 500)
    if status == 404:
        return "not_found"
    if status in (429, 503):
        return "overloaded"
    if status == 504:
        return "deadline"
    if 400 <= status < 500:
        return "invalid"
    return "failed"


class Histogram:
    """A fixed-bucket histogram: ``observe`` is a bisect and three additions."""

    __slots__ = ("bounds", "count", "counts", "total")

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)
        self.total = 0.0
        self.count = 0

    def observe(self, value: float) -> None:
        """Record one value."""
        self.counts[bisect.bisect_left(self.bounds, value)] += 1
        self.total += value
        self.count += 1

    def cumulative(self) -> list[tuple[str, float]]:
        """Buckets as Prometheus wants them: cumulative, ending with +Inf."""
        out: list[tuple[str, float]] = []
        running = 0
        for bound, count in zip(self.bounds, self.counts, strict=False):
            running += count
            out.append((_format_bound(bound), running))
        out.append(("+Inf", running + self.counts[-1]))
        return out


def histogram_quantile(bounds: tuple[float, ...], counts: list[int], q: float) -> float | None:
    """The ``q`` quantile of bucket counts, interpolated within its bucket (Prometheus' estimate).

    None when there are no observations; a quantile in the overflow bucket is the last bound.
    """
    total = sum(counts)
    if total == 0:
        return None
    rank = q * total
    running = 0
    for index, count in enumerate(counts):
        if running + count >= rank and count:
            if index >= len(bounds):
                return bounds[-1]
            lower = bounds[index - 1] if index else 0.0
            return lower + (bounds[index] - lower) * (rank - running) / count
        running += count
    return bounds[-1]


def _format_bound(bound: float) -> str:
    return repr(float(bound))


@dataclass(slots=True)
class VersionStats:
    """Request-level numbers of one model version, kept across reloads."""

    outcomes: dict[str, int] = field(default_factory=lambda: dict.fromkeys(OUTCOMES, 0))
    latency: Histogram = field(default_factory=lambda: Histogram(LATENCY_BUCKETS))
    inflight: int = 0


class RequestMetrics:
    """Per-version request counters and latency, updated by the inference handler."""

    def __init__(self) -> None:
        self.versions: dict[tuple[str, str], VersionStats] = {}
        #: Requests that failed before a version was chosen (unknown model, bad body), by outcome.
        self.unrouted: dict[str, int] = dict.fromkeys(OUTCOMES, 0)
        #: Inference requests answered by each protocol adapter, by outcome.
        self.protocols: dict[str, dict[str, int]] = {}

    def protocol(self, name: str) -> dict[str, int]:
        """The outcome counters of one protocol adapter, bound once when the adapter is built."""
        return self.protocols.setdefault(name, dict.fromkeys(OUTCOMES, 0))

    def stats(self, model: str, version: str) -> VersionStats:
        """The stats of one version (created on first use)."""
        key = (model, version)
        stats = self.versions.get(key)
        if stats is None:
            stats = self.versions[key] = VersionStats()
        return stats


@dataclass(frozen=True, slots=True)
class LoadedView:
    """What the collector reads from one loaded version at scrape time."""

    model: str
    version: str
    memory_bytes: int
    load_seconds: float
    queued: int
    batch: dict[str, object] | None
    cache: dict[str, int] | None


class FerrymanCollector(Collector):
    """Turns the live numbers into metric families when Prometheus scrapes."""

    def __init__(
        self,
        requests: RequestMetrics,
        loaded: Callable[[], list[LoadedView]],
        manager_counters: Callable[[], dict[str, int]],
        extra: Callable[[], Iterable[Metric]] | None = None,
        load_history: Callable[[], LoadHistory] | None = None,
    ) -> None:
        self._requests = requests
        self._loaded = loaded
        self._manager_counters = manager_counters
        self._extra = extra
        self._load_history = load_history
        self._started = time.time()

    def collect(self) -> Iterator[Metric]:
        """Yield every Ferryman metric family."""
        yield from self._request_families()
        yield from self._version_families()
        counters = self._manager_counters()
        for name, help_text in [
            ("cold_starts", "Versions loaded because a request needed them."),
            ("evictions", "Versions unloaded to stay within the memory budget."),
            ("load_failures", "Version loads that failed."),
        ]:
            family = CounterMetricFamily(f"ferryman_{name}", help_text)
            family.add_metric([], counters.get(name, 0))
            yield family
        if self._load_history is not None:
            yield from _load_families(self._load_history())
        if self._extra is not None:
            yield from self._extra()
        start = GaugeMetricFamily("ferryman_start_time_seconds", "Unix time the server process started.")
        start.add_metric([], self._started)
        yield start

    def _request_families(self) -> Iterator[Metric]:
        requests = CounterMetricFamily(
            "ferryman_requests", "Inference requests by outcome.", labels=["model", "version", "outcome"]
        )
        latency = HistogramMetricFamily(
            "ferryman_request_duration_seconds",
            "Time from a decoded request to its answer, in seconds.",
            labels=["model", "version"],
        )
        inflight = GaugeMetricFamily(
            "ferryman_inflight_requests", "Requests being served now.", labels=["model", "version"]
        )
        for (model, version), stats in list(self._requests.versions.items()):
            for outcome, count in stats.outcomes.items():
                requests.add_metric([model, version, outcome], count)
            latency.add_metric([model, version], stats.latency.cumulative(), stats.latency.total)
            inflight.add_metric([model, version], stats.inflight)
        for outcome, count in self._requests.unrouted.items():
            requests.add_metric(["", "", outcome], count)
        protocols = CounterMetricFamily(
            "ferryman_protocol_requests",
            "Inference requests answered by each protocol adapter, by outcome.",
            labels=["protocol", "outcome"],
        )
        for protocol, outcomes in list(self._requests.protocols.items()):
            for outcome, count in outcomes.items():
                protocols.add_metric([protocol, outcome], count)
        yield from (requests, latency, inflight, protocols)

    def _version_families(self) -> Iterator[Metric]:
        labels = ["model", "version"]
        loaded = GaugeMetricFamily("ferryman_loaded_versions", "Model versions in memory.")
        memory = GaugeMetricFamily(
            "ferryman_version_memory_bytes", "Estimated memory of a loaded version.", labels=labels
        )
        load = GaugeMetricFamily(
            "ferryman_version_load_seconds", "How long the version's last load took.", labels=labels
        )
        queued = GaugeMetricFamily("ferryman_queue_requests", "Requests waiting for a batch.", labels=labels)
        queue_time = HistogramMetricFamily(
            "ferryman_queue_duration_seconds", "Time requests waited for their batch, in seconds.", labels=labels
        )
        run_time = HistogramMetricFamily(
            "ferryman_inference_duration_seconds", "Time one model call (a batch) took, in seconds.", labels=labels
        )
        batch_size = HistogramMetricFamily("ferryman_batch_size", "Rows per model call.", labels=labels)
        dropped = CounterMetricFamily(
            "ferryman_requests_dropped", "Requests dropped before execution, by reason.", labels=[*labels, "reason"]
        )
        batches = CounterMetricFamily(
            "ferryman_batches",
            "Model calls (batches) by where they ran: on the event loop (cheap ones) or an executor.",
            labels=[*labels, "place"],
        )
        cache = CounterMetricFamily(
            "ferryman_cache_lookups", "Response cache lookups by result.", labels=[*labels, "result"]
        )
        views = self._loaded()
        loaded.add_metric([], len(views))
        for view in views:
            key = [view.model, view.version]
            memory.add_metric(key, view.memory_bytes)
            load.add_metric(key, view.load_seconds)
            queued.add_metric(key, view.queued)
            if view.batch is not None:
                for family, name in [(queue_time, "queue"), (run_time, "run"), (batch_size, "rows")]:
                    histogram = view.batch[name]
                    assert isinstance(histogram, Histogram)
                    family.add_metric(key, histogram.cumulative(), histogram.total)
                inline = view.batch["inline"]
                total = view.batch["batches"]
                assert isinstance(inline, int) and isinstance(total, int)
                batches.add_metric([*key, "event_loop"], inline)
                batches.add_metric([*key, "executor"], total - inline)
                for reason in ("expired", "rejected", "shed"):
                    value = view.batch[reason]
                    assert isinstance(value, int)
                    dropped.add_metric([*key, reason], value)
            if view.cache is not None:
                cache.add_metric([*key, "hit"], view.cache["hits"])
                cache.add_metric([*key, "miss"], view.cache["misses"])
        yield from (loaded, memory, load, queued, queue_time, run_time, batch_size, batches, dropped, cache)


@dataclass(frozen=True, slots=True)
class LoadHistory:
    """Every version's load record since the process started (unloaded versions included)."""

    failures: dict[tuple[str, str], int]
    durations: dict[tuple[str, str], Histogram]


def _load_families(history: LoadHistory) -> Iterator[Metric]:
    failures = CounterMetricFamily(
        "ferryman_version_load_failures", "Failed loads of a version.", labels=["model", "version"]
    )
    for (model, version), count in list(history.failures.items()):
        failures.add_metric([model, version], count)
    durations = HistogramMetricFamily(
        "ferryman_load_duration_seconds",
        "Time each successful load of a version took, in seconds.",
        labels=["model", "version"],
    )
    for (model, version), histogram in list(history.durations.items()):
        durations.add_metric([model, version], histogram.cumulative(), histogram.total)
    yield from (failures, durations)


def build_registry(collector: FerrymanCollector) -> CollectorRegistry:
    """A registry of our own: Ferryman's metrics plus the process metrics."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(collector)
    ProcessCollector(registry=registry)
    return registry
