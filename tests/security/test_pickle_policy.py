"""allow_pickle: false refuses pickle formats at push and at load; skops models are served instead.

The server's registry first receives a joblib version the way a permissive server would have
stored it (the real intake, default policy); then the server starts with ``allow_pickle: false``.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import joblib
import numpy as np
import pytest
import skops.io as sio
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import FunctionTransformer

from ferryman.client import Client
from ferryman.errors import Forbidden, InvalidInput
from ferryman.registry.intake import IntakeRequest, ModelIntake
from tests.conftest import ServerProcess
from tests.security.conftest import IRIS_ROW, open_registry, registry_state

HINT = ("skops", "ONNX")


def _double(features: Any) -> Any:
    """A function of this module: a type skops must not be told to trust."""
    return features * 2


@pytest.fixture(scope="module")
def iris_skops(tmp_path_factory: pytest.TempPathFactory, iris_pipeline: object) -> Path:
    path = tmp_path_factory.mktemp("skops") / "iris.skops"
    sio.dump(iris_pipeline, path)
    return path


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, iris_joblib: Path) -> Iterator[tuple[ServerProcess, Path]]:
    """A server with allow_pickle: false whose registry already holds a joblib version."""
    home = tmp_path_factory.mktemp("no-pickle") / "home"
    registry = open_registry(home)
    intake = ModelIntake(registry, registry.artifacts, 1 << 30)
    intake.register(registry.artifacts.stage_path(iris_joblib), IntakeRequest(name="pickled"))
    process = ServerProcess(home, [], {"FERRYMAN_ALLOW_PICKLE": "false"})
    process.wait_ready()
    yield process, home
    process.stop()


def test_a_pickle_stored_earlier_is_not_loaded(server: tuple[ServerProcess, Path]) -> None:
    process, _ = server
    with httpx.Client(base_url=process.url, timeout=30) as client:
        answer = client.post("/v2/models/pickled/infer", json=IRIS_ROW)
        version = client.get("/api/v1/models/pickled/versions/1").json()
    assert answer.status_code == 500, answer.text
    error = answer.json()["error"]
    assert "model 'pickled' version 1 cannot be loaded" in error
    assert "allow_pickle: false" in error
    assert all(hint in error for hint in HINT)
    assert version["state"] == "failed"
    assert "allow_pickle: false" in version["state_reason"]


def test_pickle_pushes_are_refused_with_the_safe_formats_named(
    server: tuple[ServerProcess, Path], iris_joblib: Path, iris_pipeline: object, tmp_path: Path
) -> None:
    process, home = server
    pkl = tmp_path / "model.pkl"
    shutil.copyfile(iris_joblib, pkl)
    # A custom model whose folder carries a pickle under a neutral name: found by its first bytes.
    folder = tmp_path / "custom"
    folder.mkdir()
    (folder / "model.py").write_text("from ferryman import Model\n\nclass M(Model):\n    pass\n")
    joblib.dump(iris_pipeline, folder / "weights.dat")
    before = registry_state(home)
    with Client(process.url) as client:
        for path in (iris_joblib, pkl, folder):
            with pytest.raises(Forbidden) as refused:
                client.push(path, "refused")
            assert refused.value.status == 403
            assert "allow_pickle: false" in refused.value.message
            assert all(hint in refused.value.message for hint in HINT), refused.value.message
    assert registry_state(home) == before


def test_a_skops_model_is_served_with_the_in_process_predictions(
    server: tuple[ServerProcess, Path], iris_skops: Path, iris_pipeline: Any, iris_data: tuple[np.ndarray, np.ndarray]
) -> None:
    process, _ = server
    features = iris_data[0][::15]
    with Client(process.url) as client:
        result = client.push(iris_skops, "iris-skops")
        assert result["created"] is True
        assert result["version"]["framework"] == "sklearn"
        answer = client.infer("iris-skops", features)
    np.testing.assert_array_equal(answer.outputs["predict"], iris_pipeline.predict(features))
    np.testing.assert_allclose(answer.outputs["predict_proba"], iris_pipeline.predict_proba(features), rtol=1e-12)


def test_a_skops_file_with_types_outside_sklearn_and_numpy_is_refused(
    server: tuple[ServerProcess, Path], iris_data: tuple[np.ndarray, np.ndarray], tmp_path: Path
) -> None:
    process, home = server
    features, labels = iris_data
    model = make_pipeline(FunctionTransformer(_double), LogisticRegression(max_iter=500)).fit(features, labels)
    path = tmp_path / "foreign.skops"
    sio.dump(model, path)
    before = registry_state(home)
    with Client(process.url) as client, pytest.raises(InvalidInput) as refused:
        client.push(path, "foreign")
    assert refused.value.status == 400
    assert "holds types outside scikit-learn and numpy" in refused.value.message
    assert "test_pickle_policy._double" in refused.value.message
    assert registry_state(home) == before
