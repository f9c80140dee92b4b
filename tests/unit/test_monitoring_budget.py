"""The monitoring tap keeps each version within its sampling budget, whatever the traffic."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ferryman.monitoring.payload_log import PayloadLogger
from ferryman.monitoring.pipeline import MonitoringPipeline
from ferryman.serving.monitoring_tap import MonitoringTap
from ferryman.tensors import InferenceRequest, InferenceResponse
from tests.unit.test_registry_service import open_registry


class FakeClock:
    """Time the test moves by hand."""

    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def _tap(
    tmp_path: Path, budget: float, clock: FakeClock, sample_rate: float = 1.0
) -> tuple[MonitoringTap, MonitoringPipeline]:
    pipeline = MonitoringPipeline(open_registry(tmp_path / "home"), queue_records=1_000_000)
    payloads = PayloadLogger(tmp_path / "payloads")
    tap = MonitoringTap(
        pipeline, payloads, lambda model, version: {}, sample_rate, max_samples_per_second=budget, seed=3, clock=clock
    )
    return tap, pipeline


def _offer(tap: MonitoringTap, clock: FakeClock, per_second: int, seconds: int) -> None:
    request = InferenceRequest(model_name="churn", inputs={"input": np.zeros((1, 3))}, request_id="r")
    response = InferenceResponse("churn", "1", {"label": np.array([1])}, {"label": "INT64"})
    for _ in range(seconds):
        for _ in range(per_second):
            clock.now += 1.0 / per_second
            tap.offer(request, response, "churn", 1, 0.0)


def test_a_busy_version_is_sampled_down_to_the_budget(tmp_path: Path) -> None:
    clock = FakeClock()
    tap, pipeline = _tap(tmp_path, 200.0, clock)
    _offer(tap, clock, per_second=10_000, seconds=2)  # the first window learns the rate
    learned = pipeline.queued
    _offer(tap, clock, per_second=10_000, seconds=5)
    sampled = pipeline.queued - learned
    # 200 a second for 5 s = 1000 expected; Bernoulli sampling, so allow about five standard deviations.
    assert 850 < sampled < 1150, sampled
    assert learned < 2 * 200 + 150  # even while learning, the first seconds stay near the budget


def test_a_quiet_version_is_watched_request_by_request(tmp_path: Path) -> None:
    clock = FakeClock()
    tap, pipeline = _tap(tmp_path, 200.0, clock)
    _offer(tap, clock, per_second=50, seconds=6)
    assert pipeline.queued == 300


def test_the_budget_applies_on_top_of_the_sample_rate_and_zero_means_no_cap(tmp_path: Path) -> None:
    clock = FakeClock()
    tap, pipeline = _tap(tmp_path, 200.0, clock, sample_rate=0.5)
    _offer(tap, clock, per_second=300, seconds=10)  # 150 a second wanted by the rate: under the budget
    assert 1500 - 200 < pipeline.queued < 1500 + 200
    uncapped, uncapped_pipeline = _tap(tmp_path / "b", 0.0, FakeClock())
    _offer(uncapped, FakeClock(), per_second=5000, seconds=1)
    assert uncapped_pipeline.queued == 5000
