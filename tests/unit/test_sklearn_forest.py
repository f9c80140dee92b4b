"""The forest kernel gives exactly scikit-learn's answers, bit for bit, through the runtime."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import joblib
import numpy as np
import pytest
from sklearn.datasets import make_classification, make_regression
from sklearn.ensemble import (
    ExtraTreesClassifier,
    ExtraTreesRegressor,
    RandomForestClassifier,
    RandomForestRegressor,
)
from sklearn.linear_model import LogisticRegression

from ferryman.runtimes.base import RuntimeConfig
from ferryman.runtimes.sklearn import SklearnRuntime
from ferryman.runtimes.sklearn_forest import forest_kernel


def _runtime(tmp_path: Path, model: Any, **options: Any) -> SklearnRuntime:
    path = tmp_path / "model.joblib"
    joblib.dump(model, path)
    runtime = SklearnRuntime()
    runtime.load(path, RuntimeConfig(options=options))
    return runtime


@pytest.mark.parametrize("forest_class", [RandomForestClassifier, ExtraTreesClassifier])
@pytest.mark.parametrize("n_classes", [2, 3])
def test_classifier_outputs_are_bit_identical(tmp_path: Path, forest_class: Any, n_classes: int) -> None:
    x, y = make_classification(n_samples=600, n_features=8, n_informative=5, n_classes=n_classes, random_state=1)
    model = forest_class(n_estimators=25, max_depth=6, random_state=0).fit(x, y)
    runtime = _runtime(tmp_path, model)
    assert runtime._forest is not None
    rng = np.random.default_rng(7)
    for rows in (1, 5, 64, 300):
        batch = rng.normal(size=(rows, 8)) * 2.0
        out = runtime.predict({"input": batch})
        assert np.array_equal(out["predict_proba"], model.predict_proba(batch))
        assert np.array_equal(out["predict"], model.predict(batch))


def test_classifier_predict_only_and_string_classes(tmp_path: Path) -> None:
    x, y = make_classification(n_samples=400, n_features=6, random_state=3)
    labels = np.array(["no", "yes"])[y]
    model = RandomForestClassifier(n_estimators=10, random_state=0).fit(x, labels)
    runtime = _runtime(tmp_path, model, predict_proba=False)
    out = runtime.predict({"input": x[:50]})
    assert set(out) == {"predict"}
    assert list(out["predict"]) == list(model.predict(x[:50]))


def test_missing_values_follow_the_trees(tmp_path: Path) -> None:
    x, y = make_classification(n_samples=500, n_features=5, random_state=4)
    x[::7, 2] = np.nan
    model = RandomForestClassifier(n_estimators=15, random_state=0).fit(x, y)
    runtime = _runtime(tmp_path, model)
    batch = x[:40].copy()
    batch[::3, 0] = np.nan
    assert np.array_equal(runtime.predict({"input": batch})["predict_proba"], model.predict_proba(batch))


@pytest.mark.parametrize("forest_class", [RandomForestRegressor, ExtraTreesRegressor])
def test_regressor_is_bit_identical(tmp_path: Path, forest_class: Any) -> None:
    x, y = make_regression(n_samples=400, n_features=7, random_state=2)
    model = forest_class(n_estimators=20, max_depth=8, random_state=0).fit(x, y)
    runtime = _runtime(tmp_path, model)
    assert runtime._forest is not None
    batch = np.random.default_rng(1).normal(size=(33, 7))
    assert np.array_equal(runtime.predict({"input": batch})["predict"], model.predict(batch))


def test_other_estimators_keep_their_own_predict() -> None:
    x, y = make_classification(n_samples=100, n_features=4, random_state=0)
    assert forest_kernel(LogisticRegression().fit(x, y)) is None
    multi = RandomForestRegressor(n_estimators=3, random_state=0).fit(x, np.c_[y, y])
    assert forest_kernel(multi) is None
