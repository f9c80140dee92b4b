"""The linear kernel gives exactly scikit-learn's labels through the runtime, and steps aside otherwise."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from sklearn.datasets import make_classification
from sklearn.linear_model import LogisticRegression, Perceptron, RidgeClassifier, SGDClassifier
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.svm import LinearSVC

from ferryman.runtimes.sklearn_linear import linear_kernel
from tests.unit.test_sklearn_forest import _runtime  # joblib-dump a model, load it in the runtime


@pytest.mark.parametrize(
    "make_model",
    [
        lambda: LogisticRegression(max_iter=500),
        lambda: LinearSVC(),
        lambda: RidgeClassifier(),
        lambda: SGDClassifier(random_state=0),
        lambda: Perceptron(random_state=0),
    ],
)
@pytest.mark.parametrize("n_classes", [2, 4])
@pytest.mark.parametrize("label_kind", ["int", "str"])
@pytest.mark.parametrize("fit_dtype", [np.float64, np.float32])
def test_labels_are_identical_to_predict(
    tmp_path: Path, make_model: Any, n_classes: int, label_kind: str, fit_dtype: Any
) -> None:
    x, y = make_classification(n_samples=400, n_features=12, n_informative=6, n_classes=n_classes, random_state=3)
    x = x.astype(fit_dtype)  # fitted on float32, some estimators keep float32 coefficients
    labels = y if label_kind == "int" else np.array([f"class-{v}" for v in y])
    model = make_model().fit(x, labels)
    runtime = _runtime(tmp_path, model, predict_proba=False)
    assert runtime._linear is not None
    rows = np.random.default_rng(5).normal(size=(300, 12)) * 3
    for batch in (rows[:1], rows[:7], rows):
        got = runtime.predict({"input": batch})["predict"]
        expected = model.predict(batch)
        assert got.tolist() == expected.tolist()
    # The decision values behind the labels are the same numbers, so ties break the same way too.
    kernel = linear_kernel(model)
    assert kernel is not None
    coef = model.coef_.T if model.coef_.ndim == 2 else model.coef_
    scores = rows @ coef + model.intercept_
    np.testing.assert_array_equal(
        scores.reshape(scores.shape[0], -1), np.atleast_2d(model.decision_function(rows)).reshape(300, -1)
    )


def test_non_finite_rows_are_refused_by_scikit_learn_as_before(tmp_path: Path) -> None:
    x, y = make_classification(n_samples=200, n_features=5, random_state=0)
    runtime = _runtime(tmp_path, LogisticRegression().fit(x, y), predict_proba=False)
    bad = np.zeros((2, 5))
    bad[1, 3] = np.inf
    with pytest.raises(ValueError, match="infinity"):
        runtime.predict({"input": bad})


def test_other_models_and_both_outputs_take_the_usual_path(tmp_path: Path) -> None:
    x, y = make_classification(n_samples=200, n_features=5, random_state=0)
    pipeline = make_pipeline(StandardScaler(), LogisticRegression()).fit(x, y)
    assert _runtime(tmp_path, pipeline)._linear is None
    model = LogisticRegression().fit(x, y)
    runtime = _runtime(tmp_path, model)  # predict and predict_proba
    outputs = runtime.predict({"input": x[:10]})
    assert outputs["predict"].tolist() == model.predict(x[:10]).tolist()
    np.testing.assert_array_equal(outputs["predict_proba"], model.predict_proba(x[:10]))
    assert linear_kernel(model.sparsify()) is None
