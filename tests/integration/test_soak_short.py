"""A short soak (10,000 requests): the monitoring structures stay within their caps, memory stays flat.

The full soak (100,000 requests after a 100,000-request warm-up, RSS after warm-up vs. the end) is
``make soak`` (``bench/soak.py``); this is its quick form for ``make test``, on the same server
settings and driver. Its RSS bound is loose: 10,000 requests do not fill the feedback ledger.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from bench.soak import PAYLOAD_LOG, SERVER_ENV, QueueWatch, bounded, drive, iris_model, probe, request_bodies, settle

from ferryman import Client
from tests.conftest import ServerFactory

pytestmark = pytest.mark.timeout(240)

WARMUP = 2_000
REQUESTS = 10_000


def test_ten_thousand_requests_keep_every_bounded_structure_bounded(
    server_factory: ServerFactory, tmp_path: Path
) -> None:
    model, sample, rows = iris_model(tmp_path)
    payload_dir = tmp_path / "payloads"
    server = server_factory(env=SERVER_ENV)
    with Client(server.url) as client:
        client.push(
            model, "soak", sample=sample, runtime_config={"payload_log": {**PAYLOAD_LOG, "path": str(payload_dir)}}
        )
    bodies = request_bodies(rows)

    assert drive(server.url, "soak", bodies, WARMUP) == WARMUP
    settle(server.url, "soak", WARMUP)
    warm = probe(server.url, "soak", payload_dir, WARMUP)

    watch = QueueWatch(server.url)
    watch.start()
    probes = []
    for _ in range(4):
        assert drive(server.url, "soak", bodies, (REQUESTS - WARMUP) // 4) == (REQUESTS - WARMUP) // 4
        probes.append(probe(server.url, "soak", payload_dir, 0))
    peaks = watch.stop()
    settle(server.url, "soak", REQUESTS)
    end = probe(server.url, "soak", payload_dir, REQUESTS)

    assert watch.reads > 0
    assert peaks["ferryman_monitoring_queue_records"] <= int(SERVER_ENV["FERRYMAN_MONITORING_QUEUE_RECORDS"])
    assert peaks["ferryman_payload_queue_records"] <= int(SERVER_ENV["FERRYMAN_PAYLOAD_QUEUE_RECORDS"])
    for moment in [warm, *probes, end]:
        assert bounded(moment, SERVER_ENV, PAYLOAD_LOG) == [], moment
    # The window held its cap while far more rows than that flowed through it.
    window = int(SERVER_ENV["FERRYMAN_MONITORING_WINDOW_ROWS"])
    assert end.drift_window_rows == window
    assert end.drift_rows_observed + end.monitoring_dropped == REQUESTS
    assert end.drift_rows_observed > 10 * window
    # About a tenth of the requests were logged, into files that rotated within max_files.
    assert 600 <= end.payload_written + end.payload_dropped <= 1_400
    assert 1 <= end.payload_files <= PAYLOAD_LOG["max_files"] + 1
    # Memory: flat after the warm-up (the full soak's bound is tighter; this one tolerates a shared CI machine).
    assert end.rss_bytes - warm.rss_bytes <= 32 * 2**20, (warm.rss_bytes, end.rss_bytes)
