"""scikit-learn estimators and pipelines from joblib/pickle files or the safer skops format.

Signature: one input ``input`` (FP64, ``[-1, n_features_in_]``) and the outputs ``predict``
(``[-1]``; INT64/BYTES/BOOL/FP64 from the classifier's ``classes_``, FP64 for regressors,
INT64 for clusterers and outlier detectors) and, where the estimator has it,
``predict_proba`` (FP64, ``[-1, n_classes]``). ``options["outputs"]`` (a list of those names)
or ``options["predict_proba"] = False`` restricts what is computed.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

import joblib
import numpy as np

from ferryman.errors import InvalidInput
from ferryman.runtimes.base import RuntimeConfig
from ferryman.runtimes.sklearn_forest import ForestKernel, forest_kernel
from ferryman.runtimes.sklearn_linear import LinearKernel, linear_kernel
from ferryman.tensors import Signature, TensorSpec, numpy_dtype

__all__ = ["SklearnRuntime"]

_PREDICT_ONLY = frozenset({"predict"})
_CLASS_DATATYPES = {
    "i": "INT64",
    "u": "INT64",
    "b": "BOOL",
    "f": "FP64",
    "O": "BYTES",
    "U": "BYTES",
    "S": "BYTES",
}


class SklearnRuntime:
    """Serves a fitted scikit-learn estimator (or Pipeline) through ``predict``/``predict_proba``."""

    framework: ClassVar[str] = "sklearn"

    def __init__(self) -> None:
        self._model: Any = None
        self._signature = Signature(inputs=(), outputs=())
        self._columns: list[str] | None = None
        #: The classes to index with argmax(predict_proba) when that is exactly what predict does.
        self._argmax_classes: np.ndarray[Any, Any] | None = None
        #: Forests are evaluated tree by tree without joblib (bit-identical, several times faster).
        self._forest: ForestKernel | None = None
        #: Linear classifiers' labels straight from their coefficients (identical, no per-call checks).
        self._linear: LinearKernel | None = None

    def load(self, path: Path, config: RuntimeConfig) -> None:
        """Read the estimator; ``.skops`` files load without running pickled code."""
        model = _read(path)
        if not callable(getattr(model, "predict", None)):
            raise TypeError(f"{path.name} holds a {type(model).__name__}, not an estimator with predict()")
        outputs = [TensorSpec("predict", _predict_datatype(model), (-1,))]
        classes = getattr(model, "classes_", None)
        if hasattr(model, "predict_proba") and isinstance(classes, np.ndarray):
            outputs.append(TensorSpec("predict_proba", "FP64", (-1, len(classes))))
        outputs = _select(outputs, config.options)
        n_features = int(getattr(model, "n_features_in_", -1))
        allow_nan = _tags(model)[1]
        self._signature = Signature(
            inputs=(TensorSpec("input", "FP64", (-1, n_features), allow_nan=allow_nan),),
            outputs=tuple(outputs),
        )
        names = getattr(model, "feature_names_in_", None)
        self._columns = [str(name) for name in names] if names is not None else None
        self._model = model
        self._argmax_classes = classes if _predict_is_argmax_of_proba(model) else None
        kernel = forest_kernel(model)
        self._forest = kernel if kernel is None or not kernel.classifier or self._argmax_classes is not None else None
        self._linear = linear_kernel(model)

    def signature(self) -> Signature:
        """Return the input and the outputs this runtime computes."""
        return self._signature

    def predict(self, inputs: dict[str, np.ndarray[Any, Any]]) -> dict[str, np.ndarray[Any, Any]]:
        """Run the declared outputs on ``inputs["input"]``."""
        return self.predict_outputs(inputs, frozenset(spec.name for spec in self._signature.outputs))

    def predict_outputs(
        self, inputs: dict[str, np.ndarray[Any, Any]], outputs: frozenset[str]
    ) -> dict[str, np.ndarray[Any, Any]]:
        """Run only the named declared outputs (``predict_proba`` costs as much again as ``predict``)."""
        if self._forest is not None:
            return self._forest_outputs(self._forest, inputs["input"], outputs)
        if self._linear is not None and outputs == _PREDICT_ONLY:
            values = self._linear.predict(inputs["input"])
            want = numpy_dtype(self._signature.outputs[0].datatype)
            return {"predict": values if values.dtype == want else values.astype(want)}
        features = self._frame(inputs["input"])
        results: dict[str, np.ndarray[Any, Any]] = {}
        proba = None
        for spec in self._signature.outputs:
            if spec.name not in outputs:
                continue
            if spec.name == "predict" and self._argmax_classes is not None and "predict_proba" in outputs:
                # One model pass instead of two: for these estimators predict *is* argmax(predict_proba).
                proba = np.asarray(self._model.predict_proba(features))
                values = self._argmax_classes.take(np.argmax(proba, axis=1))
            elif spec.name == "predict_proba" and proba is not None:
                values = proba
            else:
                values = np.asarray(getattr(self._model, spec.name)(features))
            want = numpy_dtype(spec.datatype)
            results[spec.name] = values if values.dtype == want else values.astype(want)
        return results

    def _forest_outputs(
        self, kernel: ForestKernel, rows: np.ndarray[Any, Any], outputs: frozenset[str]
    ) -> dict[str, np.ndarray[Any, Any]]:
        results: dict[str, np.ndarray[Any, Any]] = {}
        if not kernel.classifier:
            if "predict" in outputs:
                results["predict"] = kernel.predict_value(rows)
            return results
        proba = kernel.predict_proba(rows)
        for spec in self._signature.outputs:
            if spec.name == "predict" and spec.name in outputs and self._argmax_classes is not None:
                values = self._argmax_classes.take(np.argmax(proba, axis=1))
                want = numpy_dtype(spec.datatype)
                results["predict"] = values if values.dtype == want else values.astype(want)
            elif spec.name == "predict_proba" and spec.name in outputs:
                results["predict_proba"] = proba
        return results

    def unload(self) -> None:
        """Drop the estimator."""
        self._model = None
        self._forest = None
        self._linear = None

    def _frame(self, features: np.ndarray[Any, Any]) -> Any:
        """Wrap the array in a DataFrame when the model was fitted on named columns."""
        if self._columns is None or features.ndim != 2 or features.shape[1] != len(self._columns):
            return features
        try:
            import pandas as pd
        except ImportError:
            return features
        return pd.DataFrame(features, columns=self._columns)


#: Estimators whose ``predict`` returns ``classes_[argmax(predict_proba)]`` (trees and forests do
#: exactly that; for the linear and naive-Bayes ones ``predict_proba`` is a monotonic function of the
#: scores ``predict`` takes the argmax of). Only a decision value within rounding of a tie can differ.
_ARGMAX_ESTIMATORS = frozenset(
    {
        "RandomForestClassifier",
        "ExtraTreesClassifier",
        "DecisionTreeClassifier",
        "ExtraTreeClassifier",
        "LogisticRegression",
        "LogisticRegressionCV",
        "GaussianNB",
        "MultinomialNB",
        "BernoulliNB",
        "ComplementNB",
        "CategoricalNB",
    }
)


def _predict_is_argmax_of_proba(model: Any) -> bool:
    """Whether ``predict`` may be computed from ``predict_proba`` (the last step of a pipeline decides)."""
    final = model
    steps = getattr(model, "steps", None)
    if isinstance(steps, list) and steps:
        final = steps[-1][1]
    cls = type(final)
    if not cls.__module__.startswith("sklearn.") or cls.__name__ not in _ARGMAX_ESTIMATORS:
        return False
    classes = getattr(model, "classes_", None)
    return isinstance(classes, np.ndarray) and classes.ndim == 1


def _read(path: Path) -> Any:
    if path.suffix.lower() == ".skops":
        from skops.io import get_untrusted_types, load

        # skops builds only the types it is told to trust. Trust what it reports only when it is
        # scikit-learn's or numpy's own (e.g. sklearn.tree._tree.Tree), never the file's say-so.
        untrusted = get_untrusted_types(file=path)
        refused = [name for name in untrusted if name.split(".", 1)[0] not in _SKOPS_TRUSTED_PACKAGES]
        if refused:
            raise InvalidInput(
                f"{path.name} holds types outside scikit-learn and numpy that will not be loaded: {', '.join(refused)}"
            )
        return load(path, trusted=untrusted)
    # Pickle formats run code from the file; servers that refuse them (allow_pickle: false) never get here.
    return joblib.load(path)


#: Packages whose types a .skops file may contain beyond skops' own safe defaults.
_SKOPS_TRUSTED_PACKAGES = frozenset({"sklearn", "numpy"})


def _predict_datatype(model: Any) -> str:
    classes = getattr(model, "classes_", None)
    if isinstance(classes, np.ndarray):
        return _CLASS_DATATYPES.get(classes.dtype.kind, "FP64")
    return "INT64" if _tags(model)[0] in ("clusterer", "outlier_detector") else "FP64"


def _tags(model: Any) -> tuple[str | None, bool]:
    """The estimator type and whether it accepts NaN, from scikit-learn's tags."""
    try:
        from sklearn.utils import get_tags

        tags = get_tags(model)
    except Exception:  # estimators outside scikit-learn may lack tags
        kind = getattr(model, "_estimator_type", None)
        return (kind if isinstance(kind, str) else None), False
    kind = tags.estimator_type
    return (kind if isinstance(kind, str) else None), bool(tags.input_tags.allow_nan)


def _select(outputs: list[TensorSpec], options: dict[str, Any]) -> list[TensorSpec]:
    """Apply the ``outputs`` / ``predict_proba`` runtime options."""
    wanted = options.get("outputs")
    if options.get("predict_proba") is False:
        outputs = [spec for spec in outputs if spec.name != "predict_proba"]
    if wanted is None:
        return outputs
    known = {spec.name for spec in outputs}
    unknown = [name for name in wanted if name not in known]
    if unknown or not wanted:
        raise InvalidInput(f"runtime option outputs={wanted!r} must name some of: {', '.join(sorted(known))}")
    return [spec for spec in outputs if spec.name in wanted]
