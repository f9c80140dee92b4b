"""Reading pushed samples and completing a model's signature from them."""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Any

import joblib
import numpy as np
import pytest
from sklearn.datasets import load_iris

from ferryman.errors import InvalidInput
from ferryman.runtimes import RuntimeConfig, load_runtime
from ferryman.runtimes.base import Runtime
from ferryman.runtimes.samples import infer_signature, read_sample
from ferryman.tensors import Signature, TensorSpec

# --- read_sample --------------------------------------------------------------------------------


def test_csv_without_header(tmp_path: Path) -> None:
    (tmp_path / "s.csv").write_text("1,2.5,3\n4,5,6e1\n")

    sample = read_sample(tmp_path / "s.csv")

    assert sample.dtype == np.float64
    np.testing.assert_array_equal(sample, [[1, 2.5, 3], [4, 5, 60]])


def test_csv_with_header_and_missing_values(tmp_path: Path) -> None:
    (tmp_path / "s.csv").write_text("age,income\n31,\n45,1000\n\n")

    sample = read_sample(tmp_path / "s.csv")

    np.testing.assert_array_equal(sample, [[31, np.nan], [45, 1000]])


def test_csv_with_text_is_an_object_array_of_str(tmp_path: Path) -> None:
    (tmp_path / "s.csv").write_text("city,rooms\nOslo,3\nBergen,2\n")

    sample = read_sample(tmp_path / "s.csv")

    assert sample.dtype == object
    assert sample.tolist() == [["Oslo", "3"], ["Bergen", "2"]]


@pytest.mark.parametrize(
    ("text", "message"),
    [("", "no data rows"), ("a,b\n", "no data rows"), ("1,2\n3\n", "rows of different lengths")],
)
def test_csv_errors(tmp_path: Path, text: str, message: str) -> None:
    (tmp_path / "s.csv").write_text(text)

    with pytest.raises(InvalidInput, match=message):
        read_sample(tmp_path / "s.csv")


def test_npy(tmp_path: Path) -> None:
    np.save(tmp_path / "s.npy", np.arange(6, dtype=np.int32).reshape(3, 2))

    sample = read_sample(tmp_path / "s.npy")

    assert sample.dtype == np.int32
    np.testing.assert_array_equal(sample, [[0, 1], [2, 3], [4, 5]])


