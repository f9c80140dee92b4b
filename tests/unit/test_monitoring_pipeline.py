"""The monitoring pipeline on a real registry: stored and learned profiles, batching, and its
bounds under a 100,000-record soak.
"""

from __future__ import annotations

import gc
import tracemalloc
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from ferryman.errors import InvalidInput, NotFound
from ferryman.monitoring.pipeline import MonitoringPipeline
from ferryman.monitoring.profile import build_profile
from ferryman.monitoring.version_monitor import MonitorSettings
from ferryman.registry.service import RegistryService
from tests.unit.test_registry_service import open_registry, push

SETTINGS = MonitorSettings(window_rows=200, min_rows=100, profile_rows=300)


@pytest.fixture
def registry(tmp_path: Path) -> RegistryService:
    return open_registry(tmp_path / "home")


@pytest.fixture
def pipeline(registry: RegistryService) -> Iterator[MonitoringPipeline]:
    running = MonitoringPipeline(registry, SETTINGS, poll_seconds=0.01)
    running.start()
    yield running
    running.close()


def reference(rows: int = 1000, seed: int = 0) -> dict[str, object]:
    rng = np.random.default_rng(seed)
    features = rng.normal(size=(rows, 3))
    labels = (features[:, 0] > 0).astype(np.int64)
    return build_profile({"input": features}, {"label": labels}, source="sample").to_dict()


Arrays = dict[str, np.ndarray]


def batch(rng: np.random.Generator, rows: int, shift: float = 0.0) -> tuple[Arrays, Arrays]:
    features = rng.normal(size=(rows, 3))
    features[:, 1] += shift
    return {"input": features}, {"label": (features[:, 0] > 0).astype(np.int64)}


def test_profiles_are_stored_per_version_without_bumping_the_revision(registry: RegistryService) -> None:
    push(registry, "churn", b"v1")
    push(registry, "churn", b"v2")
    revision = registry.revision()
    assert registry.get_profile("churn", 1) is None
    assert registry.set_profile("churn", 1, reference(), "traffic") is True
    assert registry.set_profile("churn", 1, reference(seed=1), "traffic") is False  # the first one stored wins
    assert registry.get_profile("churn", 1) == (reference(), "traffic")
    assert registry.set_profile("churn", 1, reference(seed=2), "sample") is True  # a pushed sample replaces it
    assert registry.get_profile("churn", 1) == (reference(seed=2), "sample")
    assert registry.get_profile("churn", 2) is None
    assert registry.revision() == revision
    with pytest.raises(NotFound, match="no version 3"):
        registry.set_profile("churn", 3, reference(), "sample")
    with pytest.raises(InvalidInput, match="malformed profile"):
        registry.set_profile("churn", 2, {"format": 1}, "sample")
    registry.delete_version("churn", 1)
    push(registry, "churn", b"v1")  # version 3: numbers are never reused, nor are profiles
    assert registry.get_profile("churn", 3) is None
    registry.delete_model("churn")
    with pytest.raises(NotFound):
        registry.get_profile("churn", 2)


def test_stored_profile_then_drift_named_within_one_window(
    registry: RegistryService, pipeline: MonitoringPipeline
) -> None:
    push(registry, "churn", b"v1")
    registry.set_profile("churn", 1, reference(), "sample")
    rng = np.random.default_rng(3)
    for _ in range(40):  # one-row records, stacked by the worker
        pipeline.submit("churn", 1, *batch(rng, 5))
    assert pipeline.flush()
    monitor = pipeline.monitor("churn", 1)
    assert monitor is not None and monitor.profile is not None and monitor.profile.source == "sample"
    assert monitor.document()["verdict"] == "no drift"
    pipeline.submit("churn", 1, *batch(rng, 200, shift=1.0))
    report = pipeline.report("churn", 1)
    assert report["verdict"] == "drift" and report["drifted_features"] == ["input[1]"]
    pipeline.rejected("churn", 1, "input")
    pipeline.rejected("churn", 1, "made-up")
    quality = pipeline.report("churn", 1)["quality"]
    assert quality["features"]["input"]["rejected"] == 1
    assert quality["features"]["__other__"]["rejected"] == 1  # unknown names never become labels


