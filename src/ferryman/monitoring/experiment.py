"""Experiment reports: the versions of a traffic policy side by side, and whether one is really better.

Input is one :class:`VersionObservations` per version (gathered from metrics, shadow comparisons and
feedback); :func:`build_report` returns an :class:`ExperimentReport` whose ``to_dict()`` is plain JSON.

Per version: requests, error rate, latency quantiles, the prediction distribution, shadow
agreement, and — from feedback — accuracy with a Wilson score interval (classification), or MAE and
RMSE with Student-t intervals on the mean absolute / squared error (regression).

Each version is compared with the baseline (the ``production`` version, else the first):

- accuracy and error rate: two-sided two-proportion z-test with the pooled proportion;
- regression error: Welch's t-test on the absolute errors (on the squared errors when only those
  are known).

A verdict sentence says which is better at the report's confidence (default 0.95), or how many
more labelled requests per version would detect the observed difference (for a zero difference: one
point of accuracy or error rate, or 5% of the baseline's error) at power 0.8 with the standard
sample-size formulas (Fleiss's for two proportions, without continuity correction).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from statistics import NormalDist

import numpy as np

from ferryman.errors import InvalidInput, NotFound

__all__ = [
    "Comparison",
    "ExperimentReport",
    "Interval",
    "Latency",
    "MetricComparison",
    "NumericSummary",
    "VersionObservations",
    "VersionRow",
    "build_report",
    "mean_interval",
    "sample_size_two_means",
    "sample_size_two_proportions",
    "two_proportion_test",
    "welch_test",
    "wilson_interval",
]

POWER = 0.8
_STANDARD_NORMAL = NormalDist()


@dataclass(frozen=True, slots=True)
class Latency:
    """Latency quantiles in seconds."""

    p50: float
    p95: float
    p99: float

    @classmethod
    def from_samples(cls, samples: Sequence[float]) -> Latency | None:
        """Quantiles of raw samples (linear interpolation); None without samples."""
        if not samples:
            return None
        p50, p95, p99 = np.percentile(np.asarray(samples, dtype=np.float64), [50, 95, 99])
        return cls(float(p50), float(p95), float(p99))


@dataclass(frozen=True, slots=True)
class NumericSummary:
    """Count, mean and sample variance (n - 1 denominator) of some values, with their range when known."""

    count: int
    mean: float
    variance: float
    minimum: float | None = None
    maximum: float | None = None

    @classmethod
    def from_values(cls, values: Sequence[float]) -> NumericSummary:
        """Summarise raw values (the variance is 0 with fewer than two)."""
        data = np.asarray(values, dtype=np.float64)
        if data.size == 0:
            return cls(0, 0.0, 0.0)
        variance = float(data.var(ddof=1)) if data.size > 1 else 0.0
        return cls(int(data.size), float(data.mean()), variance, float(data.min()), float(data.max()))


@dataclass(frozen=True, slots=True)
class VersionObservations:
    """What was observed for one version during the experiment.

    ``labelled``/``correct`` are classification feedback; regression feedback is the summary of the
    absolute and/or squared errors of the labelled requests.
    """

    version: int
    aliases: tuple[str, ...] = ()
    requests: int = 0
    errors: int = 0
    latency: Latency | None = None
    class_counts: Mapping[str, int] | None = None
    predictions: NumericSummary | None = None
    shadow_comparisons: int = 0
    shadow_agreements: int = 0
    labelled: int = 0
    correct: int = 0
    absolute_errors: NumericSummary | None = None
    squared_errors: NumericSummary | None = None


@dataclass(frozen=True, slots=True)
class Interval:
    """A two-sided confidence interval."""

    low: float
    high: float


@dataclass(frozen=True, slots=True)
class VersionRow:
    """One version's line of the report."""

    version: int
    aliases: tuple[str, ...]
    requests: int
    error_rate: float | None
    latency: Latency | None
    prediction_distribution: dict[str, float] | None
    predictions: NumericSummary | None
    shadow_agreement: float | None
    shadow_comparisons: int
    labelled: int
    accuracy: float | None = None
    accuracy_interval: Interval | None = None
    mae: float | None = None
    mae_interval: Interval | None = None
    rmse: float | None = None
    rmse_interval: Interval | None = None


