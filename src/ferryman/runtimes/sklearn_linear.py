"""Linear-classifier ``predict`` without scikit-learn's per-call input checks.

A fitted linear classifier (logistic regression, linear SVM, ridge, SGD, perceptron, passive
aggressive) predicts ``classes_[argmax(X @ coef_.T + intercept_)]`` (``scores > 0`` with two
classes). On one row that product takes a few microseconds, while ``predict`` spends ~150 µs around
it (fitted check, array-namespace dispatch, dataframe sniffing, dtype and finiteness validation):
about half of Ferryman's time per request at concurrency 1, by py-spy. :class:`LinearKernel` does
the same product with the same operands (numpy's ``@`` on the same arrays: float64 rows, float64 or
float32 coefficients as fitted, as ``safe_sparse_dot`` does for dense input), so its labels are
identical to ``predict``'s. Ferryman's own validation has already checked the input's shape, dtype
and NaNs; anything non-finite is handed to ``predict`` itself, which refuses it as it always has.
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["LinearKernel", "linear_kernel"]

#: scikit-learn's LinearClassifierMixin subclasses whose predict is exactly the mixin's.
_CLASSIFIERS = frozenset(
    {
        "LogisticRegression",
        "LogisticRegressionCV",
        "LinearSVC",
        "RidgeClassifier",
        "RidgeClassifierCV",
        "SGDClassifier",
        "Perceptron",
        "PassiveAggressiveClassifier",
    }
)


class LinearKernel:
    """The coefficients of one fitted linear classifier, applied to dense float64 rows."""

    def __init__(self, model: Any) -> None:
        self._model = model
        coef = np.asarray(model.coef_)
        self._coef_t = coef.T if coef.ndim == 2 else coef
        self._intercept = model.intercept_
        self._classes = np.asarray(model.classes_)

    def predict(self, features: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
        """Class labels for ``[rows, n_features]`` float64 rows, as ``model.predict`` gives them."""
        if features.dtype != np.float64 or features.ndim != 2 or not np.isfinite(features).all():
            return np.asarray(self._model.predict(features))  # its own conversion or refusal
        scores = features @ self._coef_t + self._intercept
        if scores.ndim > 1 and scores.shape[1] == 1:
            scores = scores.reshape(-1)
        indices = (scores > 0).astype(np.intp) if scores.ndim == 1 else np.argmax(scores, axis=1)
        labels: np.ndarray[Any, Any] = self._classes.take(indices)
        return labels


def linear_kernel(model: Any) -> LinearKernel | None:
    """A kernel for ``model`` when it is a fitted dense linear classifier from scikit-learn, else None."""
    cls = type(model)
    if not cls.__module__.startswith(("sklearn.linear_model", "sklearn.svm")) or cls.__name__ not in _CLASSIFIERS:
        return None
    coef = getattr(model, "coef_", None)
    classes = getattr(model, "classes_", None)
    if not isinstance(coef, np.ndarray) or coef.dtype.kind != "f" or not isinstance(classes, np.ndarray):
        return None  # sparse coefficients (after sparsify()) or an unusual fit: leave it to predict
    rows = 1 if len(classes) == 2 else len(classes)
    if classes.ndim != 1 or not ((coef.ndim == 2 and coef.shape[0] == rows) or (coef.ndim == 1 and rows == 1)):
        return None  # (a binary ridge classifier keeps a 1-D coef_)
    return LinearKernel(model)
