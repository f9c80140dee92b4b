"""Drift detection: shifts are flagged within one window, in-distribution traffic rarely is, memory is fixed."""

from __future__ import annotations

import json
import tracemalloc
from collections.abc import Callable

import numpy as np
import pytest
from scipy import stats

from ferryman.errors import InvalidInput
from ferryman.monitoring.drift import CategoryEncoder, DriftMonitor, DriftReport, benjamini_hochberg, psi
from ferryman.monitoring.profile import build_profile

Rng = np.random.Generator
SIGNIFICANCE = 0.01
CATEGORIES = np.array([f"c{i}".encode() for i in range(12)], dtype=object)
SHARES = np.array([0.3, 0.2, 0.15, 0.1, 0.08, 0.06, 0.04, 0.03, 0.02, 0.01, 0.005, 0.005])


def _numeric(rng: Rng, rows: int, shift: float = 0.0, column: int = 7) -> np.ndarray:
    """20 features of five shapes: normal, skewed, discrete, bounded, heavy-tailed."""
    blocks = [
        rng.normal(size=rows),
        rng.exponential(size=rows),
        rng.integers(0, 5, size=rows).astype(np.float64),
        rng.uniform(size=rows),
        rng.lognormal(size=rows),
    ]
    x = np.column_stack(blocks * 4)
    x[:, column] += shift * x[:, column].std()
    return x


def _categorical(rng: Rng, rows: int, shares: np.ndarray = SHARES) -> np.ndarray:
    return CATEGORIES[rng.choice(len(shares), size=rows, p=shares / shares.sum())]


def _labels(x: np.ndarray) -> np.ndarray:
    return (x[:, 0] > 0).astype(np.int64) + (x[:, 1] > 1).astype(np.int64)


def _report(monitor: DriftMonitor) -> DriftReport:
    report = monitor.report()
    json.dumps(report.to_dict(), allow_nan=False)
    return report


def test_a_half_std_shift_in_one_of_20_features_is_flagged_within_one_window() -> None:
    rng = np.random.default_rng(10)
    reference = _numeric(rng, 5000)
    monitor = DriftMonitor(build_profile({"input": reference}, source="sample"), window_rows=1000)
    for column in (0, 7, 13):  # normal, discrete, skewed
        window = _numeric(rng, 1000, shift=0.5, column=column)
        monitor.observe({"input": window})
        report = _report(monitor)
        assert report.verdict == "drift"
        assert report.drifted == (f"input[{column}]",)
        flagged = next(f for f in report.features if f.drifted)
        assert flagged.test == "ks" and flagged.p_adjusted is not None and flagged.p_adjusted < 1e-6
        assert report.score is not None and flagged.psi == report.score and flagged.psi > 0.1


def _false_alarms(trials: int, make: Callable[[Rng, int], dict[str, dict[str, np.ndarray]]], seed: int) -> tuple:
    """Fresh reference and fresh window per trial: (verdict false-alarm rate, raw per-test rates at 0.01, 0.05)."""
    rng = np.random.default_rng(seed)
    alarms = 0
    p_values: list[float] = []
    for _ in range(trials):
        reference, window = make(rng, 2000), make(rng, 1000)
        monitor = DriftMonitor(build_profile(reference["in"], reference["out"], source="sample"))
        monitor.observe(window["in"], window["out"])
        report = _report(monitor)
        assert report.verdict != "not enough data"
        alarms += report.verdict == "drift"
        p_values += [f.p_value for f in (*report.features, *report.predictions) if f.p_value is not None]
    p = np.array(p_values)
    return alarms / trials, float(np.mean(p < 0.01)), float(np.mean(p < 0.05))


def test_numeric_false_alarm_rate_stays_at_or_below_the_significance() -> None:
    def make(rng: Rng, rows: int) -> dict[str, dict[str, np.ndarray]]:
        x = _numeric(rng, rows)
        return {"in": {"input": x}, "out": {"score": x[:, 0] * 2 + x[:, 3]}}

    verdict_rate, at_01, at_05 = _false_alarms(200, make, seed=11)
    assert verdict_rate <= SIGNIFICANCE + 0.005
    assert at_01 <= 0.01 + 0.003  # 4,200 tests: the KS test's own calibration, before any correction
    assert at_05 <= 0.05 + 0.007


