"""Payload logging: the config block, redaction, rotation and retention, drops; and the request-path tap."""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from ferryman.errors import InvalidInput
from ferryman.monitoring.payload_config import REDACTED, PayloadLogConfig, parse_payload_log
from ferryman.monitoring.payload_log import PayloadLogger, PayloadRecord, iter_lines, payload_line
from ferryman.monitoring.pipeline import MonitoringPipeline
from ferryman.serving.fallback import FALLBACK_PARAMETER
from ferryman.serving.monitoring_tap import MonitoringTap, rejected_field
from ferryman.tensors import InferenceRequest, InferenceResponse
from tests.unit.test_registry_service import open_registry


def record(config: PayloadLogConfig, request_id: str = "r1", **arrays: Any) -> PayloadRecord:
    inputs = arrays.get("inputs", {"input": np.arange(8, dtype=np.float64).reshape(2, 4)})
    outputs = arrays.get("outputs", {"label": np.array([1, 0]), "proba": np.array([[0.2, 0.8], [0.9, 0.1]])})
    return PayloadRecord(config, "churn", 3, request_id, 1_700_000_000.25, 1.2345, inputs, outputs)


def test_config_defaults_and_redactions() -> None:
    assert parse_payload_log({}) is None
    assert parse_payload_log({"payload_log": True}) == PayloadLogConfig()
    config = parse_payload_log({"payload_log": {"sample_rate": 0.1, "redact": ["ssn", "input[3]", "input[0]"]}})
    assert config is not None and config.sample_rate == 0.1
    assert config.redact_tensors == {"ssn"} and config.redact_columns == (("input", (0, 3)),)
    assert config.max_file_bytes == 64 << 20 and config.max_files == 100 and config.format == "jsonl"
    assert hash(config)  # configs key the writer's open files


@pytest.mark.parametrize(
    ("block", "field"),
    [
        ("yes", "payload_log: expected an object"),
        ({"rate": 1}, "payload_log.rate: unknown field"),
        ({"sample_rate": 0}, "payload_log.sample_rate"),
        ({"sample_rate": True}, "payload_log.sample_rate"),
        ({"redact": "ssn"}, "payload_log.redact: expected a list"),
        ({"redact": ["a[b]"]}, r"payload_log.redact\[0\]"),
        ({"format": "csv"}, "payload_log.format"),
        ({"max_file_mb": -1}, "payload_log.max_file_mb"),
        ({"max_file_mb": math.inf}, "payload_log.max_file_mb"),
        ({"max_files": 0}, "payload_log.max_files"),
        ({"path": ""}, "payload_log.path"),
    ],
)
def test_malformed_config_names_the_field(block: Any, field: str) -> None:
    with pytest.raises(InvalidInput, match=field):
        parse_payload_log({"payload_log": block})


def without(monkeypatch: pytest.MonkeyPatch, package: str) -> None:
    """Make ``package`` look absent to the config check, whether or not this venv has it."""
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == package else real(name, *a))


def test_parquet_without_pyarrow_is_refused_at_push(monkeypatch: pytest.MonkeyPatch) -> None:
    without(monkeypatch, "pyarrow")
    with pytest.raises(InvalidInput, match="parquet needs pyarrow"):
        parse_payload_log({"payload_log": {"format": "parquet"}})


def test_url_without_fsspec_is_refused_at_push(monkeypatch: pytest.MonkeyPatch) -> None:
    without(monkeypatch, "fsspec")
    with pytest.raises(InvalidInput, match="needs fsspec"):
        parse_payload_log({"payload_log": {"path": "s3://bucket/payloads"}})
    config = parse_payload_log({"payload_log": {"path": "file:///tmp/payloads"}})
    assert config is not None and config.path == "/tmp/payloads"


def test_redaction_of_tensors_and_columns_of_any_rank() -> None:
    config = parse_payload_log({"payload_log": {"redact": ["proba", "input[1]", "image[5]", "text[0]"]}})
    assert config is not None
    image = np.arange(2 * 2 * 3, dtype=np.float32).reshape(2, 2, 3)
    text = np.array([b"secret", "caf\u00e9".encode()], dtype=object)  # 1-D: one feature, no columns to hide
    line = payload_line(record(config, inputs={"input": np.ones((2, 3)), "image": image, "text": text}))
    assert line["inputs"]["input"].tolist() == [[1.0, REDACTED, 1.0], [1.0, REDACTED, 1.0]]
    assert line["inputs"]["image"].tolist()[1] == [[6.0, 7.0, 8.0], [9.0, 10.0, REDACTED]]
    assert line["outputs"]["proba"] == REDACTED
    assert line["time"] == "2023-11-14T22:13:20.250+00:00" and line["latency_ms"] == 1.234


