"""Each framework runtime loads a model saved in its native format and predicts like the original."""

from __future__ import annotations

import pickle
import textwrap
import warnings
from pathlib import Path
from typing import Any

import joblib
import numpy as np
import pytest
from sklearn.datasets import load_iris

from ferryman.errors import InvalidInput, ModelFailed
from ferryman.runtimes import RuntimeConfig, load_runtime
from ferryman.tensors import Signature, TensorSpec

ONE_THREAD = RuntimeConfig(threads=1)


@pytest.fixture(scope="module")
def iris() -> tuple[np.ndarray[Any, Any], np.ndarray[Any, Any]]:
    features, labels = load_iris(return_X_y=True)
    return features, labels


# --- scikit-learn -------------------------------------------------------------------------------


def test_sklearn_joblib_classifier(tmp_path: Path, iris: Any) -> None:
    from sklearn.linear_model import LogisticRegression

    X, y = iris
    clf = LogisticRegression(max_iter=500).fit(X, y)
    joblib.dump(clf, tmp_path / "model.joblib")

    runtime = load_runtime(tmp_path / "model.joblib", None, ONE_THREAD)

    assert runtime.framework == "sklearn"
    assert runtime.signature() == Signature(
        inputs=(TensorSpec("input", "FP64", (-1, 4)),),
        outputs=(TensorSpec("predict", "INT64", (-1,)), TensorSpec("predict_proba", "FP64", (-1, 3))),
    )
    out = runtime.predict({"input": X[:20]})
    assert out["predict"].dtype == np.int64
    np.testing.assert_array_equal(out["predict"], clf.predict(X[:20]))
    np.testing.assert_allclose(out["predict_proba"], clf.predict_proba(X[:20]))


def test_sklearn_pickled_pipeline_on_dataframe_with_string_labels(tmp_path: Path, iris: Any) -> None:
    import pandas as pd
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    X, y = iris
    frame = pd.DataFrame(X, columns=["sl", "sw", "pl", "pw"])
    names = np.array(["setosa", "versicolor", "virginica"])[y]
    pipeline = make_pipeline(StandardScaler(), LogisticRegression(max_iter=500)).fit(frame, names)
    (tmp_path / "model.pkl").write_bytes(pickle.dumps(pipeline))

    runtime = load_runtime(tmp_path / "model.pkl", "sklearn", ONE_THREAD)

    assert runtime.signature().outputs[0] == TensorSpec("predict", "BYTES", (-1,))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no "X does not have valid feature names"
        out = runtime.predict({"input": X[:20]})
    assert list(out["predict"]) == list(pipeline.predict(frame[:20]))


def test_sklearn_skops_random_forest(tmp_path: Path, iris: Any) -> None:
    import skops.io
    from sklearn.ensemble import RandomForestClassifier

    X, y = iris
    forest = RandomForestClassifier(n_estimators=3, max_depth=3, random_state=0).fit(X, y)
    skops.io.dump(forest, tmp_path / "model.skops")

    runtime = load_runtime(tmp_path / "model.skops", None, ONE_THREAD)

    out = runtime.predict({"input": X})
    np.testing.assert_array_equal(out["predict"], forest.predict(X))
    np.testing.assert_allclose(out["predict_proba"], forest.predict_proba(X))


def test_sklearn_regressor_and_nan_tolerant_estimator(tmp_path: Path) -> None:
    from sklearn.ensemble import HistGradientBoostingRegressor
    from sklearn.linear_model import LinearRegression

    rng = np.random.default_rng(0)
    X, y = rng.normal(size=(60, 3)), rng.normal(size=60)
    joblib.dump(LinearRegression().fit(X, y), tmp_path / "linear.joblib")
    boosted = HistGradientBoostingRegressor(max_iter=3).fit(X, y)
    joblib.dump(boosted, tmp_path / "boosted.joblib")

    linear = load_runtime(tmp_path / "linear.joblib", None, ONE_THREAD)
    tolerant = load_runtime(tmp_path / "boosted.joblib", None, ONE_THREAD)

    assert linear.signature() == Signature(
        inputs=(TensorSpec("input", "FP64", (-1, 3)),), outputs=(TensorSpec("predict", "FP64", (-1,)),)
    )
    assert tolerant.signature().inputs == (TensorSpec("input", "FP64", (-1, 3), allow_nan=True),)
    X[0, 0] = np.nan
    np.testing.assert_allclose(tolerant.predict({"input": X})["predict"], boosted.predict(X))