def test_categorical_false_alarm_rate_stays_at_or_below_the_significance() -> None:
    def make(rng: Rng, rows: int) -> dict[str, dict[str, np.ndarray]]:
        x = rng.normal(size=(rows, 2))
        columns = np.column_stack([_categorical(rng, rows) for _ in range(5)])
        return {"in": {"city": columns, "x": x}, "out": {"label": _labels(x)}}

    verdict_rate, at_01, at_05 = _false_alarms(200, make, seed=12)
    assert verdict_rate <= SIGNIFICANCE + 0.01
    assert at_01 <= 0.01 + 0.006  # 1,600 tests; a goodness-of-fit test that trusted the reference counts gives ~0.07
    assert at_05 <= 0.05 + 0.012


def test_sliding_windows_against_one_large_reference_rarely_alarm() -> None:
    rng = np.random.default_rng(13)
    x = _numeric(rng, 50_000)
    profile = build_profile({"input": x, "city": _categorical(rng, 50_000)}, {"label": _labels(x)}, source="sample")
    monitor = DriftMonitor(profile, window_rows=1000, significance=SIGNIFICANCE)
    alarms = 0
    for _ in range(200):
        x = _numeric(rng, 1000)
        for start in range(0, 1000, 100):  # requests of 100 rows
            part = x[start : start + 100]
            monitor.observe({"input": part, "city": _categorical(rng, 100)}, {"label": _labels(part)})
        alarms += _report(monitor).verdict == "drift"
    assert alarms / 200 <= SIGNIFICANCE + 0.005


def test_categorical_shift_and_new_category_are_flagged() -> None:
    rng = np.random.default_rng(14)
    profile = build_profile({"city": _categorical(rng, 3000)}, source="sample")
    monitor = DriftMonitor(profile)
    shifted = SHARES.copy()
    shifted[:2] = shifted[1::-1]  # the two most frequent swap places
    monitor.observe({"city": _categorical(rng, 1000, shifted)})
    report = _report(monitor)
    assert report.verdict == "drift" and report.drifted == ("city",) and report.features[0].test == "chi2"

    monitor.observe({"city": np.array([b"brand-new"] * 30 + list(_categorical(rng, 970)), dtype=object)})
    report = _report(monitor)
    assert report.verdict == "drift" and report.drifted == ("city",)


def test_a_prediction_shift_is_flagged_when_inputs_look_the_same() -> None:
    rng = np.random.default_rng(15)
    x = _numeric(rng, 5000)
    profile = build_profile({"input": x}, {"label": _labels(x), "score": x[:, 0]}, source="sample")
    monitor = DriftMonitor(profile)
    window = _numeric(rng, 1000)
    labels = _labels(window)
    labels[rng.random(1000) < 0.2] = 2  # the model now says "2" far more often
    monitor.observe({"input": window}, {"label": labels, "score": window[:, 0] + 0.5})
    report = _report(monitor)
    assert report.verdict == "drift"
    assert report.drifted == ("label", "score")
    assert report.to_dict()["drifted_predictions"] == ["label", "score"]
    assert not any(f.drifted for f in report.features)


def test_not_enough_data_below_min_rows() -> None:
    rng = np.random.default_rng(16)
    monitor = DriftMonitor(build_profile({"input": _numeric(rng, 500)}, source="sample"), min_rows=100)
    assert _report(monitor).verdict == "not enough data"
    monitor.observe({"input": _numeric(rng, 99, shift=3.0)})
    report = _report(monitor)
    assert report.verdict == "not enough data" and report.rows == 99 and report.score is None
    assert all(f.note == "not enough data" and f.p_value is None for f in report.features)
    assert report.to_dict()["features"]["input[0]"]["p_value"] is None
    monitor.observe({"input": _numeric(rng, 1, shift=3.0)})
    assert _report(monitor).verdict == "drift"


def test_the_window_slides_past_old_rows() -> None:
    rng = np.random.default_rng(17)
    monitor = DriftMonitor(build_profile({"input": _numeric(rng, 5000)}, source="sample"), window_rows=500)
    monitor.observe({"input": _numeric(rng, 500, shift=1.0)})
    assert _report(monitor).verdict == "drift"
    for row in _numeric(rng, 500):  # one row per call: the ring wraps one row at a time
        monitor.observe({"input": row[None, :]})
    report = _report(monitor)
    assert report.verdict == "no drift" and report.rows == 500 and report.rows_observed == 1000
    big = np.vstack([_numeric(rng, 700, shift=1.0), _numeric(rng, 500)])  # one batch larger than the window
    monitor.observe({"input": big})
    assert _report(monitor).verdict == "no drift"


