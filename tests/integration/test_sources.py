"""Every runtime served end to end, pushes with samples, `serve ./artifact`, and repository folders."""

from __future__ import annotations

import io
import shutil
import time
from pathlib import Path

import httpx
import joblib
import lightgbm
import numpy as np
import pytest
import xgboost
from skl2onnx import to_onnx
from sklearn.datasets import load_breast_cancer
from sklearn.ensemble import RandomForestClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from ferryman.archive import pack_folder
from tests.conftest import ServerFactory, ServerProcess
from tests.integration.test_v2_rest import assert_error, push


@pytest.fixture(scope="module")
def cancer() -> tuple[np.ndarray, np.ndarray]:
    features, labels = load_breast_cancer(return_X_y=True)
    return features[:200, :8].astype(np.float32), labels[:200]


def v2_infer(url: str, model: str, name: str, datatype: str, rows: np.ndarray, version: str | None = None) -> dict:
    path = f"/v2/models/{model}" + (f"/versions/{version}" if version else "") + "/infer"
    document = {
        "inputs": [{"name": name, "datatype": datatype, "shape": list(rows.shape), "data": rows.ravel().tolist()}]
    }
    response = httpx.post(url + path, json=document, timeout=30)
    assert response.status_code == 200, response.text
    return {out["name"]: np.array(out["data"]).reshape(out["shape"]) for out in response.json()["outputs"]}


def test_each_runtime_serves_the_same_predictions_as_in_process(
    ferryman_server: ServerProcess, cancer: tuple[np.ndarray, np.ndarray], tmp_path: Path
) -> None:
    features, labels = cancer
    rows = features[:16]
    url = ferryman_server.url

    booster = xgboost.train({"objective": "binary:logistic", "max_depth": 3}, xgboost.DMatrix(features, labels), 10)
    for suffix in ("json", "ubj"):
        booster.save_model(tmp_path / f"xgb.{suffix}")
        created = push(url, f"xgb-{suffix}", tmp_path / f"xgb.{suffix}")["version"]
        assert created["framework"] == "xgboost"
        served = v2_infer(url, f"xgb-{suffix}", "input", "FP32", rows)["predict"]
        np.testing.assert_allclose(served, booster.predict(xgboost.DMatrix(rows)), rtol=1e-6)

    lgb = lightgbm.train(
        {"objective": "binary", "verbose": -1, "num_leaves": 7}, lightgbm.Dataset(features, labels), 10
    )
    lgb.save_model(tmp_path / "lgb.txt")
    assert push(url, "lgb", tmp_path / "lgb.txt")["version"]["framework"] == "lightgbm"
    np.testing.assert_allclose(v2_infer(url, "lgb", "input", "FP64", rows)["predict"], lgb.predict(rows))

    pipeline = make_pipeline(StandardScaler(), LogisticRegression(max_iter=500)).fit(features, labels)
    onnx_model = to_onnx(pipeline, features[:1], options={id(pipeline): {"zipmap": False}}, target_opset=17)
    (tmp_path / "lr.onnx").write_bytes(onnx_model.SerializeToString())
    version = push(url, "lr-onnx", tmp_path / "lr.onnx")["version"]
    assert version["framework"] == "onnx"
    assert [spec["name"] for spec in version["signature"]["outputs"]] == ["label", "probabilities"]
    served = v2_infer(url, "lr-onnx", "X", "FP32", rows)
    np.testing.assert_array_equal(served["label"], pipeline.predict(rows))
    np.testing.assert_allclose(served["probabilities"], pipeline.predict_proba(rows), atol=1e-5)

    forest = RandomForestClassifier(n_estimators=5, max_depth=3, random_state=0).fit(features, labels)
    joblib.dump(forest, tmp_path / "forest.pkl")
    assert push(url, "forest", tmp_path / "forest.pkl")["version"]["framework"] == "sklearn"
    served = v2_infer(url, "forest", "input", "FP64", rows.astype(np.float64))
    np.testing.assert_array_equal(served["predict"], forest.predict(rows))
    np.testing.assert_allclose(served["predict_proba"], forest.predict_proba(rows))


