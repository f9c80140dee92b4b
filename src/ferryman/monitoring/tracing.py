"""OpenTelemetry tracing of inference requests: optional, and free when off.

With the ``otel`` extra installed and tracing configured (``otel_enabled``, or an OTLP endpoint:
``otel_endpoint`` / ``OTEL_EXPORTER_OTLP_ENDPOINT``), every V2 inference request gets a
``ferryman.request`` span — continuing the caller's W3C ``traceparent`` — with children
``ferryman.decode``, ``ferryman.route``, ``ferryman.queue``, ``ferryman.infer`` and
``ferryman.encode``. Spans carry the model, version, request id, batch size and outcome, and are
exported over OTLP/HTTP by a ``BatchSpanProcessor`` (a queue and a thread of its own: recording a
span never waits on the network).

When tracing is off, :data:`TRACER` is None and the request path pays one attribute check per
hook: no span objects, no context switches. Queue and inference spans are recorded after the fact
from timestamps the batcher keeps for traced requests only, so the batcher needs no tracer.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Executor
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, TypeVar

from ferryman.monitoring.metrics import outcome_of

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.trace import Span, Tracer

    from ferryman.config import Settings
    from ferryman.serving.batcher import Arrays, Batcher
    from ferryman.serving.manager import LoadedVersion

__all__ = [
    "TRACER",
    "current_trace_id",
    "end_route",
    "recording_tracer",
    "request_span",
    "start_tracing",
    "stop_tracing",
    "traced_call",
    "traced_submit",
    "tracing_wanted",
]

logger = logging.getLogger(__name__)

#: The tracer while tracing is on; None when off (the one check the request path makes).
TRACER: Tracer | None = None
_provider: TracerProvider | None = None
_current_span: Callable[[], Span] | None = None

T = TypeVar("T")


class _Status(Exception):
    """Just enough of an error for :func:`outcome_of` to name an HTTP status's outcome."""

    def __init__(self, status: int) -> None:
        super().__init__(status)
        self.status = status


def tracing_wanted(settings: Settings) -> bool:
    """Whether the settings ask for tracing: explicitly, or by naming an OTLP endpoint."""
    if settings.otel_enabled is not None:
        return settings.otel_enabled
    return settings.otel_endpoint is not None


def start_tracing(settings: Settings) -> bool:
    """Turn tracing on when the settings ask for it and the ``otel`` extra is installed; whether it is on."""
    global TRACER, _provider, _current_span
    if not tracing_wanted(settings):
        return False
    try:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor
        from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased
    except ImportError:
        logger.warning("tracing is configured but OpenTelemetry is not installed: pip install 'ferryman[otel]'")
        return False
    provider = TracerProvider(
        resource=Resource.create({"service.name": settings.otel_service_name}),
        sampler=ParentBased(TraceIdRatioBased(settings.otel_sample_rate)),
    )
    # Spans queue in memory and leave from the processor's own thread: recording one never waits.
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=_traces_url(settings.otel_endpoint))))
    from opentelemetry.trace import get_current_span

    _provider, _current_span = provider, get_current_span
    TRACER = provider.get_tracer("ferryman")
    logger.info("tracing on: OTLP/HTTP to %s", settings.otel_endpoint or "the exporter's default endpoint")
    return True


def stop_tracing() -> None:
    """Flush the spans still queued and turn tracing off."""
    global TRACER, _provider
    provider, _provider, TRACER = _provider, None, None
    if provider is not None:
        provider.shutdown()


def _traces_url(endpoint: str | None) -> str | None:
    """OTLP/HTTP's rule: a base endpoint gets ``/v1/traces`` appended (None: the exporter's default)."""
    if endpoint is None or endpoint.rstrip("/").endswith("/v1/traces"):
        return endpoint
    return endpoint.rstrip("/") + "/v1/traces"


def recording_tracer() -> Tracer | None:
    """The tracer when the current request's span is recorded (sampled), else None: no child spans."""
    tracer = TRACER
    if tracer is None or _current_span is None or not _current_span().is_recording():
        return None
    return tracer


def current_trace_id() -> str | None:
    """The current span's trace id as 32 hex digits, for log lines; None when not tracing."""
    if TRACER is None:
        return None
    from opentelemetry import trace

    context = trace.get_current_span().get_span_context()
    return format(context.trace_id, "032x") if context.is_valid else None