def test_memory_stays_fixed_after_100_000_rows() -> None:
    rng = np.random.default_rng(18)
    x = _numeric(rng, 2000)
    profile = build_profile({"input": x, "city": _categorical(rng, 2000)}, {"label": _labels(x)}, source="sample")
    monitor = DriftMonitor(profile, window_rows=1000)
    size = monitor.nbytes
    assert size == 1000 * 22  # one byte per value: 20 + 1 inputs, 1 output
    batch = _numeric(rng, 37)
    inputs, outputs = {"input": batch, "city": _categorical(rng, 37)}, {"label": _labels(batch)}
    for _ in range(100):
        monitor.observe(inputs, outputs)
    monitor.report()
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    for _ in range(2700):  # 100,000 rows in all
        monitor.observe(inputs, outputs)
    grown = tracemalloc.get_traced_memory()[0] - before
    tracemalloc.stop()
    assert monitor.rows_observed == 2800 * 37 and monitor.nbytes == size
    assert grown < 16_384


def test_report_json_shape() -> None:
    rng = np.random.default_rng(19)
    x = _numeric(rng, 1000)
    monitor = DriftMonitor(build_profile({"input": x}, {"label": _labels(x)}, source="sample"))
    monitor.observe({"input": x[:200]}, {"label": _labels(x[:200])})
    data = monitor.report(quality={"rows": 200}).to_dict()
    assert set(data) == {
        "verdict", "score", "rows", "rows_observed", "window_rows", "min_rows", "significance", "psi_threshold",
        "correction", "source", "drifted_features", "drifted_predictions", "features", "predictions", "quality",
    }  # fmt: skip
    assert data["correction"] == "benjamini-hochberg" and data["quality"] == {"rows": 200}
    assert set(data["features"]["input[0]"]) == {
        "kind", "rows", "missing_rate", "reference_missing_rate", "test", "statistic", "p_value", "p_adjusted",
        "psi", "drifted", "psi_exceeded", "note",
    }  # fmt: skip
    assert data["predictions"]["label"]["test"] == "chi2"


def test_missing_values_are_left_out_of_the_tests_and_reported() -> None:
    rng = np.random.default_rng(20)
    monitor = DriftMonitor(build_profile({"x": rng.normal(size=2000)}, source="sample"))
    window = rng.normal(size=1000)
    window[:300] = np.nan
    monitor.observe({"x": window})
    result = _report(monitor).features[0]
    assert result.rows == 700 and result.missing_rate == pytest.approx(0.3) and result.reference_missing_rate == 0
    assert not result.drifted


def test_benjamini_hochberg_and_psi() -> None:
    p = [0.01, 0.04, 0.03, 0.2, 0.001]
    assert benjamini_hochberg(p) == pytest.approx(stats.false_discovery_control(p))
    assert benjamini_hochberg([]) == []
    assert psi(np.full(10, 0.1), np.full(10, 0.1)) == 0.0
    expected = 0.5 * np.log(2) + (0.5 - 1e-4) * np.log(0.5 / 1e-4)  # the empty bin counts as 1e-4
    assert psi(np.array([0.5, 0.5]), np.array([1.0, 0.0])) == pytest.approx(expected)


@pytest.mark.parametrize(
    "options",
    [{"window_rows": 0}, {"min_rows": 0}, {"min_rows": 2000}, {"significance": 1.0}, {"psi_threshold": 0}],
)
def test_refuses_bad_settings(options: dict[str, float]) -> None:
    profile = build_profile({"x": np.arange(10.0)}, source="sample")
    with pytest.raises(InvalidInput):
        DriftMonitor(profile, **options)  # type: ignore[arg-type]


def test_category_encoder_codes_every_kind_of_value() -> None:
    encoder = CategoryEncoder(["a", "b", "3", "true", "²", "-"])
    objects = np.array([b"a", "b", None, float("nan"), b"zz", 3, [1]], dtype=object)
    assert encoder.encode(objects).tolist() == [0, 1, 255, 255, 6, 2, 6]
    assert encoder.encode(np.array(["b", "q"])).tolist() == [1, 6]
    assert encoder.encode(np.array([3, 4, -1])).tolist() == [2, 6, 6]
    assert encoder.encode(np.array([True, False])).tolist() == [3, 6]
    assert CategoryEncoder([]).encode(np.array([1, 2])).tolist() == [0, 0]