def test_push_with_a_sample_infers_the_signature(ferryman_server: ServerProcess, tmp_path: Path) -> None:
    model_dir = tmp_path / "doubler"
    model_dir.mkdir()
    (model_dir / "model.py").write_text(
        "import ferryman\n\nclass Doubler(ferryman.Model):\n"
        "    def predict(self, inputs):\n        return {'doubled': inputs['input'] * 2}\n"
    )
    sample = tmp_path / "sample.csv"
    sample.write_text("a,b,c\n1,2,3\n4,5,6\n")
    buffer = io.BytesIO()
    pack_folder(model_dir, buffer)
    response = httpx.post(
        f"{ferryman_server.url}/api/v1/models/doubler/versions",
        files={"artifact": ("doubler.tar", buffer.getvalue()), "sample": ("sample.csv", sample.read_bytes())},
        data={"metadata": '{"description": "doubles numbers"}'},
    )
    assert response.status_code == 201, response.text
    version = response.json()["version"]
    assert version["framework"] == "custom" and version["description"] == "doubles numbers"
    assert version["signature"] == {
        "inputs": [{"name": "input", "datatype": "FP64", "shape": [-1, 3]}],
        "outputs": [{"name": "doubled", "datatype": "FP64", "shape": [-1, 3]}],
    }
    served = v2_infer(ferryman_server.url, "doubler", "input", "FP64", np.array([[1.0, 2.0, 3.0]]))
    np.testing.assert_array_equal(served["doubled"], [[2.0, 4.0, 6.0]])
    response = httpx.post(
        f"{ferryman_server.url}/v2/models/doubler/infer",
        json={"inputs": [{"name": "input", "datatype": "FP64", "shape": [1, 2], "data": [1, 2]}]},
    )
    assert_error(response, 400, "shape [1, 2]", "[-1, 3]")


def test_bad_pushes_are_refused_and_nothing_is_registered(ferryman_server: ServerProcess, tmp_path: Path) -> None:
    url = ferryman_server.url
    (tmp_path / "notes.txt").write_text("not a model")
    response = httpx.post(f"{url}/api/v1/models/bad/versions", files={"artifact": ("notes.txt", b"not a model")})
    assert_error(response, 400, "notes.txt")
    response = httpx.post(f"{url}/api/v1/models/bad/versions", files={"artifact": ("broken.onnx", b"\x00garbage")})
    assert_error(response, 500, "broken.onnx")
    response = httpx.post(
        f"{url}/api/v1/models/bad/versions",
        files={"artifact": ("m.onnx", b"x")},
        data={"metadata": '{"framework": "tensorflow"}'},
    )
    assert_error(response, 400, "unknown framework 'tensorflow'")
    response = httpx.post(f"{url}/api/v1/models/bad/versions", data={"metadata": "{}"})
    assert_error(response, 400, "'artifact'")
    response = httpx.post(
        f"{url}/api/v1/models/bad/versions", files={"artifact": ("m.onnx", b"x")}, data={"metadata": "{oops"}
    )
    assert_error(response, 400, "'metadata'")
    assert_error(httpx.get(f"{url}/api/v1/models/bad"), 404, "model 'bad' not found")


