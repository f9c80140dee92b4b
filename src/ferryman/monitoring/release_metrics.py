"""Metric families of versions in production: shadow copies and bandit rewards.

Built at scrape time from plain numbers the engine hands over (the monitoring layer does not
know the engine's classes). Names are documented in ``docs/metrics.md``.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily, Metric

from ferryman.monitoring.metrics import Histogram

__all__ = ["ShadowView", "release_families"]


@dataclass(frozen=True, slots=True)
class ShadowView:
    """What the collector reads from one shadow version."""

    model: str
    version: str
    ok: int
    errors: int
    dropped: int
    compared: int
    agreed: int
    latency: Histogram


def release_families(shadows: Iterable[ShadowView], bandit_rewards: int) -> Iterator[Metric]:
    """``ferryman_shadow_*`` per shadow version, and ``ferryman_bandit_rewards_total``."""
    labels = ["model", "version"]
    requests = CounterMetricFamily(
        "ferryman_shadow_requests", "Shadow copies of requests by outcome.", labels=[*labels, "outcome"]
    )
    comparisons = CounterMetricFamily(
        "ferryman_shadow_comparisons",
        "Shadow answers compared with the primary's, by whether the decision agreed.",
        labels=[*labels, "result"],
    )
    latency = HistogramMetricFamily(
        "ferryman_shadow_duration_seconds", "Time a shadow copy took, in seconds.", labels=labels
    )
    for view in shadows:
        key = [view.model, view.version]
        requests.add_metric([*key, "ok"], view.ok)
        requests.add_metric([*key, "failed"], view.errors)
        requests.add_metric([*key, "dropped"], view.dropped)
        comparisons.add_metric([*key, "agree"], view.agreed)
        comparisons.add_metric([*key, "disagree"], view.compared - view.agreed)
        latency.add_metric(key, view.latency.cumulative(), view.latency.total)
    rewards = CounterMetricFamily("ferryman_bandit_rewards", "Feedback rewards applied to traffic bandits.")
    rewards.add_metric([], bandit_rewards)
    yield from (requests, comparisons, latency, rewards)