@contextmanager
def request_span(
    tracer: Tracer, headers: list[tuple[bytes, bytes]], model: str, version: str | None, request_id: str
) -> Iterator[Callable[[int], None]]:
    """The ``ferryman.request`` span, current while the request is served; yields a status recorder.

    A ``traceparent`` (and ``tracestate``) header continues the caller's trace.
    """
    from opentelemetry.propagate import extract
    from opentelemetry.trace import SpanKind, Status, StatusCode

    carrier = {key.decode("latin-1"): value.decode("latin-1") for key, value in headers if key.startswith(b"trace")}
    attributes: dict[str, str] = {"ferryman.model": model, "ferryman.request_id": request_id}
    if version is not None:
        attributes["ferryman.version"] = version
    with tracer.start_as_current_span(
        "ferryman.request", context=extract(carrier), kind=SpanKind.SERVER, attributes=attributes
    ) as span:

        def record(status: int) -> None:
            span.set_attribute("http.response.status_code", status)
            span.set_attribute("ferryman.outcome", "ok" if status < 400 else outcome_of(_Status(status)))
            if status >= 500:
                span.set_status(Status(StatusCode.ERROR))

        yield record


def end_route(span: Span, loaded: LoadedVersion | None, error: BaseException | None) -> None:
    """End the route span; name the version that serves on it and on the request span."""
    if loaded is not None:
        from opentelemetry import trace

        version = str(loaded.version)
        for target in (span, trace.get_current_span()):
            target.set_attribute("ferryman.model", loaded.model)
            target.set_attribute("ferryman.version", version)
    _fail(span, error)
    span.end()


def _epoch_ns(monotonic: float, offset_ns: int) -> int:
    return int(monotonic * 1e9) + offset_ns


def _record_stages(
    tracer: Tracer, submitted: float, timing: list[float], offset_ns: int, error: BaseException | None
) -> None:
    """The queue span (submitted → model call) and the infer span (the model call), after the fact."""
    now = time.monotonic()
    started = timing[0] if timing else now
    queue = tracer.start_span("ferryman.queue", start_time=_epoch_ns(submitted, offset_ns))
    queue.end(end_time=_epoch_ns(started, offset_ns))
    if not timing:
        _fail(queue, error)
        return
    ended = timing[1] if len(timing) > 2 else now
    infer: Span = tracer.start_span("ferryman.infer", start_time=_epoch_ns(started, offset_ns))
    if len(timing) > 2:
        infer.set_attribute("ferryman.batch_size", int(timing[2]))
    _fail(infer, error)
    infer.end(end_time=_epoch_ns(ended, offset_ns))


def _fail(span: Span, error: BaseException | None) -> None:
    if error is not None:
        from opentelemetry.trace import Status, StatusCode

        span.record_exception(error)
        span.set_status(Status(StatusCode.ERROR, str(error)))


def _offset_ns() -> int:
    """Unix time minus monotonic time, in ns: converts the batcher's monotonic stamps for OTel."""
    return time.time_ns() - time.monotonic_ns()


async def traced_submit(
    tracer: Tracer, batcher: Batcher, inputs: Arrays, deadline: float | None, wanted: frozenset[str] | None
) -> Arrays:
    """``batcher.submit`` with queue and infer spans (the batcher stamps the batch's start, end and rows)."""
    timing: list[float] = []
    submitted = time.monotonic()
    error: BaseException | None = None
    try:
        return await batcher.submit(inputs, deadline, wanted, timing=timing)
    except BaseException as exc:
        error = exc
        raise
    finally:
        _record_stages(tracer, submitted, timing, _offset_ns(), error)


async def traced_call(tracer: Tracer, executor: Executor, rows: int | None, call: Callable[..., T], *args: Any) -> T:
    """``call(*args)`` in ``executor`` with queue (waiting for a thread) and infer spans."""
    timing: list[float] = []

    def timed() -> T:
        timing.append(time.monotonic())
        try:
            return call(*args)
        finally:
            timing.extend((time.monotonic(), rows or 0))

    submitted = time.monotonic()
    error: BaseException | None = None
    try:
        # In a copy of the request's context: the model's log lines carry its request and trace ids.
        return await asyncio.get_running_loop().run_in_executor(executor, contextvars.copy_context().run, timed)
    except BaseException as exc:
        error = exc
        raise
    finally:
        _record_stages(tracer, submitted, timing, _offset_ns(), error)
