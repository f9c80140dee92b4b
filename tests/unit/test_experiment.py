"""Experiment reports: the statistics against scipy and textbook values, small-n edge cases, and the
verdict sentences."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from scipy import stats

from ferryman.errors import InvalidInput, NotFound
from ferryman.monitoring.experiment import (
    Latency,
    NumericSummary,
    VersionObservations,
    build_report,
    mean_interval,
    sample_size_two_means,
    sample_size_two_proportions,
    two_proportion_test,
    welch_test,
    wilson_interval,
)
from ferryman.serving.experiments import ExperimentRecorder, Served


def classified(version: int, labelled: int, correct: int) -> VersionObservations:
    return VersionObservations(version=version, requests=max(labelled, 1), labelled=labelled, correct=correct)


def verdict_of(*observations: VersionObservations, confidence: float = 0.95) -> str:
    report = build_report("iris", observations, confidence=confidence)
    return report.comparisons[0].verdict


# --- the statistics ------------------------------------------------------------------------------------


def test_two_proportion_z_test_matches_the_hand_computed_value_and_scipy() -> None:
    # 45/100 vs 60/100: pooled 0.525, se = sqrt(0.525 * 0.475 * (1/100 + 1/100)) = 0.070622, z = 2.1240
    z, p = two_proportion_test(45, 100, 60, 100)
    assert z == pytest.approx(2.1240, abs=1e-4)
    assert p == pytest.approx(0.03367, abs=1e-5)
    assert p == pytest.approx(2 * stats.norm.sf(z))
    z_down, p_down = two_proportion_test(60, 100, 45, 100)
    assert (z_down, p_down) == pytest.approx((-z, p))
    assert two_proportion_test(10, 10, 30, 30) == (0.0, 1.0)  # all correct on both sides
    assert two_proportion_test(0, 10, 0, 30) == (0.0, 1.0)


def test_welch_t_test_matches_scipy_on_raw_samples() -> None:
    rng = np.random.default_rng(3)
    a, b = rng.normal(1.0, 0.5, 40), rng.normal(1.3, 1.5, 25)
    t, dof, p = welch_test(NumericSummary.from_values(a.tolist()), NumericSummary.from_values(b.tolist()))
    expected = stats.ttest_ind(b, a, equal_var=False)
    assert t == pytest.approx(expected.statistic)
    assert p == pytest.approx(expected.pvalue)
    assert dof == pytest.approx(expected.df)


def test_welch_with_zero_variance_on_both_sides() -> None:
    same = NumericSummary(5, 2.0, 0.0)
    assert welch_test(same, same)[::2] == (0.0, 1.0)
    t, _, p = welch_test(same, NumericSummary(5, 1.0, 0.0))
    assert t == -math.inf and p == 0.0


def test_wilson_interval_matches_scipy_and_stays_inside_zero_and_one() -> None:
    for successes, trials in [(8, 10), (0, 10), (10, 10), (870, 1000), (1, 1)]:
        expected = stats.binomtest(successes, trials).proportion_ci(confidence_level=0.95, method="wilson")
        interval = wilson_interval(successes, trials, 0.95)
        assert (interval.low, interval.high) == pytest.approx((expected.low, expected.high))
    assert wilson_interval(0, 10, 0.95).low == 0.0 and wilson_interval(10, 10, 0.95).high == 1.0
    assert wilson_interval(0, 10, 0.95).high == pytest.approx(0.2775, abs=1e-4)  # textbook value


def test_mean_interval_is_students_t() -> None:
    values = [2.0, 3.5, 1.0, 4.0, 2.5]
    summary = NumericSummary.from_values(values)
    interval = mean_interval(summary, 0.9)
    assert interval is not None
    low, high = stats.t.interval(0.9, len(values) - 1, loc=np.mean(values), scale=stats.sem(values))
    assert (interval.low, interval.high) == pytest.approx((low, high))
    assert mean_interval(NumericSummary.from_values([1.0]), 0.95) is None


def test_sample_sizes_match_textbook_values_and_reach_the_power() -> None:
    assert sample_size_two_proportions(0.5, 0.6) == 388  # Fleiss, no continuity correction
    assert sample_size_two_means(1.0, 1.0, 0.5) == 63  # 2 (1.96 + 0.8416)^2 / 0.25 = 62.8
    z_alpha = stats.norm.ppf(0.975)

    def power(p1: float, p2: float, n: int) -> float:
        mean = (p1 + p2) / 2
        se0, se1 = math.sqrt(2 * mean * (1 - mean) / n), math.sqrt((p1 * (1 - p1) + p2 * (1 - p2)) / n)
        return float(stats.norm.cdf((abs(p1 - p2) - z_alpha * se0) / se1))

    for p1, p2 in [(0.87, 0.91), (0.5, 0.52), (1.0, 0.99), (0.0, 0.01)]:
        n = sample_size_two_proportions(p1, p2)
        assert power(p1, p2, n) >= 0.8 > power(p1, p2, n - 1)
    assert sample_size_two_means(0.0, 0.0, 1.0) == 2


# --- verdicts -----------------------------------------------------------------------------------------


def test_a_significantly_better_candidate() -> None:
    _, p = two_proportion_test(870, 1000, 910, 1000)
    verdict = verdict_of(classified(4, 1000, 870), classified(5, 1000, 910))
    assert verdict == f"v5 is better than v4 at 95% confidence (accuracy 0.91 vs 0.87, p={p:.3f})"
    assert p == pytest.approx(0.00426, abs=1e-5)


def test_a_significantly_worse_candidate_and_a_stricter_confidence() -> None:
    verdict = verdict_of(classified(4, 1000, 910), classified(5, 1000, 870))
    assert verdict.startswith("v5 is worse than v4 at 95% confidence (accuracy 0.87 vs 0.91, p=0.004)")
    strict = verdict_of(classified(4, 1000, 910), classified(5, 1000, 870), confidence=0.999)
    assert strict.startswith("no significant difference yet: about ")
    assert strict.endswith("(accuracy 0.87 vs 0.91, p=0.004)")


def test_too_few_labels_say_how_many_more_are_needed() -> None:
    needed = sample_size_two_proportions(0.87, 0.91)
    verdict = verdict_of(classified(4, 100, 87), classified(5, 100, 91))
    assert (
        needed == 960
    )  # ceil(959.33) = (1.96 sqrt(2 * 0.89 * 0.11) + 0.8416 sqrt(0.87 * 0.13 + 0.91 * 0.09))^2 / 0.04^2
    assert verdict == (
        "no significant difference yet: about 860 more labelled requests per version needed"
        " to detect a difference of 0.04 in accuracy (accuracy 0.91 vs 0.87, p=0.366)"
    )


def test_identical_versions_size_the_test_for_one_point() -> None:
    report = build_report("iris", [classified(4, 1000, 870), classified(5, 1000, 870)])
    test = report.comparisons[0].feedback
    assert test is not None and test.p_value == 1.0 and test.statistic == 0.0
    assert test.detectable_difference == pytest.approx(0.01)
    assert test.required_per_version == sample_size_two_proportions(0.87, 0.88)
    assert f"about {test.required_per_version - 1000} more labelled requests" in report.comparisons[0].verdict


def test_all_correct_on_both_sides() -> None:
    verdict = verdict_of(classified(4, 50, 50), classified(5, 50, 50))
    n = sample_size_two_proportions(1.0, 0.99)
    assert verdict == (
        f"no significant difference yet: about {n - 50} more labelled requests per version needed"
        " to detect a difference of 0.01 in accuracy (accuracy 1 vs 1, p=1.000)"
    )


def test_missing_feedback_and_requests() -> None:
    assert verdict_of(classified(4, 0, 0), classified(5, 0, 0)) == "no feedback yet"
    assert verdict_of(classified(4, 10, 9), classified(5, 0, 0)) == "no feedback yet for v5"
    empty = build_report("iris", [VersionObservations(4), VersionObservations(5)])
    row = empty.versions[0]
    assert row.requests == 0 and row.error_rate is None and row.accuracy is None and row.shadow_agreement is None
    assert empty.comparisons[0].error_rate_verdict == "no requests yet"
    assert empty.comparisons[0].verdict == "no feedback yet"
    one = build_report("iris", [VersionObservations(4, requests=3), VersionObservations(5)])
    assert one.comparisons[0].error_rate_verdict == "no requests yet for v5"


def test_error_rates_are_compared_too() -> None:
    base = VersionObservations(4, requests=20_000, errors=100)
    worse = VersionObservations(5, requests=20_000, errors=400)
    comparison = build_report("iris", [base, worse]).comparisons[0]
    assert comparison.error_rate_verdict.startswith("v5 is worse than v4 at 95% confidence (error rate 0.02 vs 0.005")
    clean = build_report("iris", [VersionObservations(4, requests=5_000), VersionObservations(5, requests=5_000)])
    n = sample_size_two_proportions(0.0, 0.01)
    assert clean.comparisons[0].error_rate_verdict == (
        f"no significant difference (error rate 0 vs 0, p=1.000): {n} requests per version are enough"
        " to detect a difference of 0.01 in error rate"
    )


def test_regression_feedback_uses_welch_on_absolute_errors() -> None:
    rng = np.random.default_rng(9)
    a, b = np.abs(rng.normal(0, 1.0, 400)), np.abs(rng.normal(0, 0.8, 400))
    base = VersionObservations(4, requests=400, absolute_errors=NumericSummary.from_values(a.tolist()))
    better = VersionObservations(5, requests=400, absolute_errors=NumericSummary.from_values(b.tolist()))
    report = build_report("house", [base, better])
    p = stats.ttest_ind(b, a, equal_var=False).pvalue
    assert report.comparisons[0].verdict == (
        f"v5 is better than v4 at 95% confidence (MAE {b.mean():.3g} vs {a.mean():.3g}, p<0.001)"
    )
    assert report.comparisons[0].feedback is not None
    assert report.comparisons[0].feedback.p_value == pytest.approx(p)
    row = report.versions[1]
    assert row.mae == pytest.approx(b.mean()) and row.mae_interval is not None
    assert row.mae_interval.low < row.mae < row.mae_interval.high


def test_regression_edge_cases() -> None:
    squared = [1.0, 4.0, 9.0, 0.0]
    only_squared = VersionObservations(4, requests=4, squared_errors=NumericSummary.from_values(squared))
    report = build_report("house", [only_squared, only_squared.__class__(5, requests=4, squared_errors=None)])
    assert report.versions[0].rmse == pytest.approx(math.sqrt(3.5))
    interval = report.versions[0].rmse_interval
    assert interval is not None and interval.low == 0.0  # the MSE interval's lower end is clamped at 0
    assert (
        report.comparisons[0].verdict == "not enough feedback yet: MSE needs at least 2 labelled requests per version"
    )
    exact = VersionObservations(4, requests=3, absolute_errors=NumericSummary(3, 0.5, 0.0))
    same = build_report(
        "house", [exact, VersionObservations(5, requests=3, absolute_errors=NumericSummary(3, 0.5, 0.0))]
    )
    feedback = same.comparisons[0].feedback
    assert feedback is not None and feedback.p_value == 1.0 and feedback.required_per_version == 2
    perfect = VersionObservations(5, requests=3, absolute_errors=NumericSummary(3, 0.0, 0.0))
    better = build_report("house", [exact, perfect]).comparisons[0]
    assert better.feedback is not None and better.feedback.statistic is None
    assert better.verdict == "v5 is better than v4 at 95% confidence (MAE 0 vs 0.5, p<0.001)"


# --- the report -----------------------------------------------------------------------------------------


def test_the_report_lists_every_version_and_is_plain_json() -> None:
    production = VersionObservations(
        4,
        aliases=("production",),
        requests=1_000,
        errors=5,
        latency=Latency.from_samples([0.001 * i for i in range(1, 101)]),
        class_counts={"setosa": 300, "versicolor": 700},
        labelled=200,
        correct=180,
    )
    candidate = VersionObservations(
        5,
        aliases=("candidate",),
        requests=100,
        predictions=NumericSummary.from_values([1.0, 2.0, 3.0]),
        shadow_comparisons=50,
        shadow_agreements=45,
        labelled=20,
        correct=19,
    )
    report = build_report("iris", [candidate, production])
    assert report.baseline == 4  # the production version, wherever it is listed
    assert [c.version for c in report.comparisons] == [5]
    rows = {row.version: row for row in report.versions}
    assert rows[4].prediction_distribution == {"setosa": 0.3, "versicolor": 0.7}
    assert rows[4].latency is not None and rows[4].latency.p50 == pytest.approx(0.0505)
    assert rows[4].error_rate == 0.005 and rows[4].accuracy == 0.9
    assert rows[5].shadow_agreement == 0.9 and rows[5].predictions == NumericSummary(3, 2.0, 1.0, 1.0, 3.0)
    data = json.loads(json.dumps(report.to_dict(), allow_nan=False))
    assert data["model"] == "iris" and data["baseline"] == 4 and data["confidence"] == 0.95
    assert data["versions"][1]["accuracy_interval"]["low"] == pytest.approx(
        stats.binomtest(180, 200).proportion_ci(method="wilson").low
    )
    assert data["comparisons"][0]["feedback"]["metric"] == "accuracy"
    assert build_report("iris", [candidate, production], baseline=5).baseline == 5


def test_summaries_from_raw_values() -> None:
    assert Latency.from_samples([]) is None
    assert NumericSummary.from_values([]) == NumericSummary(0, 0.0, 0.0)
    assert NumericSummary.from_values([2.0]) == NumericSummary(1, 2.0, 0.0, 2.0, 2.0)


@pytest.mark.parametrize(
    ("observations", "confidence", "message"),
    [
        ([VersionObservations(4)], 1.0, "confidence must be a number between 0 and 1"),
        ([VersionObservations(4)], 0, "confidence must be a number between 0 and 1"),
        ([], 0.95, "observations must name at least one version"),
        ([VersionObservations(4, requests=1, errors=2)], 0.95, "observations[0].errors must not exceed"),
        ([VersionObservations(4), VersionObservations(5, requests=-1)], 0.95, "observations[1].requests must not be"),
        ([VersionObservations(4, labelled=3, correct=4)], 0.95, "observations[0].correct must not exceed"),
        ([VersionObservations(4, shadow_agreements=1)], 0.95, "observations[0].shadow_agreements must not exceed"),
        ([VersionObservations(4), VersionObservations(4)], 0.95, "observations[1].version 4 appears twice"),
        (
            [VersionObservations(4, absolute_errors=NumericSummary(2, 1.0, -1.0))],
            0.95,
            "observations[0].absolute_errors needs",
        ),
    ],
)
def test_invalid_observations_name_the_field(
    observations: list[VersionObservations], confidence: float, message: str
) -> None:
    with pytest.raises(InvalidInput) as caught:
        build_report("iris", observations, confidence=confidence)
    assert message in str(caught.value)


def test_an_unknown_baseline_is_not_found() -> None:
    with pytest.raises(NotFound, match="baseline version 9"):
        build_report("iris", [VersionObservations(4)], baseline=9)


def test_the_ledger_remembers_labels_score_rows_and_bytes() -> None:
    recorder = ExperimentRecorder(capacity=2)
    recorder.remember("a", "m", 1, np.array([2]))
    recorder.remember("b", "m", 1, np.array([[0.25, 0.75]]))
    recorder.remember("c", "m", 2, np.array([b"\xff\xfe"], dtype=object))
    recorder.remember("d", "m", 2, np.array([1, 0]))  # several rows: the version, no prediction
    assert recorder.lookup("a") is None  # the oldest left the bounded ledger
    assert recorder.lookup("b") is None
    assert recorder.lookup("c") == Served("m", 2, "\ufffd\ufffd")
    assert recorder.lookup("d") == Served("m", 2, None)