def test_npy_with_pickled_objects_is_refused(tmp_path: Path) -> None:
    np.save(tmp_path / "s.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)

    with pytest.raises(InvalidInput, match=r"cannot read sample s\.npy"):
        read_sample(tmp_path / "s.npy")


def test_other_suffix_is_refused(tmp_path: Path) -> None:
    (tmp_path / "s.parquet").write_bytes(b"PAR1")

    with pytest.raises(InvalidInput, match=r"s\.parquet must be a \.npy or \.csv file"):
        read_sample(tmp_path / "s.parquet")


# --- infer_signature ----------------------------------------------------------------------------


@pytest.fixture
def iris_classifier(tmp_path: Path) -> tuple[Runtime, np.ndarray[Any, Any]]:
    from sklearn.linear_model import LogisticRegression

    X, y = load_iris(return_X_y=True)
    joblib.dump(LogisticRegression(max_iter=500).fit(X, y), tmp_path / "model.joblib")
    return load_runtime(tmp_path / "model.joblib", None, RuntimeConfig()), X


def test_sklearn_signature_is_confirmed_by_its_sample(iris_classifier: Any) -> None:
    runtime, X = iris_classifier

    assert infer_signature(runtime, X[:5]) == runtime.signature()
    assert infer_signature(runtime, None) == runtime.signature()


def test_sample_with_nan_allows_nan(iris_classifier: Any, tmp_path: Path) -> None:
    from sklearn.ensemble import HistGradientBoostingClassifier

    runtime, X = iris_classifier
    sample = X[:5].copy()
    sample[0, 0] = np.nan
    joblib.dump(HistGradientBoostingClassifier(max_iter=2).fit(X, X[:, 0] > 5), tmp_path / "hgb.joblib")
    tolerant = load_runtime(tmp_path / "hgb.joblib", None, RuntimeConfig())

    signature = infer_signature(tolerant, sample)

    assert signature.inputs == (TensorSpec("input", "FP64", (-1, 4), allow_nan=True),)
    assert signature.outputs[0] == TensorSpec("predict", "BOOL", (-1,))
    with pytest.raises(InvalidInput, match="does not run through the model: ValueError"):
        infer_signature(runtime, sample)  # LogisticRegression refuses NaN


def test_multi_output_regressor_gets_its_output_shape(tmp_path: Path) -> None:
    from sklearn.linear_model import LinearRegression

    rng = np.random.default_rng(0)
    X, y = rng.normal(size=(20, 3)), rng.normal(size=(20, 2))
    joblib.dump(LinearRegression().fit(X, y), tmp_path / "model.joblib")
    runtime = load_runtime(tmp_path / "model.joblib", None, RuntimeConfig())

    signature = infer_signature(runtime, X[:4])

    assert signature.outputs == (TensorSpec("predict", "FP64", (-1, 2)),)


def test_sample_of_the_wrong_width_does_not_run(iris_classifier: Any) -> None:
    runtime, _ = iris_classifier

    with pytest.raises(InvalidInput, match=r"shape \[2, 3\], but the model declares \[-1, 4\]"):
        infer_signature(runtime, np.zeros((2, 3)))


def test_declared_float32_input_stays_float32(tmp_path: Path) -> None:
    import xgboost

    X, y = load_iris(return_X_y=True)
    params = {"objective": "reg:squarederror", "nthread": 1}
    xgboost.train(params, xgboost.DMatrix(X, label=y), num_boost_round=2).save_model(tmp_path / "m.json")
    runtime = load_runtime(tmp_path / "m.json", None, RuntimeConfig(threads=1))

    signature = infer_signature(runtime, X[:3])  # float64, like every CSV sample

    assert signature == runtime.signature()


def _custom(tmp_path: Path, source: str) -> Runtime:
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "model.py").write_text(textwrap.dedent(source))
    return load_runtime(tmp_path / "m", None, RuntimeConfig())


def test_custom_open_inputs_are_filled_from_the_sample(tmp_path: Path) -> None:
    runtime = _custom(
        tmp_path,
        """
        import numpy as np
        from ferryman import Model

        class Lengths(Model):
            def predict(self, inputs):
                text = inputs["input"]
                return {"length": np.array([len(s) for s in text[:, 0]]), "first": text[:, :1]}
        """,
    )
    sample = np.array([["ferry", "a"], ["man", "b"]], dtype=object)

    signature = infer_signature(runtime, sample)

    assert signature == Signature(
        inputs=(TensorSpec("input", "BYTES", (-1, 2)),),
        outputs=(TensorSpec("length", "INT64", (-1,)), TensorSpec("first", "BYTES", (-1, 1))),
    )


def test_custom_declared_outputs_keep_their_order_and_dynamic_sizes(tmp_path: Path) -> None:
    runtime = _custom(
        tmp_path,
        """
        from ferryman import Model, TensorSpec

        class Pair(Model):
            outputs = [TensorSpec("b", "FP32", (-1, -1)), TensorSpec("a", "FP32", (-1,))]

            def predict(self, inputs):
                x = inputs["input"]
                return {"a": x.sum(axis=1), "b": x, "extra": x}
        """,
    )

    signature = infer_signature(runtime, np.ones((3, 2), dtype=np.float32))

    assert signature == Signature(
        inputs=(TensorSpec("input", "FP32", (-1, 2)),),
        outputs=(TensorSpec("b", "FP32", (-1, -1)), TensorSpec("a", "FP32", (-1,))),
    )


def test_custom_model_with_two_inputs_cannot_take_one_sample(tmp_path: Path) -> None:
    runtime = _custom(
        tmp_path,
        """
        from ferryman import Model, TensorSpec

        class Two(Model):
            inputs = [TensorSpec("a", "FP32", (-1,)), TensorSpec("b", "FP32", (-1,))]
        """,
    )

    with pytest.raises(InvalidInput, match="declares these: a, b"):
        infer_signature(runtime, np.ones(3))