@dataclass(frozen=True, slots=True)
class MetricComparison:
    """One significance test of a version against the baseline.

    ``statistic`` is z or Welch's t (None when infinite: zero variance and different means).
    ``required_per_version`` samples per version would detect ``detectable_difference`` at power
    0.8; ``more_per_version`` is how many that is beyond the smaller side's count now.
    """

    metric: str
    baseline_value: float
    candidate_value: float
    baseline_count: int
    candidate_count: int
    statistic: float | None
    p_value: float
    significant: bool
    detectable_difference: float
    required_per_version: int
    more_per_version: int


@dataclass(frozen=True, slots=True)
class Comparison:
    """A version against the baseline: the feedback test and the error-rate test, each with a verdict."""

    version: int
    baseline: int
    verdict: str
    error_rate_verdict: str
    feedback: MetricComparison | None = None
    error_rate: MetricComparison | None = None


@dataclass(frozen=True, slots=True)
class ExperimentReport:
    """The versions of a model's experiment side by side, and each compared with the baseline."""

    model: str
    confidence: float
    baseline: int
    versions: tuple[VersionRow, ...]
    comparisons: tuple[Comparison, ...] = field(default=())

    def to_dict(self) -> dict[str, object]:
        """The report as plain JSON-serialisable data."""
        return asdict(self)


def build_report(
    model: str,
    observations: Sequence[VersionObservations],
    *,
    confidence: float = 0.95,
    baseline: int | None = None,
) -> ExperimentReport:
    """Compare every observed version with the baseline (``baseline``, else ``production``, else the first)."""
    if isinstance(confidence, bool) or not isinstance(confidence, int | float) or not 0 < confidence < 1:
        raise InvalidInput("confidence must be a number between 0 and 1 (exclusive)")
    if not observations:
        raise InvalidInput("observations must name at least one version")
    seen: set[int] = set()
    for i, item in enumerate(observations):
        _check(item, f"observations[{i}]")
        if item.version in seen:
            raise InvalidInput(f"observations[{i}].version {item.version} appears twice")
        seen.add(item.version)
    if baseline is None:
        base = next((o for o in observations if "production" in o.aliases), observations[0])
    else:
        found = [o for o in observations if o.version == baseline]
        if not found:
            raise NotFound(f"baseline version {baseline} is not among the observed versions")
        base = found[0]
    comparisons = tuple(_compare(base, o, confidence) for o in observations if o is not base)
    rows = tuple(_row(o, confidence) for o in observations)
    return ExperimentReport(model, float(confidence), base.version, rows, comparisons)


def two_proportion_test(x1: int, n1: int, x2: int, n2: int) -> tuple[float, float]:
    """Two-sided two-proportion z-test with the pooled proportion: (z, p-value); z > 0 when x2/n2 > x1/n1."""
    pooled = (x1 + x2) / (n1 + n2)
    se = math.sqrt(pooled * (1 - pooled) * (1 / n1 + 1 / n2))
    if se == 0:
        return 0.0, 1.0  # both all successes or all failures: identical
    z = (x2 / n2 - x1 / n1) / se
    return z, math.erfc(abs(z) / math.sqrt(2))


def welch_test(a: NumericSummary, b: NumericSummary) -> tuple[float, float, float]:
    """Welch's unequal-variance t-test of b's mean against a's: (t, degrees of freedom, two-sided p-value).

    Needs at least two values on each side. With both variances zero, t is 0 (p = 1) for equal
    means and ±inf (p = 0) otherwise.
    """
    from scipy import stats

    va, vb = a.variance / a.count, b.variance / b.count
    difference = b.mean - a.mean
    if va + vb == 0:
        if difference == 0:
            return 0.0, float(a.count + b.count - 2), 1.0
        return math.copysign(math.inf, difference), float(a.count + b.count - 2), 0.0
    t = difference / math.sqrt(va + vb)
    dof = (va + vb) ** 2 / (va**2 / (a.count - 1) + vb**2 / (b.count - 1))
    return t, dof, float(2 * stats.t.sf(abs(t), dof))


def wilson_interval(successes: int, trials: int, confidence: float) -> Interval:
    """Wilson score interval for a proportion (sound at small n and at 0% or 100%)."""
    z = _STANDARD_NORMAL.inv_cdf(1 - (1 - confidence) / 2)
    p = successes / trials
    denominator = 1 + z * z / trials
    centre = (p + z * z / (2 * trials)) / denominator
    half = z * math.sqrt(p * (1 - p) / trials + z * z / (4 * trials * trials)) / denominator
    low = 0.0 if successes == 0 else max(0.0, centre - half)  # exact ends, not 1e-17 of rounding
    high = 1.0 if successes == trials else min(1.0, centre + half)
    return Interval(low, high)


