"""The experiment report of one model: its versions in the current policy, side by side.

Assembles :class:`~ferryman.monitoring.experiment.VersionObservations` from what this process
measured (requests, errors, latency, prediction distribution, shadow agreement) and from the
feedback stored in the registry (accuracy for classifiers, absolute and squared errors for
regressors), then lets :func:`~ferryman.monitoring.experiment.build_report` compare them.
"""

from __future__ import annotations

import asyncio
import math
from concurrent.futures import Executor
from typing import Any

from ferryman.monitoring.experiment import Latency, NumericSummary, VersionObservations, build_report
from ferryman.monitoring.metrics import LATENCY_BUCKETS, RequestMetrics, histogram_quantile
from ferryman.registry.records import FeedbackRecord
from ferryman.registry.service import RegistryService
from ferryman.serving.catalog import CatalogModel
from ferryman.serving.experiments import ExperimentRecorder
from ferryman.serving.manager import ModelManager
from ferryman.serving.shadow import ShadowRunner

__all__ = ["ExperimentReporter", "experiment_versions"]

#: At most this many feedback rows (the newest) feed one report.
MAX_FEEDBACK_ROWS = 200_000
_PAGE = 5000
_ERRORS = ("failed", "deadline")


def experiment_versions(model: CatalogModel, serving_default: int | None) -> list[int]:
    """The versions a report compares: those the traffic policy and rollout route to, else the aliased ones."""
    versions: set[int] = set()
    if model.traffic is not None:
        versions |= model.traffic.versions
        shadow = model.traffic.shadow_target()
        if shadow is not None:
            versions.add(shadow)
    if model.rollout is not None:
        versions |= {model.rollout.from_version, model.rollout.to_version}
    if not versions:
        versions = {number for number in model.aliases.values() if number in model.versions}
        if serving_default is not None:
            versions.add(serving_default)
    return sorted(versions)


class ExperimentReporter:
    """Builds experiment reports from the process's measurements and the stored feedback."""

    def __init__(
        self,
        registry: RegistryService,
        manager: ModelManager,
        metrics: RequestMetrics,
        shadows: ShadowRunner,
        recorder: ExperimentRecorder,
        executor: Executor,
    ) -> None:
        self._registry = registry
        self._manager = manager
        self._metrics = metrics
        self._shadows = shadows
        self._recorder = recorder
        self._executor = executor

    async def report(self, name: str, confidence: float = 0.95, baseline: int | None = None) -> dict[str, Any]:
        """The report as JSON: per-version rows, pairwise comparisons with a verdict each."""
        model = self._manager.model(name)
        versions = experiment_versions(model, self._manager.serving_default(name))
        feedback = await asyncio.get_running_loop().run_in_executor(self._executor, self._feedback, name)
        observations = [self._observe(model, version, feedback.get(version, [])) for version in versions]
        report = build_report(name, observations, confidence=confidence, baseline=baseline)
        document = report.to_dict()
        document["versions_compared"] = versions
        document["feedback_rows"] = sum(len(rows) for rows in feedback.values())
        return document

    def _feedback(self, name: str) -> dict[int, list[FeedbackRecord]]:
        """Stored feedback with a known version, grouped by version (blocking: run in the executor)."""
        grouped: dict[int, list[FeedbackRecord]] = {}
        cursor, seen = 0, 0
        while seen < MAX_FEEDBACK_ROWS:
            rows = self._registry.read_feedback(name, after_id=cursor, limit=_PAGE)
            for row in rows:
                if row.version is not None:
                    grouped.setdefault(row.version, []).append(row)
            seen += len(rows)
            if len(rows) < _PAGE:
                break
            cursor = rows[-1].id
        return grouped

    def _observe(self, model: CatalogModel, version: int, feedback: list[FeedbackRecord]) -> VersionObservations:
        stats = self._metrics.versions.get((model.name, str(version)))
        requests = errors = 0
        latency = None
        if stats is not None:
            requests = sum(stats.outcomes.values())
            errors = sum(stats.outcomes[key] for key in _ERRORS)
            counts = stats.latency.counts
            quantiles = [histogram_quantile(LATENCY_BUCKETS, counts, q) for q in (0.5, 0.95, 0.99)]
            if quantiles[0] is not None:
                latency = Latency(*(float(q or 0.0) for q in quantiles))
        distribution = self._recorder.distribution(model.name, version)
        predictions = None
        if "count" in distribution:
            predictions = NumericSummary(
                distribution["count"],
                distribution["mean"],
                distribution["variance"],
                distribution["min"],
                distribution["max"],
            )
        shadow = self._shadows.stats.get((model.name, version))
        labelled = correct = 0
        absolute: list[float] = []
        for row in feedback:
            if row.label is None or row.prediction is None:
                continue
            if isinstance(row.prediction, float) and _finite(row.label):
                absolute.append(abs(float(row.label) - row.prediction))
            else:
                labelled += 1
                correct += row.label == row.prediction
        return VersionObservations(
            version=version,
            aliases=tuple(model.aliases_of(version)),
            requests=requests,
            errors=errors,
            latency=latency,
            class_counts=distribution.get("classes"),
            predictions=predictions,
            shadow_comparisons=shadow.compared if shadow is not None else 0,
            shadow_agreements=shadow.agreed if shadow is not None else 0,
            labelled=labelled,
            correct=correct,
            absolute_errors=NumericSummary.from_values(absolute) if absolute else None,
            squared_errors=NumericSummary.from_values([e * e for e in absolute]) if absolute else None,
        )


def _finite(value: Any) -> bool:
    return not isinstance(value, bool) and isinstance(value, int | float) and math.isfinite(value)