def test_profile_learned_stored_and_shared(registry: RegistryService, pipeline: MonitoringPipeline) -> None:
    push(registry, "churn", b"v1")
    rng = np.random.default_rng(4)
    pipeline.submit("churn", 1, *batch(rng, 120))
    assert pipeline.report("churn", 1)["status"] == "learning"
    pipeline.submit("churn", 1, *batch(rng, 400))
    document = pipeline.report("churn", 1)
    assert document["status"] == "monitoring" and document["source"] == "traffic"
    assert document["rows_observed"] == 0  # rows of the learning batch never test against themselves
    stored = registry.get_profile("churn", 1)
    assert stored is not None and stored[1] == "traffic" and stored[0]["rows"] == 300

    # Another process of the same server learns too: it ends up with the profile stored first.
    other = MonitoringPipeline(registry, SETTINGS)
    other.start()
    try:
        other.submit("churn", 1, *batch(np.random.default_rng(5), 300))
        assert other.report("churn", 1)["profile"]["rows"] == 300
        mine, theirs = pipeline.monitor("churn", 1), other.monitor("churn", 1)
        assert mine is not None and theirs is not None and theirs.profile == mine.profile
    finally:
        other.close()


def test_repository_models_are_learned_in_memory(pipeline: MonitoringPipeline) -> None:
    rng = np.random.default_rng(6)
    pipeline.submit("folder-model", 2, *batch(rng, 300))
    document = pipeline.report("folder-model", 2)
    assert document["status"] == "monitoring" and document["source"] == "traffic"


def test_mixed_layouts_and_scalars_are_not_stacked(registry: RegistryService, pipeline: MonitoringPipeline) -> None:
    push(registry, "churn", b"v1")
    registry.set_profile("churn", 1, reference(), "sample")
    rng = np.random.default_rng(8)
    pipeline.submit("churn", 1, *batch(rng, 3))
    pipeline.submit("churn", 1, {"input": rng.normal(size=(2, 5))}, {})  # another layout: a batch of its own
    pipeline.submit("churn", 1, {"input": np.array(1.0)}, {})  # a scalar: one row, never stacked
    assert pipeline.flush()
    monitor = pipeline.monitor("churn", 1)
    assert monitor is not None and monitor.quality_snapshot()["rows"] == 3 + 2 + 1


def test_full_queue_drops_and_counts_without_a_worker(registry: RegistryService) -> None:
    idle = MonitoringPipeline(registry, SETTINGS, queue_records=3)
    rng = np.random.default_rng(9)
    for _ in range(5):
        idle.submit("churn", 1, *batch(rng, 1))
    assert idle.queued == 3 and idle.dropped == 2
    small = MonitoringPipeline(registry, SETTINGS, queue_bytes=1000)
    small.submit("churn", 1, *batch(rng, 100))  # 3 KB of arrays: over the byte bound
    assert small.queued == 0 and small.dropped == 1


def test_soak_100k_records_stays_bounded(registry: RegistryService) -> None:
    """100,000 records of mixed sizes for four versions (two learning their profile) through a bounded queue."""
    push(registry, "churn", b"v1")
    push(registry, "churn", b"v2")
    registry.set_profile("churn", 1, reference(), "sample")
    registry.set_profile("churn", 2, reference(seed=1), "sample")
    pipeline = MonitoringPipeline(registry, SETTINGS, queue_records=2048, poll_seconds=0.005)
    pipeline.start()
    rng = np.random.default_rng(10)
    pool = [batch(rng, rows) for rows in (1, 1, 1, 2, 4, 16)]
    nan_rows = batch(rng, 2)
    nan_rows[0]["input"][:, 2] = np.nan
    pool.append(nan_rows)
    targets = [("churn", 1), ("churn", 2), ("learns", 1), ("learns", 2)]
    tracemalloc.start()
    try:
        peak_queue = 0
        baseline = 0
        for i in range(100_000):
            model, version = targets[i % len(targets)]
            pipeline.submit(model, version, *pool[i % len(pool)])
            peak_queue = max(peak_queue, pipeline.queued)
            if i % 5000 == 4999:
                assert pipeline.flush(30)
            if i == 19_999:  # warmed up: every version has its profile and a full window
                gc.collect()
                baseline = tracemalloc.get_traced_memory()[0]
                sizes = {(m.model, m.version): m.nbytes for m in pipeline.monitors()}
        assert pipeline.flush(30)
        gc.collect()
        grown = tracemalloc.get_traced_memory()[0] - baseline
    finally:
        tracemalloc.stop()
        pipeline.close()
    assert peak_queue <= 2048 and pipeline.queued_bytes == 0
    monitors = pipeline.monitors()
    assert len(monitors) == 4 and all(not m.learning and m.drift is not None for m in monitors)
    assert {(m.model, m.version): m.nbytes for m in monitors} == sizes  # windows are fixed rings
    observed = sum(m.quality_snapshot()["rows"] for m in monitors)
    assert pipeline.dropped >= 0 and observed > 0
    print(f"soak: dropped {pipeline.dropped}, observed {observed} rows, grew {grown} bytes after warm-up")
    assert grown < 256 * 1024, f"monitoring memory grew by {grown} bytes after warm-up"
