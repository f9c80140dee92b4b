"""OpenTelemetry traces of served requests, received by a real OTLP/HTTP endpoint in the test."""

from __future__ import annotations

import gzip
import json
import textwrap
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from tests.conftest import ServerFactory, wait_for

pytestmark = pytest.mark.timeout(180)

ROW = {"inputs": [{"name": "input", "datatype": "FP64", "shape": [1, 4], "data": [5.1, 3.5, 1.4, 0.2]}]}
TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT_ID = "00f067aa0ba902b7"

FAILING_MODEL = """
import ferryman
from ferryman import TensorSpec

class Broken(ferryman.Model):
    inputs = [TensorSpec("x", "FP32", (-1, 2))]
    outputs = [TensorSpec("y", "FP32", (-1,))]

    def predict(self, inputs):
        if float(inputs["x"].sum()) > 100:
            raise ValueError("the model refuses large inputs")
        return {"y": inputs["x"].sum(axis=1)}
"""


class Collector:
    """A minimal OTLP/HTTP trace receiver: decodes every export into plain span dicts."""

    def __init__(self) -> None:
        self.spans: list[dict[str, Any]] = []
        self.service_names: set[str] = set()
        self._lock = threading.Lock()
        collector = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["content-length"]))
                if self.headers.get("content-encoding") == "gzip":
                    body = gzip.decompress(body)
                collector.receive(self.path, body)
                self.send_response(200)
                self.send_header("content-type", "application/x-protobuf")
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def receive(self, path: str, body: bytes) -> None:
        assert path == "/v1/traces", path
        export = ExportTraceServiceRequest.FromString(body)
        with self._lock:
            for resource_spans in export.resource_spans:
                for attribute in resource_spans.resource.attributes:
                    if attribute.key == "service.name":
                        self.service_names.add(attribute.value.string_value)
                for scope_spans in resource_spans.scope_spans:
                    for span in scope_spans.spans:
                        self.spans.append(
                            {
                                "name": span.name,
                                "trace_id": span.trace_id.hex(),
                                "span_id": span.span_id.hex(),
                                "parent": span.parent_span_id.hex(),
                                "start": span.start_time_unix_nano,
                                "end": span.end_time_unix_nano,
                                "error": span.status.code == 2,
                                "attributes": {a.key: _value(a.value) for a in span.attributes},
                            }
                        )

    def trace(self, trace_id: str) -> list[dict[str, Any]]:
        with self._lock:
            return [span for span in self.spans if span["trace_id"] == trace_id]


def _value(value: Any) -> Any:
    kind = value.WhichOneof("value")
    return getattr(value, kind) if kind else None


@pytest.fixture
def collector() -> Iterator[Collector]:
    receiver = Collector()
    receiver.thread.start()
    yield receiver
    receiver.server.shutdown()
    receiver.server.server_close()


def _complete(collector: Collector, trace_id: str, count: int) -> list[dict[str, Any]]:
    wait_for(lambda: len(collector.trace(trace_id)) >= count, f"{count} spans of trace {trace_id}")
    return collector.trace(trace_id)


def test_request_spans_continue_the_callers_trace(
    server_factory: ServerFactory, collector: Collector, iris_joblib: Path, tmp_path: Path
) -> None:
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "model.py").write_text(textwrap.dedent(FAILING_MODEL))
    server = server_factory(
        args=[str(iris_joblib), str(broken)],
        env={
            "OTEL_EXPORTER_OTLP_ENDPOINT": collector.url,
            "FERRYMAN_OTEL_SERVICE_NAME": "ferryman-test",
            "OTEL_BSP_SCHEDULE_DELAY": "50",  # the SDK's own setting: export every 50 ms
        },
    )
    traceparent = f"00-{TRACE_ID}-{PARENT_ID}-01"
    response = httpx.post(
        f"{server.url}/v2/models/iris/infer",
        json=ROW,
        headers={"traceparent": traceparent, "x-request-id": "traced-1"},
    )
    assert response.status_code == 200, response.text

    spans = _complete(collector, TRACE_ID, 6)
    by_name = {span["name"]: span for span in spans}
    assert sorted(by_name) == sorted(
        ["ferryman.request", "ferryman.decode", "ferryman.route", "ferryman.queue", "ferryman.infer", "ferryman.encode"]
    )
    assert len(spans) == 6
    root = by_name["ferryman.request"]
    assert root["parent"] == PARENT_ID  # the caller's span is the parent: its trace is continued
    for name in ("ferryman.decode", "ferryman.route", "ferryman.queue", "ferryman.infer", "ferryman.encode"):
        child = by_name[name]
        assert child["parent"] == root["span_id"], name
        assert root["start"] <= child["start"] <= child["end"] <= root["end"], name
    order = ["ferryman.decode", "ferryman.route", "ferryman.queue", "ferryman.infer", "ferryman.encode"]
    starts = [by_name[name]["start"] for name in order]
    assert starts == sorted(starts)
    assert by_name["ferryman.queue"]["end"] <= by_name["ferryman.infer"]["start"]
    assert root["attributes"] == {
        "ferryman.model": "iris",
        "ferryman.version": "1",
        "ferryman.request_id": "traced-1",
        "ferryman.outcome": "ok",
        "http.response.status_code": 200,
    }
    assert by_name["ferryman.route"]["attributes"] == {"ferryman.model": "iris", "ferryman.version": "1"}
    assert by_name["ferryman.infer"]["attributes"] == {"ferryman.batch_size": 1}
    assert collector.service_names == {"ferryman-test"}

    # Without a traceparent a request starts a trace of its own.
    assert httpx.post(f"{server.url}/v2/models/iris/infer", json=ROW).status_code == 200
    wait_for(lambda: any(s["parent"] == "" and s["trace_id"] != TRACE_ID for s in collector.spans), "a new root span")

    # A model that raises: the request span says so, the infer span holds the exception, and the
    # server's log line about it carries the trace id and the request id (non-batched path).
    failing_trace = "0af7651916cd43dd8448eb211c80319c"
    bad = {"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 2], "data": [100, 200]}]}
    response = httpx.post(
        f"{server.url}/v2/models/broken/infer",
        json=bad,
        headers={"traceparent": f"00-{failing_trace}-{PARENT_ID}-01", "x-request-id": "traced-2"},
    )
    assert response.status_code == 500, response.text
    spans = {span["name"]: span for span in _complete(collector, failing_trace, 5)}
    assert sorted(spans) == [
        "ferryman.decode",
        "ferryman.infer",
        "ferryman.queue",
        "ferryman.request",
        "ferryman.route",
    ]
    root = spans["ferryman.request"]
    assert root["error"] and root["attributes"]["ferryman.outcome"] == "failed"
    assert root["attributes"]["http.response.status_code"] == 500
    assert spans["ferryman.infer"]["error"] and spans["ferryman.infer"]["attributes"]["ferryman.batch_size"] == 1
    assert not spans["ferryman.route"]["error"]

    records = [json.loads(line) for line in server.logs().splitlines() if line.startswith("{")]
    raised = [r for r in records if "raised during predict" in r["message"]]
    assert raised, server.logs()
    assert raised[0]["trace_id"] == failing_trace
    assert raised[0]["request_id"] == "traced-2"
    assert "ValueError: the model refuses large inputs" in raised[0]["exception"]