def mean_interval(summary: NumericSummary, confidence: float) -> Interval | None:
    """Student-t interval for a mean; None with fewer than two values."""
    if summary.count < 2:
        return None
    from scipy import stats

    half = float(stats.t.ppf(1 - (1 - confidence) / 2, summary.count - 1)) * math.sqrt(summary.variance / summary.count)
    return Interval(summary.mean - half, summary.mean + half)


def sample_size_two_proportions(p1: float, p2: float, *, alpha: float = 0.05, power: float = POWER) -> int:
    """Per-group sample size to tell p1 from p2 with a two-sided test at ``alpha`` and ``power`` (Fleiss)."""
    z_alpha = _STANDARD_NORMAL.inv_cdf(1 - alpha / 2)
    z_beta = _STANDARD_NORMAL.inv_cdf(power)
    mean = (p1 + p2) / 2
    numerator = z_alpha * math.sqrt(2 * mean * (1 - mean)) + z_beta * math.sqrt(p1 * (1 - p1) + p2 * (1 - p2))
    return math.ceil(numerator**2 / (p1 - p2) ** 2)


def sample_size_two_means(
    variance1: float, variance2: float, difference: float, *, alpha: float = 0.05, power: float = POWER
) -> int:
    """Per-group sample size to detect ``difference`` between two means (normal approximation), at least 2."""
    if difference == 0 or variance1 + variance2 == 0:
        return 2
    z = _STANDARD_NORMAL.inv_cdf(1 - alpha / 2) + _STANDARD_NORMAL.inv_cdf(power)
    return max(2, math.ceil(z * z * (variance1 + variance2) / difference**2))


def _check(item: VersionObservations, where: str) -> None:
    pairs = [("requests", item.requests, None), ("errors", item.errors, ("requests", item.requests))]
    pairs += [("labelled", item.labelled, None), ("correct", item.correct, ("labelled", item.labelled))]
    pairs += [("shadow_comparisons", item.shadow_comparisons, None)]
    pairs += [("shadow_agreements", item.shadow_agreements, ("shadow_comparisons", item.shadow_comparisons))]
    for name, value, limit in pairs:
        if value < 0:
            raise InvalidInput(f"{where}.{name} must not be negative")
        if limit is not None and value > limit[1]:
            raise InvalidInput(f"{where}.{name} must not exceed {where}.{limit[0]}")
    for name, summary in [("absolute_errors", item.absolute_errors), ("squared_errors", item.squared_errors)]:
        if summary is not None and (summary.count < 0 or not summary.variance >= 0 or not math.isfinite(summary.mean)):
            raise InvalidInput(f"{where}.{name} needs a count >= 0, a finite mean and a variance >= 0")


def _row(item: VersionObservations, confidence: float) -> VersionRow:
    shares = None
    if item.class_counts:
        total = sum(item.class_counts.values())
        shares = {label: count / total for label, count in sorted(item.class_counts.items())} if total else None
    accuracy = accuracy_interval = mae = mae_interval = rmse = rmse_interval = None
    if item.labelled:
        accuracy = item.correct / item.labelled
        accuracy_interval = wilson_interval(item.correct, item.labelled, confidence)
    if item.absolute_errors is not None and item.absolute_errors.count:
        mae, mae_interval = item.absolute_errors.mean, mean_interval(item.absolute_errors, confidence)
    if item.squared_errors is not None and item.squared_errors.count:
        rmse = math.sqrt(max(item.squared_errors.mean, 0.0))
        mse_interval = mean_interval(item.squared_errors, confidence)
        if mse_interval is not None:
            rmse_interval = Interval(math.sqrt(max(mse_interval.low, 0.0)), math.sqrt(max(mse_interval.high, 0.0)))
    return VersionRow(
        version=item.version,
        aliases=item.aliases,
        requests=item.requests,
        error_rate=item.errors / item.requests if item.requests else None,
        latency=item.latency,
        prediction_distribution=shares,
        predictions=item.predictions,
        shadow_agreement=item.shadow_agreements / item.shadow_comparisons if item.shadow_comparisons else None,
        shadow_comparisons=item.shadow_comparisons,
        labelled=item.labelled,
        accuracy=accuracy,
        accuracy_interval=accuracy_interval,
        mae=mae,
        mae_interval=mae_interval,
        rmse=rmse,
        rmse_interval=rmse_interval,
    )


