"""Reference profiles: statistics, naming, JSON round trip and size, learning from traffic."""

from __future__ import annotations

import json

import numpy as np
import pytest

from ferryman.errors import InvalidInput
from ferryman.monitoring.profile import (
    MAX_FEATURES,
    OTHER,
    QUANTILE_LEVELS,
    CategoricalProfile,
    NumericProfile,
    Profile,
    ProfileLearner,
    build_profile,
)


def _round_trip(profile: Profile) -> Profile:
    return Profile.from_dict(json.loads(json.dumps(profile.to_dict(), allow_nan=False)))


def test_numeric_statistics_match_numpy() -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(3.0, 2.0, size=(2000, 2))
    x[:100, 0] = np.nan
    profile = build_profile({"input": x}, None, source="sample")
    assert profile.inputs == {"input": ("input[0]", "input[1]")}
    first = profile.features["input[0]"]
    assert isinstance(first, NumericProfile)
    finite = x[100:, 0]
    assert first.count == 2000
    assert first.missing == pytest.approx(0.05)
    assert first.valid == 1900
    step = (np.quantile(finite, 0.9) - np.quantile(finite, 0.1)) / 1000  # stored precision: at most this
    assert first.minimum is not None and first.maximum is not None
    assert first.minimum <= finite.min() and first.maximum >= finite.max()  # rounded outwards
    assert (first.minimum, first.maximum) == pytest.approx((finite.min(), finite.max()), abs=step)
    assert first.mean == pytest.approx(finite.mean(), abs=step / 2)
    assert first.std == pytest.approx(finite.std(ddof=1), rel=1e-5)
    assert first.quantiles == pytest.approx(np.quantile(finite, QUANTILE_LEVELS), abs=step / 2)
    assert len(first.edges) == 9 and list(first.edges) == sorted(first.edges)
    assert first.proportions == pytest.approx([0.1] * 10, abs=0.002)
    assert sum(first.proportions) == pytest.approx(1.0)


def test_bin_shares_are_exact_for_the_stored_edges() -> None:
    rng = np.random.default_rng(1)
    x = rng.integers(0, 4, size=997).astype(np.float64) + 0.1  # ties sit exactly on the rounded edges
    feature = build_profile({"x": x}, source="sample").features["x"]
    assert isinstance(feature, NumericProfile)
    assert len(feature.edges) <= 4  # equal deciles merged
    codes = np.searchsorted(np.array(feature.edges), x, side="left")  # right-closed bins
    shares = np.bincount(codes, minlength=len(feature.edges) + 1) / x.size
    assert shares == pytest.approx(feature.proportions, abs=5e-6)  # stored to 5 decimals
    assert feature.proportions[-1] == 0.0  # the top edge is the maximum itself


def test_an_offset_feature_keeps_its_resolution() -> None:
    x = 1_000_000 + np.random.default_rng(7).normal(size=5000)  # 6 significant digits would round to integers
    feature = build_profile({"t": x}, source="sample").features["t"]
    assert isinstance(feature, NumericProfile)
    assert len(feature.edges) == 9
    assert feature.proportions == pytest.approx([0.1] * 10, abs=0.001)


def test_constant_and_empty_numeric_features() -> None:
    x = np.column_stack([np.full(50, 7.0), np.full(50, np.nan)])
    profile = build_profile({"x": x}, source="sample")
    constant, empty = profile.features["x[0]"], profile.features["x[1]"]
    assert isinstance(constant, NumericProfile) and isinstance(empty, NumericProfile)
    assert constant.edges == (7.0,) and constant.proportions == (1.0, 0.0) and constant.std == 0.0
    assert empty.missing == 1.0 and empty.valid == 0 and empty.minimum is None and empty.edges == ()
    assert _round_trip(profile) == profile


def test_names_one_dimensional_tensors_and_caller_names() -> None:
    rng = np.random.default_rng(2)
    profile = build_profile(
        {"age": rng.normal(size=30), "xy": rng.normal(size=(30, 2))},
        {"score": rng.normal(size=30)},
        source="sample",
        feature_names={"xy": ["x", "y"]},
    )
    assert list(profile.features) == ["age", "x", "y"]
    assert profile.inputs == {"age": ("age",), "xy": ("x", "y")}
    assert profile.outputs == {"score": ("score",)}
    with pytest.raises(InvalidInput, match="2 columns"):
        build_profile({"xy": rng.normal(size=(30, 2))}, source="sample", feature_names={"xy": ["x"]})
    with pytest.raises(InvalidInput, match="twice"):
        build_profile({"a": np.zeros(3), "xy": np.zeros((3, 2))}, source="sample", feature_names={"xy": ["a", "b"]})


def test_categorical_features_keep_the_top_100_and_pool_the_rest() -> None:
    rng = np.random.default_rng(3)
    values = np.array([f"c{i:03d}".encode() for i in rng.integers(0, 150, size=5000)], dtype=object)
    values[:10] = None
    feature = build_profile({"city": values}, source="sample").features["city"]
    assert isinstance(feature, CategoricalProfile)
    assert feature.missing == pytest.approx(10 / 5000)
    assert len(feature.counts) == 101 and OTHER in feature.counts and not feature.complete
    assert sum(feature.counts.values()) == 4990 == feature.valid
    named = [v for k, v in feature.counts.items() if k != OTHER]
    assert named == sorted(named, reverse=True)
    assert all(isinstance(k, str) and k.startswith("c") for k in feature.counts if k != OTHER)


