"""Structured logs of a served request: every line JSON, the failing request's lines under its request id."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import httpx
import pytest

from tests.conftest import ServerFactory, wait_for
from tests.integration.test_tracing import FAILING_MODEL

pytestmark = pytest.mark.timeout(120)


def test_a_failing_models_log_lines_are_json_with_the_callers_request_id(
    server_factory: ServerFactory, tmp_path: Path
) -> None:
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "model.py").write_text(textwrap.dedent(FAILING_MODEL))
    server = server_factory(args=[str(broken)])
    bad = {"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 2], "data": [100, 200]}]}
    response = httpx.post(f"{server.url}/v2/models/broken/infer", json=bad, headers={"x-request-id": "req-json-42"})
    assert response.status_code == 500
    assert response.headers["x-request-id"] == "req-json-42"
    assert "refuses large inputs" in response.json()["error"]

    def failure_lines() -> list[dict[str, object]]:
        return [r for r in records() if "refuses large inputs" in str(r.get("message", "")) + str(r.get("exception"))]

    def records() -> list[dict[str, object]]:
        lines = [line for line in server.logs().splitlines() if line.strip()]
        parsed = []
        for line in lines:
            document = json.loads(line)  # stderr is not a terminal: every line must be JSON
            assert isinstance(document, dict), line
            parsed.append(document)
        return parsed

    wait_for(lambda: len(failure_lines()) >= 2, "the failure's log lines")
    lines = failure_lines()
    for record in lines:
        assert record["request_id"] == "req-json-42", record
        assert {"time", "level", "logger", "message"} <= set(record), record
        assert "trace_id" not in record  # tracing is off
    traceback = [r for r in lines if "raised during predict" in str(r["message"])]
    assert traceback and traceback[0]["level"] == "error"
    assert "ValueError: the model refuses large inputs" in str(traceback[0]["exception"])
    assert any(r["level"] == "warning" and str(r["message"]).startswith("ModelFailed") for r in lines)

    # A successful request afterwards logs nothing under the failed request's id.
    ok = {"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 2], "data": [1, 2]}]}
    response = httpx.post(f"{server.url}/v2/models/broken/infer", json=ok, headers={"x-request-id": "req-json-43"})
    assert response.status_code == 200 and response.json()["outputs"][0]["data"] == [3.0]
    assert all(r["request_id"] != "req-json-43" or r["level"] == "info" for r in records())
