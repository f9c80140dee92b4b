"""Everything monitoring keeps about one served version: drift window, quality counts, profile learning.

A :class:`VersionMonitor` starts with the version's stored profile, or without one; then it learns
one from the first ``profile_rows`` rows (:class:`~ferryman.monitoring.profile.ProfileLearner`)
and adopts it. Rows seen while learning are the reference, so they never enter the drift window.
Data-quality counts go on across the switch: what was counted before the profile (NaN, ±inf,
rejected fields) is kept and added to what is counted against it (ranges, categories too).

Memory is fixed once the profile is known: the drift window's ring, the quality array, and — only
while learning — at most ``profile_rows`` copied rows.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from ferryman.monitoring.drift import DriftMonitor, DriftReport
from ferryman.monitoring.profile import Profile, ProfileLearner
from ferryman.monitoring.quality import ISSUES, QualityCounters

__all__ = ["MonitorSettings", "VersionMonitor", "merge_quality"]

Arrays = Mapping[str, np.ndarray[Any, Any]]


@dataclass(frozen=True, slots=True)
class MonitorSettings:
    """How each version is monitored (``monitoring_*`` settings, ``docs/monitoring.md``)."""

    window_rows: int = 1000
    min_rows: int = 100
    significance: float = 0.01
    psi_threshold: float = 0.2
    profile_rows: int = 1000
    range_tolerance: float = 0.1


class VersionMonitor:
    """Drift, data quality and (until a profile exists) profile learning for one version.

    ``observe`` and ``rejected`` are called by one thread (the monitoring worker); ``document``,
    ``latest`` and ``quality_snapshot`` may be read from any thread.
    """

    def __init__(self, model: str, version: int, settings: MonitorSettings, profile: Profile | None) -> None:
        self.model = model
        self.version = version
        self.settings = settings
        self.profile: Profile | None = None
        self.drift: DriftMonitor | None = None
        self.learner: ProfileLearner | None = None
        self.quality = QualityCounters(None, range_tolerance=settings.range_tolerance)
        #: Counts from before the profile was known (None until a learned profile replaces them).
        self._early: QualityCounters | None = None
        #: The latest drift report (what metrics show); refreshed by the worker and by the API.
        self.latest: DriftReport | None = None
        self.reported_rows = 0
        self.reported_at = 0.0
        self.last_seen = time.monotonic()
        #: Why no profile could be learned, if learning failed.
        self.failure: str | None = None
        if profile is not None:
            self.adopt(profile)
        else:
            self.learner = ProfileLearner(settings.profile_rows)

    @property
    def learning(self) -> bool:
        """Whether the monitor is still learning its profile from traffic."""
        return self.learner is not None

    def adopt(self, profile: Profile) -> None:
        """Start comparing with ``profile`` (the stored one, or the one just learned)."""
        s = self.settings
        self.drift = DriftMonitor(
            profile,
            window_rows=s.window_rows,
            significance=s.significance,
            psi_threshold=s.psi_threshold,
            min_rows=min(s.min_rows, s.window_rows),
        )
        counted = self.quality.snapshot()
        if self.profile is None and (counted["rows"] or any(counted["totals"].values())):
            self._early = self.quality  # counted without ranges or categories: kept, and added to what follows
        self.quality = QualityCounters(profile, range_tolerance=s.range_tolerance)
        self.profile = profile
        self.learner = None

    def observe(self, inputs: Arrays, outputs: Arrays) -> Profile | None:
        """Count a batch; returns the profile when this batch completed learning one (for the caller to store)."""
        self.last_seen = time.monotonic()
        self.quality.observe(inputs)
        if self.drift is not None:
            self.drift.observe(inputs, outputs)
            return None
        learner = self.learner
        if learner is None:
            return None
        learner.observe(inputs, outputs)
        if learner.failure is not None:
            self.failure = learner.failure
            self.learner = None
        return learner.profile()

    def rejected(self, field: str) -> None:
        """Count a request refused for a schema violation in ``field``."""
        self.last_seen = time.monotonic()
        self.quality.rejected(field)

    def refresh(self) -> DriftReport | None:
        """Test the current window (a few ms; never on the event loop) and keep the result as ``latest``."""
        if self.drift is None:
            return None
        report = self.drift.report(quality=self.quality_snapshot())
        self.latest = report
        self.reported_rows = report.rows_observed
        self.reported_at = time.monotonic()
        return report

    def stale(self, max_age_s: float) -> bool:
        """Whether new rows arrived since the latest report and it is older than ``max_age_s``."""
        if self.drift is None or self.drift.rows_observed == self.reported_rows:
            return False
        return time.monotonic() - self.reported_at >= max_age_s

    def quality_snapshot(self) -> dict[str, Any]:
        """Data-quality counts so far (from before the profile was known, plus since)."""
        current = self.quality.snapshot()
        early = self._early
        return current if early is None else merge_quality(early.snapshot(), current)

    def document(self) -> dict[str, Any]:
        """The drift endpoint's JSON: a fresh report, or why there is none yet, with the same keys."""
        status = "monitoring"
        note: str | None = None
        report = self.refresh()
        learner = self.learner
        if report is not None:
            body = report.to_dict()
        else:
            if learner is not None:
                status = "learning"
                note = (
                    f"learning a reference profile from traffic: {learner.rows} of {learner.n_rows} rows seen; "
                    "drift is tested once it is complete"
                )
            else:
                status = "no profile"
                note = f"no reference profile could be learned from traffic: {self.failure}"
            body = empty_report(self.settings, None, self.quality_snapshot())
        profile = self.profile
        return {
            "model": self.model,
            "version": self.version,
            "status": status,
            "note": note,
            **body,
            "profile": {
                "source": profile.source if profile is not None else None,
                "rows": profile.rows if profile is not None else None,
                "learned_rows": learner.rows if learner is not None else None,
                "needed_rows": learner.n_rows if learner is not None else None,
            },
        }

    @property
    def nbytes(self) -> int:
        """Bytes of the drift window (fixed once the profile is known)."""
        return self.drift.nbytes if self.drift is not None else 0


def empty_report(settings: MonitorSettings, source: str | None, quality: Mapping[str, Any] | None) -> dict[str, Any]:
    """A report's keys with nothing tested (verdict ``not enough data``)."""
    return {
        "verdict": "not enough data",
        "score": None,
        "rows": 0,
        "rows_observed": 0,
        "window_rows": settings.window_rows,
        "min_rows": min(settings.min_rows, settings.window_rows),
        "significance": settings.significance,
        "psi_threshold": settings.psi_threshold,
        "correction": "benjamini-hochberg",
        "source": source,
        "drifted_features": [],
        "drifted_predictions": [],
        "features": {},
        "predictions": {},
        "quality": None if quality is None else dict(quality),
    }


def merge_quality(first: Mapping[str, Any], second: Mapping[str, Any]) -> dict[str, Any]:
    """The sum of two ``QualityCounters.snapshot()`` results (labels in order of first appearance)."""
    features: dict[str, dict[str, int]] = {}
    for snapshot in (first, second):
        for label, issues in snapshot["features"].items():
            into = features.setdefault(label, dict.fromkeys(ISSUES, 0))
            for issue, count in issues.items():
                into[issue] = into.get(issue, 0) + count
    totals = {issue: first["totals"].get(issue, 0) + second["totals"].get(issue, 0) for issue in ISSUES}
    return {"rows": first["rows"] + second["rows"], "totals": totals, "features": features}