def test_kinds_of_inputs_and_predictions() -> None:
    rng = np.random.default_rng(4)
    profile = build_profile(
        {"flag": rng.random(40) > 0.5, "text": np.array(["a", "b"] * 20), "count": rng.integers(0, 9, 40)},
        {"label": rng.integers(0, 3, 40), "proba": rng.random((40, 3))},
        source="sample",
    )
    kinds = {name: p.kind for name, p in (profile.features | profile.predictions).items()}
    assert kinds == {
        "flag": "categorical",
        "text": "categorical",
        "count": "numeric",  # an integer input is a quantity
        "label": "categorical",  # an integer output is a class
        "proba[0]": "numeric",
        "proba[1]": "numeric",
        "proba[2]": "numeric",
    }
    flag = profile.features["flag"]
    assert isinstance(flag, CategoricalProfile) and set(flag.counts) == {"true", "false"}


def test_json_round_trip_and_size_for_100_features() -> None:
    rng = np.random.default_rng(5)
    x = rng.normal(size=(12_345, 100)) * rng.lognormal(size=100) + rng.normal(size=100) * 100
    x[rng.random(x.shape) < 0.01] = np.nan
    profile = build_profile({"input": x}, {"label": rng.integers(0, 5, 12_345)}, source="sample")
    text = json.dumps(profile.to_dict(), allow_nan=False)
    assert len(text) < 50_000
    assert _round_trip(profile) == profile
    assert profile.to_dict()["quantile_levels"] == list(QUANTILE_LEVELS)


@pytest.mark.parametrize(
    "change",
    [
        lambda d: d.pop("features"),
        lambda d: d.update(format=99),
        lambda d: d.update(source="guess"),
        lambda d: d["features"]["x"].update(edges=[2.0, 1.0], proportions=[0.3, 0.3, 0.4]),
        lambda d: d["features"]["x"].update(proportions=[1.0]),
        lambda d: d["features"]["x"].update(kind="image"),
        lambda d: d["inputs"].update(x=["x", "y"]),
    ],
)
def test_from_dict_refuses_malformed_profiles(change: object) -> None:
    data = build_profile({"x": np.arange(100.0)}, source="sample").to_dict()
    change(data)  # type: ignore[operator]
    with pytest.raises(InvalidInput, match="malformed profile"):
        Profile.from_dict(data)


def test_refuses_inconsistent_batches() -> None:
    with pytest.raises(InvalidInput, match="same number of rows"):
        build_profile({"x": np.zeros(3)}, {"y": np.zeros(4)}, source="sample")
    with pytest.raises(InvalidInput, match="at least one row"):
        build_profile({"x": np.zeros((0, 2))}, source="sample")
    with pytest.raises(InvalidInput, match="source"):
        build_profile({"x": np.zeros(3)}, source="guess")  # type: ignore[arg-type]


def test_wide_tensors_are_capped() -> None:
    profile = build_profile({"pixels": np.zeros((4, 300))}, source="sample")
    assert len(profile.features) == MAX_FEATURES and profile.skipped == 300 - MAX_FEATURES
    assert len(profile.inputs["pixels"]) == MAX_FEATURES


def test_learner_keeps_the_first_rows_and_marks_the_profile() -> None:
    rng = np.random.default_rng(6)
    learner = ProfileLearner(1000)
    batches = 0
    while learner.profile() is None:
        assert learner.rows < 1000
        rows = int(rng.integers(1, 64))
        learner.observe({"x": rng.normal(size=(rows, 3)), "id": rng.normal(size=rows)}, {"y": rng.integers(0, 2, rows)})
        batches += 1
    learner.observe({"x": rng.normal(size=(5, 4)), "id": rng.normal(size=5)})  # after: ignored
    profile = learner.profile()
    assert profile is not None and profile.source == "traffic" and profile.rows == 1000 == learner.rows
    assert profile.inputs == {"x": ("x[0]", "x[1]", "x[2]"), "id": ("id",)}
    assert set(profile.predictions) == {"y"}
    assert batches > 10


def test_learner_ignores_batches_of_another_shape() -> None:
    learner = ProfileLearner(10)
    learner.observe({"x": np.ones((6, 2))})
    learner.observe({"x": np.ones((6, 3))})
    learner.observe({"z": np.ones((6, 2))})
    assert learner.rows == 6 and learner.profile() is None
    learner.observe({"x": np.ones((6, 2))})
    profile = learner.profile()
    assert profile is not None and profile.rows == 10
    with pytest.raises(InvalidInput):
        ProfileLearner(0)


def test_learner_reports_rows_it_cannot_profile_and_stops() -> None:
    learner = ProfileLearner(4, feature_names={"x": ["a", "b", "c"]})
    learner.observe({"x": np.ones((4, 2))})
    assert learner.profile() is None and learner.failure is not None and "3 feature names" in learner.failure
    learner.observe({"x": np.ones((4, 2))})
    assert learner.rows == 4