def test_sklearn_clusterer_predicts_int64(tmp_path: Path, iris: Any) -> None:
    from sklearn.cluster import KMeans

    X, _ = iris
    kmeans = KMeans(n_clusters=3, n_init=1, random_state=0).fit(X)
    joblib.dump(kmeans, tmp_path / "model.joblib")

    runtime = load_runtime(tmp_path / "model.joblib", None, ONE_THREAD)

    assert runtime.signature().outputs == (TensorSpec("predict", "INT64", (-1,)),)
    out = runtime.predict({"input": X})["predict"]
    assert out.dtype == np.int64
    np.testing.assert_array_equal(out, kmeans.predict(X))


@pytest.mark.parametrize(
    ("options", "names"),
    [
        ({"outputs": ["predict_proba"]}, ("predict_proba",)),
        ({"predict_proba": False}, ("predict",)),
    ],
)
def test_sklearn_options_restrict_outputs(
    tmp_path: Path, iris: Any, options: dict[str, Any], names: tuple[str, ...]
) -> None:
    from sklearn.linear_model import LogisticRegression

    X, y = iris
    joblib.dump(LogisticRegression(max_iter=500).fit(X, y), tmp_path / "model.joblib")

    runtime = load_runtime(tmp_path / "model.joblib", None, RuntimeConfig(options=options))

    assert runtime.signature().output_names() == names
    assert tuple(runtime.predict({"input": X[:2]})) == names


def test_sklearn_rejects_unknown_output_option(tmp_path: Path, iris: Any) -> None:
    from sklearn.linear_model import LogisticRegression

    X, y = iris
    joblib.dump(LogisticRegression(max_iter=500).fit(X, y), tmp_path / "model.joblib")

    with pytest.raises(InvalidInput, match="decision_function"):
        load_runtime(tmp_path / "model.joblib", None, RuntimeConfig(options={"outputs": ["decision_function"]}))


def test_sklearn_file_without_an_estimator_fails_naming_it(tmp_path: Path) -> None:
    joblib.dump({"not": "a model"}, tmp_path / "weights.joblib")

    with pytest.raises(ModelFailed, match=r"weights\.joblib.*dict"):
        load_runtime(tmp_path / "weights.joblib", None, ONE_THREAD)


# --- XGBoost ------------------------------------------------------------------------------------


@pytest.mark.parametrize("suffix", [".json", ".ubj"])
def test_xgboost_multiclass(tmp_path: Path, iris: Any, suffix: str) -> None:
    import xgboost

    X, y = iris
    params = {"objective": "multi:softprob", "num_class": 3, "nthread": 1, "max_depth": 2}
    booster = xgboost.train(params, xgboost.DMatrix(X, label=y), num_boost_round=3)
    booster.save_model(tmp_path / f"model{suffix}")

    runtime = load_runtime(tmp_path / f"model{suffix}", None, ONE_THREAD)

    assert runtime.framework == "xgboost"
    assert runtime.signature() == Signature(
        inputs=(TensorSpec("input", "FP32", (-1, 4), allow_nan=True),),
        outputs=(TensorSpec("predict", "FP32", (-1, 3)),),
    )
    features = X[:20].copy()
    features[0, 1] = np.nan
    out = runtime.predict({"input": features})["predict"]
    assert out.dtype == np.float32
    np.testing.assert_allclose(out, booster.predict(xgboost.DMatrix(features.astype(np.float32))), rtol=1e-6)


def test_xgboost_binary_predicts_one_column(tmp_path: Path, iris: Any) -> None:
    import xgboost

    X, y = iris
    params = {"objective": "binary:logistic", "nthread": 1, "max_depth": 2}
    booster = xgboost.train(params, xgboost.DMatrix(X, label=y == 0), num_boost_round=2)
    booster.save_model(tmp_path / "model.json")

    runtime = load_runtime(tmp_path / "model.json", "xgboost", RuntimeConfig())

    assert runtime.signature().outputs == (TensorSpec("predict", "FP32", (-1,)),)
    np.testing.assert_allclose(
        runtime.predict({"input": X})["predict"], booster.predict(xgboost.DMatrix(X.astype(np.float32)))
    )