def _compare(base: VersionObservations, item: VersionObservations, confidence: float) -> Comparison:
    alpha = 1 - confidence
    b, c = f"v{base.version}", f"v{item.version}"
    level = f"{confidence * 100:g}% confidence"
    if not base.requests or not item.requests:
        missing = [name for name, o in ((b, base), (c, item)) if not o.requests]
        error_test, error_verdict = None, "no requests yet" + (f" for {missing[0]}" if len(missing) == 1 else "")
    else:
        error_test = _proportions("error rate", base.errors, base.requests, item.errors, item.requests, alpha)
        error_verdict = _verdict(error_test, b, c, level, lower_is_better=True, unit="requests")
    feedback: MetricComparison | None = None
    if base.labelled or item.labelled:
        if base.labelled and item.labelled:
            feedback = _proportions("accuracy", base.correct, base.labelled, item.correct, item.labelled, alpha)
            verdict = _verdict(feedback, b, c, level, lower_is_better=False, unit="labelled requests")
        else:
            verdict = f"no feedback yet for {b if not base.labelled else c}"
        return Comparison(item.version, base.version, verdict, error_verdict, feedback, error_test)
    for metric, x, y in (
        ("MAE", base.absolute_errors, item.absolute_errors),
        ("MSE", base.squared_errors, item.squared_errors),
    ):
        if x is None and y is None:
            continue
        if x is None or y is None or x.count < 2 or y.count < 2:
            verdict = f"not enough feedback yet: {metric} needs at least 2 labelled requests per version"
        else:
            feedback = _means(metric, x, y, alpha)
            verdict = _verdict(feedback, b, c, level, lower_is_better=True, unit="labelled requests")
        return Comparison(item.version, base.version, verdict, error_verdict, feedback, error_test)
    return Comparison(item.version, base.version, "no feedback yet", error_verdict, None, error_test)


def _proportions(metric: str, x1: int, n1: int, x2: int, n2: int, alpha: float) -> MetricComparison:
    z, p = two_proportion_test(x1, n1, x2, n2)
    p1, p2 = x1 / n1, x2 / n2
    target = p2 if p1 != p2 else (p1 + 0.01 if p1 + 0.01 <= 1 else p1 - 0.01)
    required = sample_size_two_proportions(p1, target, alpha=alpha)
    more = max(0, required - min(n1, n2))
    return MetricComparison(metric, p1, p2, n1, n2, z, p, p < alpha, abs(target - p1), required, more)


def _means(metric: str, x: NumericSummary, y: NumericSummary, alpha: float) -> MetricComparison:
    t, _, p = welch_test(x, y)
    difference = abs(y.mean - x.mean) or 0.05 * abs(x.mean)
    required = sample_size_two_means(x.variance, y.variance, difference, alpha=alpha)
    more = max(0, required - min(x.count, y.count))
    statistic = t if math.isfinite(t) else None
    return MetricComparison(
        metric, x.mean, y.mean, x.count, y.count, statistic, p, p < alpha, difference, required, more
    )


def _verdict(test: MetricComparison, b: str, c: str, level: str, *, lower_is_better: bool, unit: str) -> str:
    values = f"{test.metric} {test.candidate_value:.3g} vs {test.baseline_value:.3g}, {_p(test.p_value)}"
    difference = f"a difference of {test.detectable_difference:.3g} in {test.metric}"
    if test.significant:
        better = (test.candidate_value < test.baseline_value) == lower_is_better
        return f"{c} is {'better' if better else 'worse'} than {b} at {level} ({values})"
    if test.more_per_version:
        return (
            f"no significant difference yet: about {test.more_per_version} more {unit} per version needed"
            f" to detect {difference} ({values})"
        )
    enough = f"{test.required_per_version} {unit} per version are enough to detect {difference}"
    return f"no significant difference ({values}): {enough}"


def _p(p: float) -> str:
    return "p<0.001" if p < 0.001 else f"p={p:.3f}"
