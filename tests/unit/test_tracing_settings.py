"""When tracing turns on, and where it exports: the settings side of monitoring/tracing.py."""

from __future__ import annotations

import pytest
from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags, set_span_in_context

from ferryman.config import load_settings
from ferryman.monitoring import tracing
from tests.integration.test_tracing import Collector


def test_tracing_is_off_unless_asked_for(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OTEL_EXPORTER_OTLP_ENDPOINT", raising=False)
    monkeypatch.delenv("FERRYMAN_OTEL_ENDPOINT", raising=False)
    settings = load_settings()
    assert not tracing.tracing_wanted(settings)
    assert not tracing.start_tracing(settings)
    assert tracing.TRACER is None and tracing.current_trace_id() is None


def test_the_standard_otlp_endpoint_variable_turns_it_on(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4318")
    settings = load_settings()
    assert settings.otel_endpoint == "http://collector:4318"
    assert tracing.tracing_wanted(settings)
    assert not tracing.tracing_wanted(load_settings(otel_enabled=False))  # an explicit off wins
    monkeypatch.delenv("OTEL_EXPORTER_OTLP_ENDPOINT")
    monkeypatch.setenv("FERRYMAN_OTEL_ENDPOINT", "http://other:4318/")
    assert load_settings().otel_endpoint == "http://other:4318/"


def test_traces_path_is_appended_once() -> None:
    assert tracing._traces_url("http://c:4318") == "http://c:4318/v1/traces"
    assert tracing._traces_url("http://c:4318/") == "http://c:4318/v1/traces"
    assert tracing._traces_url("http://c:4318/v1/traces") == "http://c:4318/v1/traces"
    assert tracing._traces_url(None) is None


def test_start_and_stop_turn_the_tracer_on_and_off() -> None:
    settings = load_settings(otel_enabled=True, otel_endpoint="http://127.0.0.1:9/")
    try:
        assert tracing.start_tracing(settings)
        assert tracing.TRACER is not None
        # A parent that is not sampled: its trace id is continued, and nothing is exported at shutdown.
        parent = SpanContext(0x4BF92F3577B34DA6A3CE929D0E0E4736, 0x00F067AA0BA902B7, True, TraceFlags(0))
        with tracing.TRACER.start_as_current_span("probe", context=set_span_in_context(NonRecordingSpan(parent))):
            assert tracing.current_trace_id() == "4bf92f3577b34da6a3ce929d0e0e4736"
    finally:
        tracing.stop_tracing()
    assert tracing.TRACER is None


def test_unsampled_requests_get_no_child_spans() -> None:
    collector = Collector()  # a real OTLP receiver, so the sampled span below is exported at once on shutdown
    collector.thread.start()
    settings = load_settings(otel_enabled=True, otel_endpoint=collector.url, otel_sample_rate=0.0)
    try:
        assert tracing.start_tracing(settings)
        assert tracing.TRACER is not None
        with tracing.TRACER.start_as_current_span("request"):  # a new trace, not sampled at rate 0
            assert tracing.recording_tracer() is None
            assert tracing.current_trace_id() is not None  # log lines still carry its id
        sampled = SpanContext(0x4BF92F3577B34DA6A3CE929D0E0E4736, 0x00F067AA0BA902B7, True, TraceFlags(1))
        with tracing.TRACER.start_as_current_span("request", context=set_span_in_context(NonRecordingSpan(sampled))):
            assert tracing.recording_tracer() is tracing.TRACER  # the caller's sampled trace is followed
            tracing.TRACER.start_span("child").end()
    finally:
        tracing.stop_tracing()
        collector.server.shutdown()
        collector.server.server_close()
    assert sorted(span["name"] for span in collector.spans) == ["child", "request"]
    assert {span["trace_id"] for span in collector.spans} == {"4bf92f3577b34da6a3ce929d0e0e4736"}