def test_serve_an_artifact_file_directly(
    server_factory: ServerFactory, cancer: tuple[np.ndarray, np.ndarray], tmp_path: Path
) -> None:
    features, labels = cancer
    pipeline = make_pipeline(StandardScaler(), LogisticRegression(max_iter=500)).fit(features, labels)
    onnx_model = to_onnx(pipeline, features[:1], options={id(pipeline): {"zipmap": False}}, target_opset=17)
    path = tmp_path / "churn-model.onnx"
    path.write_bytes(onnx_model.SerializeToString())
    started = time.monotonic()
    server = server_factory(args=[str(path)])
    assert time.monotonic() - started < 30
    served = v2_infer(server.url, "churn-model", "X", "FP32", features[:4])
    np.testing.assert_array_equal(served["label"], pipeline.predict(features[:4]))
    server.stop()
    # Serving the same file again reuses the version instead of registering a new one.
    again = server_factory(home=server.home, args=[str(path)])
    assert httpx.get(f"{again.url}/api/v1/models/churn-model/versions").json()["versions"][-1]["version"] == 1


def test_repository_folder_is_served_and_new_versions_are_picked_up(
    server_factory: ServerFactory, iris_joblib: Path, iris_data: tuple[np.ndarray, np.ndarray], tmp_path: Path
) -> None:
    repo = tmp_path / "models"
    (repo / "flowers" / "1").mkdir(parents=True)
    shutil.copy(iris_joblib, repo / "flowers" / "1" / "model.joblib")
    (repo / "flowers" / "model.yaml").write_text("description: iris from a folder\n")
    server = server_factory(args=["--repository", str(repo)])
    row = np.array([[5.1, 3.5, 1.4, 0.2]])
    assert (
        httpx.post(
            f"{server.url}/v2/models/flowers/infer",
            json={"inputs": [{"name": "input", "datatype": "FP64", "shape": [1, 4], "data": row.ravel().tolist()}]},
        ).json()["model_version"]
        == "1"
    )
    listed = httpx.get(f"{server.url}/api/v1/models/flowers").json()
    assert listed["source"] == "repository" and listed["description"] == "iris from a folder"

    (repo / "flowers" / "2").mkdir()
    joblib.dump(LogisticRegression(C=0.05, max_iter=300).fit(*iris_data), repo / "flowers" / "2" / "model.joblib")
    deadline = time.monotonic() + 30
    served_version = None
    while time.monotonic() < deadline:
        served_version = httpx.post(
            f"{server.url}/v2/models/flowers/infer",
            json={"inputs": [{"name": "input", "datatype": "FP64", "shape": [1, 4], "data": row.ravel().tolist()}]},
        ).json()["model_version"]
        if served_version == "2":
            break
        time.sleep(0.05)  # sync-ok: polling interval while waiting on a condition with a deadline
    assert served_version == "2"
    assert httpx.get(f"{server.url}/v2/models/flowers").json()["versions"] == ["1", "2"]

    response = httpx.post(
        f"{server.url}/api/v1/models/flowers/versions",
        files={"artifact": ("m.joblib", iris_joblib.read_bytes())},
    )
    assert_error(response, 409, "read-only repository")


def test_serve_a_custom_model_folder_directly(server_factory: ServerFactory, tmp_path: Path) -> None:
    folder = tmp_path / "adder"
    folder.mkdir()
    (folder / "model.py").write_text(
        "import ferryman\nfrom ferryman import TensorSpec\n\n"
        "class Adder(ferryman.Model):\n"
        "    inputs = [TensorSpec('x', 'INT32', (-1,))]\n"
        "    outputs = [TensorSpec('y', 'INT32', (-1,))]\n\n"
        "    def predict(self, inputs):\n        return {'y': inputs['x'] + int(self.options.get('step', 1))}\n"
    )
    server = server_factory(args=[str(folder)])
    response = httpx.post(
        f"{server.url}/v2/models/adder/infer",
        json={"inputs": [{"name": "x", "datatype": "INT32", "shape": [3], "data": [1, 2, 3]}]},
    )
    assert response.status_code == 200, response.text
    assert response.json()["outputs"][0] == {"name": "y", "datatype": "INT32", "shape": [3], "data": [2, 3, 4]}
    assert httpx.get(f"{server.url}/api/v1/models/adder/versions/1").json()["framework"] == "custom"