# --- LightGBM -----------------------------------------------------------------------------------


@pytest.mark.parametrize(("objective", "shape"), [("multiclass", (-1, 3)), ("regression", (-1,))])
def test_lightgbm(tmp_path: Path, iris: Any, objective: str, shape: tuple[int, ...]) -> None:
    import lightgbm

    X, y = iris
    params: dict[str, Any] = {"objective": objective, "verbose": -1, "num_threads": 1, "num_leaves": 4}
    if objective == "multiclass":
        params["num_class"] = 3
    booster = lightgbm.train(params, lightgbm.Dataset(X, label=y), num_boost_round=3)
    booster.save_model(tmp_path / "model.txt")

    runtime = load_runtime(tmp_path / "model.txt", None, ONE_THREAD)

    assert runtime.framework == "lightgbm"
    assert runtime.signature() == Signature(
        inputs=(TensorSpec("input", "FP64", (-1, 4), allow_nan=True),),
        outputs=(TensorSpec("predict", "FP64", shape),),
    )
    np.testing.assert_allclose(runtime.predict({"input": X})["predict"], booster.predict(X))


# --- ONNX ---------------------------------------------------------------------------------------


def _iris_onnx(path: Path, iris: Any, **options: Any) -> Any:
    from skl2onnx import convert_sklearn
    from skl2onnx.common.data_types import FloatTensorType
    from sklearn.linear_model import LogisticRegression

    X, y = iris
    clf = LogisticRegression(max_iter=500).fit(X, y)
    onx = convert_sklearn(clf, initial_types=[("input", FloatTensorType([None, 4]))], options=options, target_opset=17)
    path.write_bytes(onx.SerializeToString())
    return clf


def test_onnx_classifier_without_zipmap(tmp_path: Path, iris: Any) -> None:
    X, _ = iris
    clf = _iris_onnx(tmp_path / "model.onnx", iris, zipmap=False)

    runtime = load_runtime(tmp_path / "model.onnx", None, ONE_THREAD)

    assert runtime.framework == "onnx"
    assert runtime.signature() == Signature(
        inputs=(TensorSpec("input", "FP32", (-1, 4)),),
        outputs=(TensorSpec("label", "INT64", (-1,)), TensorSpec("probabilities", "FP32", (-1, 3))),
    )
    out = runtime.predict({"input": X})  # float64 in: cast to the model's float32
    np.testing.assert_array_equal(out["label"], clf.predict(X))
    np.testing.assert_allclose(out["probabilities"], clf.predict_proba(X), atol=1e-5)


def test_onnx_zipmap_output_is_left_out(tmp_path: Path, iris: Any) -> None:
    X, _ = iris
    clf = _iris_onnx(tmp_path / "model.onnx", iris)

    runtime = load_runtime(tmp_path / "model.onnx", None, ONE_THREAD)

    assert runtime.signature().output_names() == ("output_label",)
    out = runtime.predict({"input": X.astype(np.float32)})
    assert list(out) == ["output_label"]
    np.testing.assert_array_equal(out["output_label"], clf.predict(X))


def test_onnx_string_and_bool_tensors(tmp_path: Path) -> None:
    import onnx
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("Identity", ["text"], ["same"]), helper.make_node("Not", ["flags"], ["negated"])],
        "types",
        [
            helper.make_tensor_value_info("text", TensorProto.STRING, ["batch"]),
            helper.make_tensor_value_info("flags", TensorProto.BOOL, ["batch", 2]),
        ],
        [
            helper.make_tensor_value_info("same", TensorProto.STRING, ["batch"]),
            helper.make_tensor_value_info("negated", TensorProto.BOOL, ["batch", 2]),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, tmp_path / "types.onnx")

    runtime = load_runtime(tmp_path / "types.onnx", None, ONE_THREAD)

    assert runtime.signature() == Signature(
        inputs=(TensorSpec("text", "BYTES", (-1,)), TensorSpec("flags", "BOOL", (-1, 2))),
        outputs=(TensorSpec("same", "BYTES", (-1,)), TensorSpec("negated", "BOOL", (-1, 2))),
    )
    out = runtime.predict({"text": np.array([b"ferry", b"man"], dtype=object), "flags": np.array([[True, False]] * 2)})
    assert list(out["same"]) == ["ferry", "man"]
    np.testing.assert_array_equal(out["negated"], [[False, True]] * 2)