def test_writer_rotates_keeps_the_newest_files_and_serialises_everything(tmp_path: Path) -> None:
    config = parse_payload_log({"payload_log": {"max_file_mb": 600 / 2**20, "max_files": 2, "redact": ["input[0]"]}})
    assert config is not None
    logger = PayloadLogger(tmp_path / "payloads", poll_seconds=0.01)
    logger.start()
    try:
        text = {"words": np.array([b"hello", "\u00fc".encode()], dtype=object), "f16": np.ones((2, 1), np.float16)}
        for i in range(20):
            logger.submit(record(config, f"r{i}"))
        logger.submit(record(config, "last", inputs=text))
        assert logger.flush()
    finally:
        logger.close()
    folder = tmp_path / "payloads" / "churn" / "3"
    files = sorted(folder.iterdir(), key=lambda p: int(p.stem.rsplit("-", 1)[1]))
    assert len(files) == 2
    assert all(f.stat().st_size <= 600 for f in files)
    records = [r for f in files for r in iter_lines(f)]
    assert records[-1]["request_id"] == "last"
    assert records[-1]["inputs"] == {"words": ["hello", "\u00fc"], "f16": [[1.0], [1.0]]}
    assert records[-2]["request_id"] == "r19"
    assert records[-2]["inputs"]["input"] == [[REDACTED, 1.0, 2.0, 3.0], [REDACTED, 5.0, 6.0, 7.0]]
    assert records[-2]["outputs"] == {"label": [1, 0], "proba": [[0.2, 0.8], [0.9, 0.1]]}
    assert logger.counts() == [("churn", 3, 21, 0, 0)]


def test_full_queue_drops_and_a_failing_sink_counts_failures(tmp_path: Path) -> None:
    config = PayloadLogConfig()
    idle = PayloadLogger(tmp_path, queue_records=2)
    for _ in range(5):
        idle.submit(record(config))
    assert idle.counts() == [("churn", 3, 0, 3, 0)]
    blocked = tmp_path / "not-a-folder"
    blocked.write_text("a file where the folder should be")
    failing = PayloadLogger(blocked, poll_seconds=0.01)
    failing.start()
    try:
        failing.submit(record(config))
        assert failing.flush()
    finally:
        failing.close()
    assert failing.counts() == [("churn", 3, 0, 0, 1)]


def answer(parameters: dict[str, Any] | None = None) -> tuple[InferenceRequest, InferenceResponse]:
    inputs = {"input": np.zeros((1, 4))}
    request = InferenceRequest(model_name="churn", inputs=inputs, request_id="abc")
    response = InferenceResponse("churn", "1", {"label": np.array([0])}, {"label": "INT64"}, parameters=parameters)
    return request, response


def test_tap_samples_at_the_configured_rates(tmp_path: Path) -> None:
    registry = open_registry(tmp_path / "home")
    pipeline = MonitoringPipeline(registry, queue_records=100_000)
    payloads = PayloadLogger(tmp_path / "payloads", queue_records=100_000)
    configs = {1: {"payload_log": {"sample_rate": 0.05}}, 2: {}}
    tap = MonitoringTap(pipeline, payloads, lambda model, version: configs[version], 0.25, seed=1)
    request, response = answer()
    for _ in range(20_000):
        tap.offer(request, response, "churn", 1, 0.0)
    # Binomial(20000, p): five standard deviations either side.
    assert abs(pipeline.queued - 5000) < 5 * math.sqrt(20_000 * 0.25 * 0.75)
    assert abs(payloads.queued - 1000) < 5 * math.sqrt(20_000 * 0.05 * 0.95)
    before = pipeline.queued
    fallback_request, fallback = answer({FALLBACK_PARAMETER: "default"})
    for _ in range(1000):
        tap.offer(fallback_request, fallback, "churn", 2, 0.0)  # fallback answers are not the model's
    assert pipeline.queued == before


def test_tap_never_raises_and_reads_rejected_fields(tmp_path: Path) -> None:
    def broken(model: str, version: int) -> dict[str, Any]:
        raise KeyError(version)

    pipeline = MonitoringPipeline(open_registry(tmp_path / "home"))
    tap = MonitoringTap(pipeline, PayloadLogger(tmp_path), broken)
    tap.offer(*answer(), "churn", 9, 0.0)
    assert pipeline.queued == 1  # no payload log, but monitored all the same
    logging = MonitoringTap(pipeline, PayloadLogger(tmp_path), lambda model, version: {"payload_log": True})
    logging.offer(*answer(), "churn", 1, "not a time")  # type: ignore[arg-type]
    assert pipeline.queued == 2  # the payload side failed after the drift side took it; nothing was raised
    assert rejected_field("input 'age': shape [1, 3] does not match") == "age"
    assert rejected_field("missing input 'x': model 'm' version 1 expects FP32 [-1]") == "x"
    assert rejected_field("unknown input 'y': model 'm' version 1 expects x") == "y"
    assert rejected_field("input 'x' contains NaN, which model 'm' version 1 does not accept") == "x"
    assert rejected_field("unknown output 'z': model 'm' version 1 has outputs a") is None
