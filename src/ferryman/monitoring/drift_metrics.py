"""Metric families of drift, data quality and payload logging, built at scrape time.

They read what the monitoring worker left behind — each version's latest drift report (refreshed
at most every ``monitoring_report_seconds``) and its quality counts — and never run a test
themselves. Labels stay bounded: ``feature`` takes at most ``MAX_FEATURE_LABELS`` drift columns
per version (in profile order) and the quality counters' own bound (100 + ``__other__``).
Names and units: ``docs/metrics.md``.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from ferryman.monitoring.drift import DriftReport
from ferryman.monitoring.version_monitor import VersionMonitor

__all__ = ["MAX_FEATURE_LABELS", "PayloadCounts", "monitoring_families"]

#: Drift columns per version exported with a ``feature`` label (PSI and p-value gauges).
MAX_FEATURE_LABELS = 100

#: ``(model, version, written, dropped, failed)`` of one version's payload log.
PayloadCounts = tuple[str, int, int, int, int]


def monitoring_families(
    monitors: Iterable[VersionMonitor], dropped: int, queued: int, payloads: Iterable[PayloadCounts]
) -> Iterator[Metric]:
    """``ferryman_drift_*``, ``ferryman_data_quality_*``, ``ferryman_monitoring_*``, ``ferryman_payload_*``."""
    labels = ["model", "version"]
    score = GaugeMetricFamily(
        "ferryman_drift_score", "Largest PSI of the latest drift report (dimensionless).", labels=labels
    )
    detected = GaugeMetricFamily(
        "ferryman_drift_detected", "1 when the latest drift verdict is 'drift', else 0.", labels=labels
    )
    window = GaugeMetricFamily(
        "ferryman_drift_window_rows", "Rows in the window the latest drift report tested.", labels=labels
    )
    psi = GaugeMetricFamily(
        "ferryman_drift_psi", "PSI of one feature or prediction column (dimensionless).", labels=[*labels, "feature"]
    )
    p_value = GaugeMetricFamily(
        "ferryman_drift_p_value",
        "Benjamini-Hochberg adjusted p-value of one feature or prediction column.",
        labels=[*labels, "feature"],
    )
    quality = CounterMetricFamily(
        "ferryman_data_quality",
        "Data-quality issues counted per feature (values, or rejected requests for 'rejected').",
        labels=[*labels, "feature", "issue"],
    )
    rows = CounterMetricFamily("ferryman_data_quality_rows", "Rows checked for data quality.", labels=labels)
    for monitor in monitors:
        key = [monitor.model, str(monitor.version)]
        snapshot = monitor.quality_snapshot()
        rows.add_metric(key, snapshot["rows"])
        for feature, issues in snapshot["features"].items():
            for issue, count in issues.items():
                quality.add_metric([*key, feature, issue], count)
        report = monitor.latest
        if report is None:
            continue
        if report.score is not None:
            score.add_metric(key, report.score)
        detected.add_metric(key, 1.0 if report.verdict == "drift" else 0.0)
        window.add_metric(key, report.rows)
        for name, column_psi, column_p in _columns(report):
            if column_psi is not None:
                psi.add_metric([*key, name], column_psi)
            if column_p is not None:
                p_value.add_metric([*key, name], column_p)
    lost = CounterMetricFamily(
        "ferryman_monitoring_dropped", "Sampled requests not monitored because the monitoring queue was full."
    )
    lost.add_metric([], dropped)
    waiting = GaugeMetricFamily("ferryman_monitoring_queue_records", "Sampled requests waiting to be monitored.")
    waiting.add_metric([], queued)
    logged = CounterMetricFamily(
        "ferryman_payload_records",
        "Payload log records by result: written, dropped (queue full), failed (the sink refused the write).",
        labels=[*labels, "result"],
    )
    for model, version, written, skipped, failed in payloads:
        key = [model, str(version)]
        logged.add_metric([*key, "written"], written)
        logged.add_metric([*key, "dropped"], skipped)
        logged.add_metric([*key, "failed"], failed)
    yield from (score, detected, window, psi, p_value, quality, rows, lost, waiting, logged)


def _columns(report: DriftReport) -> list[tuple[str, float | None, float | None]]:
    """Tested columns' (label, psi, adjusted p); a prediction sharing a feature's name becomes ``output:<name>``."""
    features = {f.name for f in report.features}
    out = [(f.name, f.psi, f.p_adjusted) for f in report.features]
    out += [(f"output:{f.name}" if f.name in features else f.name, f.psi, f.p_adjusted) for f in report.predictions]
    return [column for column in out if column[1] is not None or column[2] is not None][:MAX_FEATURE_LABELS]
