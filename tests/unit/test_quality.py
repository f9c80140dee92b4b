"""Data-quality counters: NaN, infinities, out-of-range values, unseen categories, rejected requests."""

from __future__ import annotations

import json

import numpy as np
import pytest

from ferryman.errors import InvalidInput
from ferryman.monitoring.profile import OTHER, build_profile
from ferryman.monitoring.quality import ISSUES, QualityCounters


def _profile() -> object:
    x = np.column_stack([np.linspace(0.0, 10.0, 101), np.linspace(-1.0, 1.0, 101)])
    colors = np.array([b"red", b"green", b"blue"] * 33 + [b"red", None], dtype=object)
    return build_profile({"input": x, "color": colors}, source="sample")


def test_counts_every_numeric_issue_per_feature() -> None:
    counters = QualityCounters(_profile(), range_tolerance=0.1)  # type: ignore[arg-type]
    x = np.array(
        [
            [np.nan, 0.0],
            [np.inf, np.nan],
            [-np.inf, 0.5],
            [-1.5, 1.1],  # -1.5 < 0 - 0.1 * 10: below; 1.1 within 1 + 0.1 * 2
            [11.5, 1.3],  # above; above
            [10.9, -1.19],  # within the tolerance on both sides
        ]
    )
    counters.observe({"input": x})
    snapshot = counters.snapshot()
    assert snapshot["rows"] == 6
    assert snapshot["features"]["input[0]"] == {
        "nan": 1, "inf": 2, "below_range": 1, "above_range": 1, "unseen_category": 0, "rejected": 0,
    }  # fmt: skip
    assert snapshot["features"]["input[1]"] == {
        "nan": 1, "inf": 0, "below_range": 0, "above_range": 1, "unseen_category": 0, "rejected": 0,
    }  # fmt: skip
    assert snapshot["totals"]["nan"] == 2 and snapshot["totals"]["above_range"] == 2
    json.dumps(snapshot, allow_nan=False)


def test_range_tolerance_zero_counts_anything_past_the_reference() -> None:
    counters = QualityCounters(_profile(), range_tolerance=0.0)  # type: ignore[arg-type]
    counters.observe({"input": np.array([[10.0001, 0.0], [10.0, -1.0], [-0.0001, 1.0]])})
    assert counters.snapshot()["features"]["input[0]"]["above_range"] == 1
    assert counters.snapshot()["features"]["input[0]"]["below_range"] == 1
    with pytest.raises(InvalidInput):
        QualityCounters(None, range_tolerance=-1)


def test_unseen_and_missing_categories() -> None:
    counters = QualityCounters(_profile())  # type: ignore[arg-type]
    counters.observe({"color": np.array([b"red", b"purple", b"purple", None, "blue", float("nan")], dtype=object)})
    color = counters.snapshot()["features"]["color"]
    assert color["unseen_category"] == 2 and color["nan"] == 2


def test_unseen_is_not_counted_when_the_reference_pooled_its_tail() -> None:
    cities = np.array([f"c{i}".encode() for i in range(150)] * 2, dtype=object)  # 150 > 100 named categories
    counters = QualityCounters(build_profile({"city": cities}, source="sample"))
    counters.observe({"city": np.array([b"c149", b"never-seen"], dtype=object)})
    assert counters.snapshot()["features"]["city"]["unseen_category"] == 0


def test_without_a_profile_only_nan_and_inf_are_counted() -> None:
    counters = QualityCounters(None)
    counters.observe({"x": np.array([[1e300, np.nan], [-1e300, np.inf]]), "t": np.array([b"a", None], dtype=object)})
    features = counters.snapshot()["features"]
    assert features["x[0]"] == dict.fromkeys(ISSUES, 0)
    assert features["x[1]"]["nan"] == 1 and features["x[1]"]["inf"] == 1
    assert features["t"]["nan"] == 1 and features["t"]["unseen_category"] == 0


def test_rejected_fields_are_counted_with_bounded_labels() -> None:
    counters = QualityCounters(_profile())  # type: ignore[arg-type]
    counters.rejected("input")
    counters.rejected("color")
    counters.rejected("input[1]")
    for i in range(500):
        counters.rejected(f"attacker-{i}")  # not in the profile: one shared label
    features = counters.snapshot()["features"]
    assert features["input"]["rejected"] == 1 and features["input[1]"]["rejected"] == 1
    assert features["color"]["rejected"] == 1
    assert features[OTHER]["rejected"] == 500
    assert len(features) == 5  # input[0], input[1], color, input, __other__

    unprofiled = QualityCounters(None, max_features=3)
    for i in range(10):
        unprofiled.rejected(f"f{i}")
    assert unprofiled.snapshot()["features"] == {
        "f0": {**dict.fromkeys(ISSUES, 0), "rejected": 1},
        "f1": {**dict.fromkeys(ISSUES, 0), "rejected": 1},
        "f2": {**dict.fromkeys(ISSUES, 0), "rejected": 1},
        OTHER: {**dict.fromkeys(ISSUES, 0), "rejected": 7},
    }


def test_feature_labels_are_capped_and_the_rest_pooled() -> None:
    counters = QualityCounters(None)
    x = np.zeros((4, 150))
    x[0, :] = np.nan  # one NaN in every column
    x[:, 120] = np.inf
    counters.observe({"wide": x})
    counters.observe({"wide": x})
    snapshot = counters.snapshot()
    assert len(snapshot["features"]) == 101
    assert snapshot["features"]["wide[99]"]["nan"] == 2
    assert snapshot["features"][OTHER] == {**dict.fromkeys(ISSUES, 0), "nan": 98, "inf": 8}  # 49 columns + column 120
    assert snapshot["totals"]["nan"] == 298 and snapshot["rows"] == 8


def test_a_large_batch_is_counted_exactly() -> None:
    rng = np.random.default_rng(30)
    x = rng.normal(5.0, 3.0, size=(100_000, 2))
    counters = QualityCounters(_profile(), range_tolerance=0.0)  # type: ignore[arg-type]
    counters.observe({"input": x})
    features = counters.snapshot()["features"]
    assert features["input[0]"]["below_range"] == int((x[:, 0] < 0).sum())
    assert features["input[0]"]["above_range"] == int((x[:, 0] > 10).sum())
    assert features["input[1]"]["below_range"] + features["input[1]"]["above_range"] == int((abs(x[:, 1]) > 1).sum())