# --- custom -------------------------------------------------------------------------------------


def write_model(folder: Path, source: str, **files: str) -> Path:
    """Write a custom model folder: model.py plus any other files."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "model.py").write_text(textwrap.dedent(source))
    for name, text in files.items():
        (folder / name).write_text(textwrap.dedent(text))
    return folder


SCALER = """
    from ferryman import Model, TensorSpec
    from factor import FACTOR

    class Scaler(Model):
        inputs = [TensorSpec("x", "FP32", (-1, 2))]
        outputs = [TensorSpec("y", "FP32", (-1, 2))]

        def load(self):
            self.offset = float((self.path / "offset.txt").read_text()) + self.options.get("extra", 0)

        def predict(self, inputs):
            return {"y": inputs["x"] * FACTOR + self.offset}

        def unload(self):
            (self.path / "unloaded").write_text("yes")
"""


def test_custom_model_with_sibling_module_and_options(tmp_path: Path) -> None:
    folder = write_model(tmp_path / "scaler", SCALER, **{"factor.py": "FACTOR = 3\n", "offset.txt": "1"})

    runtime = load_runtime(folder, None, RuntimeConfig(options={"extra": 10}))

    assert runtime.framework == "custom"
    assert runtime.signature() == Signature(
        inputs=(TensorSpec("x", "FP32", (-1, 2)),), outputs=(TensorSpec("y", "FP32", (-1, 2)),)
    )
    x = np.array([[1, 2]], dtype=np.float32)
    np.testing.assert_array_equal(runtime.predict({"x": x})["y"], [[14, 17]])
    runtime.unload()
    assert (folder / "unloaded").read_text() == "yes"


def test_custom_versions_keep_their_own_sibling_modules(tmp_path: Path) -> None:
    first = write_model(tmp_path / "v1", SCALER, **{"factor.py": "FACTOR = 2\n", "offset.txt": "0"})
    second = write_model(tmp_path / "v2", SCALER, **{"factor.py": "FACTOR = 5\n", "offset.txt": "0"})

    one = load_runtime(first, "custom", RuntimeConfig())
    two = load_runtime(second, "custom", RuntimeConfig())

    x = np.ones((1, 2), dtype=np.float32)
    np.testing.assert_array_equal(one.predict({"x": x})["y"], [[2, 2]])
    np.testing.assert_array_equal(two.predict({"x": x})["y"], [[5, 5]])


def test_custom_open_inputs_and_entrypoint(tmp_path: Path) -> None:
    folder = tmp_path / "echo"
    folder.mkdir()
    (folder / "serve.py").write_text(
        textwrap.dedent(
            """
            from ferryman import Model

            class Helper(Model):
                pass

            class Echo(Model):
                def predict(self, inputs):
                    return {name: [len(value)] for name, value in inputs.items()}
            """
        )
    )
    (folder / "model.yaml").write_text('entrypoint: "serve:Echo"\n')

    runtime = load_runtime(folder, None, RuntimeConfig())

    assert runtime.signature() == Signature(inputs=(), outputs=(), open_inputs=True)
    out = runtime.predict({"anything": np.zeros(3)})
    assert isinstance(out["anything"], np.ndarray)
    np.testing.assert_array_equal(out["anything"], [3])


@pytest.mark.parametrize(
    ("source", "message"),
    [
        (
            "from ferryman import Model\nclass A(Model): pass\nclass B(Model): pass\n",
            "exactly one ferryman.Model subclass, found: A, B",
        ),
        ("VALUE = 1\n", "found: none"),
    ],
)
def test_custom_model_class_must_be_unique(tmp_path: Path, source: str, message: str) -> None:
    folder = write_model(tmp_path / "m", source)

    with pytest.raises(InvalidInput, match=message):
        load_runtime(folder, None, RuntimeConfig())


def test_custom_model_must_return_a_dict(tmp_path: Path) -> None:
    folder = write_model(
        tmp_path / "m",
        """
        from ferryman import Model

        class Listy(Model):
            def predict(self, inputs):
                return [1, 2]
        """,
    )
    runtime = load_runtime(folder, None, RuntimeConfig())

    with pytest.raises(TypeError, match=r"Listy\.predict returned list, expected a dict"):
        runtime.predict({"x": np.zeros(1)})


def test_custom_model_import_error_is_model_failed(tmp_path: Path) -> None:
    folder = write_model(tmp_path / "m", "import ferryman_no_such_package\n")

    with pytest.raises(ModelFailed, match="ferryman_no_such_package"):
        load_runtime(folder, None, RuntimeConfig())


@pytest.mark.parametrize("entrypoint", ["serve", "../outside:Model", "serve:"])
def test_custom_entrypoint_must_name_a_module_and_class(tmp_path: Path, entrypoint: str) -> None:
    folder = write_model(tmp_path / "m", "", **{"model.yaml": f'entrypoint: "{entrypoint}"\n'})

    with pytest.raises(InvalidInput, match="must look like 'module:Class'"):
        load_runtime(folder, None, RuntimeConfig())


def test_sklearn_computes_only_the_outputs_asked_for(tmp_path: Path) -> None:
    from sklearn.linear_model import LogisticRegression

    from ferryman.runtimes.base import run_predict

    features, labels = load_iris(return_X_y=True)
    model = LogisticRegression(max_iter=300).fit(features, labels)
    joblib.dump(model, tmp_path / "m.joblib")
    runtime = load_runtime(tmp_path / "m.joblib", None, RuntimeConfig())
    only = run_predict(runtime, {"input": features[:5]}, frozenset({"predict"}))
    assert set(only) == {"predict"}
    np.testing.assert_array_equal(only["predict"], model.predict(features[:5]))
    assert set(run_predict(runtime, {"input": features[:5]})) == {"predict", "predict_proba"}


@pytest.mark.parametrize(
    ("estimator", "labels_as"),
    [
        ("sklearn.ensemble:RandomForestClassifier", "int"),
        ("sklearn.ensemble:ExtraTreesClassifier", "str"),
        ("sklearn.tree:DecisionTreeClassifier", "int"),
        ("sklearn.linear_model:LogisticRegression", "str"),
        ("sklearn.naive_bayes:GaussianNB", "int"),
    ],
)
def test_sklearn_predict_from_proba_matches_predict(tmp_path: Path, estimator: str, labels_as: str) -> None:
    """With both outputs wanted, predict comes from one predict_proba pass — and equals predict()."""
    import importlib

    module, name = estimator.split(":")
    features, labels = load_iris(return_X_y=True)
    target = np.array(["setosa", "versicolor", "virginica"])[labels] if labels_as == "str" else labels
    options = (
        {"random_state": 0} if "random_state" in importlib.import_module(module).__dict__[name]().get_params() else {}
    )
    model = importlib.import_module(module).__dict__[name](**options).fit(features, target)
    joblib.dump(model, tmp_path / "m.joblib")
    runtime = load_runtime(tmp_path / "m.joblib", None, RuntimeConfig())
    rng = np.random.default_rng(0)
    probe = rng.normal(features.mean(axis=0), features.std(axis=0) * 2, size=(2000, 4))

    calls = {"predict": 0}
    original = type(model).predict

    def counting_predict(self: Any, features: Any) -> Any:
        calls["predict"] += 1
        return original(self, features)

    out = runtime.predict({"input": probe})
    np.testing.assert_array_equal(out["predict"].astype(str), model.predict(probe).astype(str))
    np.testing.assert_allclose(out["predict_proba"], model.predict_proba(probe))
    loaded = runtime._model  # type: ignore[attr-defined]
    loaded.__class__ = type("Counting", (type(loaded),), {"predict": counting_predict})
    runtime.predict({"input": probe[:3]})
    assert calls["predict"] == 0, "predict should have been derived from predict_proba"
