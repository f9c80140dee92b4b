"""The values alert rules compare: windows over this process's counters, drift reports, live accuracy.

Request counters, latency histograms and data-quality counts only ever grow, so a value over a
window is the difference between now and a snapshot taken at least a window ago.
:class:`SignalHistory` takes those snapshots on the event loop (copies of a few integers per
version) at every evaluation; snapshots older than the longest window are dropped, and the list is
thinned to at most ``MAX_SNAPSHOTS``. Until a process has run for a whole window its figures cover
the time since it started. A value is None — *no data*, which never changes an alert's state —
when fewer than the rule's ``min_samples`` requests (or labels) are in the window, or nothing has
been measured yet.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ferryman.monitoring.accuracy import Figures
from ferryman.monitoring.alert_rules import AlertRule
from ferryman.monitoring.metrics import LATENCY_BUCKETS, RequestMetrics, histogram_quantile
from ferryman.monitoring.pipeline import MonitoringPipeline

__all__ = ["MAX_SNAPSHOTS", "SignalHistory", "Snapshot", "VersionCounts"]

MAX_SNAPSHOTS = 2000
_ERROR_OUTCOMES = ("failed", "deadline")
#: Which quality issues each quality signal adds up.
_QUALITY = {
    "quality_nan": ("nan", "inf"),
    "quality_out_of_range": ("below_range", "above_range"),
    "quality_unseen": ("unseen_category",),
    "quality_rejected": ("rejected",),
}

Key = tuple[str, int]


@dataclass(frozen=True, slots=True)
class VersionCounts:
    """One version's cumulative counters at one moment."""

    requests: int
    errors: int
    latency: tuple[int, ...]
    quality: dict[str, dict[str, int]]  # feature (or "*" for the totals) -> issue -> count


@dataclass(frozen=True, slots=True)
class Snapshot:
    """Every version's counters at ``at`` (monotonic seconds)."""

    at: float
    versions: dict[Key, VersionCounts]


class SignalHistory:
    """Snapshots of this process's counters, and the values of rules computed from them."""

    def __init__(self, metrics: RequestMetrics, pipeline: MonitoringPipeline | None) -> None:
        self._metrics = metrics
        self._pipeline = pipeline
        self._snapshots: list[Snapshot] = []

    def take(self, longest_window_s: float, now: float | None = None) -> None:
        """Snapshot every version's counters (on the event loop: the handler updates them there)."""
        now = time.monotonic() if now is None else now
        versions: dict[Key, VersionCounts] = {}
        quality = self._quality()
        for (model, version), stats in list(self._metrics.versions.items()):
            if not version.isdigit():
                continue
            key = (model, int(version))
            outcomes = stats.outcomes
            versions[key] = VersionCounts(
                requests=sum(outcomes.values()),
                errors=sum(outcomes[name] for name in _ERROR_OUTCOMES),
                latency=tuple(stats.latency.counts),
                quality=quality.pop(key, {}),
            )
        for key, counts in quality.items():  # versions only the monitor has seen (all rejected)
            versions[key] = VersionCounts(0, 0, (), counts)
        snapshots = self._snapshots
        snapshots.append(Snapshot(now, versions))
        # Keep the newest snapshot at least a window old (the baseline), drop what is older.
        cutoff = now - longest_window_s
        while len(snapshots) > 1 and snapshots[1].at <= cutoff:
            snapshots.pop(0)
        if len(snapshots) > MAX_SNAPSHOTS:
            self._snapshots = snapshots[:1] + snapshots[1:-1:2] + snapshots[-1:]

    def _quality(self) -> dict[Key, dict[str, dict[str, int]]]:
        if self._pipeline is None:
            return {}
        out: dict[Key, dict[str, dict[str, int]]] = {}
        for monitor in self._pipeline.monitors():
            snapshot = monitor.quality_snapshot()
            counts = {"*": dict(snapshot["totals"])}
            counts.update({feature: dict(issues) for feature, issues in snapshot["features"].items()})
            out[(monitor.model, monitor.version)] = counts
        return out

    def window(self, key: Key, window_s: float) -> tuple[VersionCounts, VersionCounts] | None:
        """``(baseline, latest)`` counters of a version for a window, or None when never seen."""
        if not self._snapshots:
            return None
        latest = self._snapshots[-1]
        current = latest.versions.get(key)
        if current is None:
            return None
        cutoff = latest.at - window_s
        baseline = None
        for snapshot in self._snapshots:
            if snapshot.at > cutoff:
                break
            baseline = snapshot.versions.get(key)
        # Unknown a window ago (or the process is younger than the window): everything since start.
        return baseline or VersionCounts(0, 0, (), {}), current

    def value(self, rule: AlertRule, key: Key, live: Callable[[str, float], dict[Key, Figures]]) -> float | None:
        """The rule's signal for one version; None when there is no (or not enough) data."""
        signal = rule.signal
        if signal.startswith("live_"):
            figures = live(key[0], rule.window_s).get(key)
            if figures is None or figures.n < rule.min_samples:
                return None
            return figures.value(signal)
        if signal == "drift_score":
            return self._drift(rule, key)
        span = self.window(key, rule.window_s)
        if span is None:
            return None
        before, after = span
        if signal in _QUALITY:
            feature = rule.feature or "*"
            issues = _QUALITY[signal]
            now = after.quality.get(feature, {})
            then = before.quality.get(feature, {})
            return float(sum(now.get(issue, 0) - then.get(issue, 0) for issue in issues))
        requests = after.requests - before.requests
        if requests < rule.min_samples or requests <= 0:
            return None
        if signal == "error_rate":
            return (after.errors - before.errors) / requests
        previous = before.latency or (0,) * len(after.latency)
        counts = [a - b for a, b in zip(after.latency, previous, strict=False)]
        p99 = histogram_quantile(LATENCY_BUCKETS, counts, 0.99)
        return None if p99 is None else p99 * 1000.0

    def _drift(self, rule: AlertRule, key: Key) -> float | None:
        if self._pipeline is None:
            return None
        monitor = self._pipeline.monitor(*key)
        report = monitor.latest if monitor is not None else None
        if report is None:
            return None
        if rule.feature is None:
            return report.score
        columns: list[Any] = [*report.features, *report.predictions]
        for column in columns:
            if column.name == rule.feature:
                psi: float | None = column.psi
                return psi
        return None
