"""A V2 client written by others — NVIDIA's tritonclient — works against Ferryman unchanged."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import tritonclient.http as triton
from tritonclient.utils import InferenceServerException

from tests.conftest import ServerProcess
from tests.integration.test_v2_rest import ECHO_MODEL, push, write_model_folder


@pytest.fixture(scope="module")
def client(
    ferryman_server: ServerProcess, iris_joblib: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[triton.InferenceServerClient]:
    push(ferryman_server.url, "iris", iris_joblib)
    push(ferryman_server.url, "echo", write_model_folder(tmp_path_factory.mktemp("m"), "echo", ECHO_MODEL))
    connection = triton.InferenceServerClient(url=ferryman_server.url.removeprefix("http://"))
    yield connection
    connection.close()


def test_health_and_metadata(client: triton.InferenceServerClient) -> None:
    assert client.is_server_live()
    assert client.is_server_ready()
    assert "binary_tensor_data" in client.get_server_metadata()["extensions"]
    assert client.is_model_ready("iris")
    assert client.is_model_ready("iris", "1")
    metadata = client.get_model_metadata("iris")
    assert metadata["inputs"] == [{"name": "input", "datatype": "FP64", "shape": [-1, 4]}]
    with pytest.raises(InferenceServerException, match="not found"):
        client.get_model_metadata("missing")


@pytest.mark.parametrize("binary", [False, True])
def test_infer_matches_the_model_in_process(
    client: triton.InferenceServerClient,
    iris_pipeline: object,
    iris_data: tuple[np.ndarray, np.ndarray],
    binary: bool,
) -> None:
    features = iris_data[0][:7]
    tensor = triton.InferInput("input", list(features.shape), "FP64")
    tensor.set_data_from_numpy(features, binary_data=binary)
    outputs = [triton.InferRequestedOutput(name, binary_data=binary) for name in ("predict", "predict_proba")]
    result = client.infer("iris", [tensor], outputs=outputs, request_id="triton-1")
    assert result.get_response()["id"] == "triton-1"
    np.testing.assert_array_equal(result.as_numpy("predict"), iris_pipeline.predict(features))  # type: ignore[attr-defined]
    np.testing.assert_allclose(result.as_numpy("predict_proba"), iris_pipeline.predict_proba(features))  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("datatype", "array"),
    [
        ("INT8", np.array([[-3, 4]], dtype=np.int8)),
        ("UINT64", np.array([[2**63, 7]], dtype=np.uint64)),
        ("FP16", np.array([[0.5, -1.25]], dtype=np.float16)),
        ("BOOL", np.array([[True, False]])),
        ("BYTES", np.array([[b"ferry", b"man"]], dtype=object)),
    ],
)
def test_datatypes_round_trip_through_the_triton_client(
    client: triton.InferenceServerClient, datatype: str, array: np.ndarray
) -> None:
    for binary in (False, True):
        tensor = triton.InferInput("t", list(array.shape), datatype)
        tensor.set_data_from_numpy(array, binary_data=binary)
        result = client.infer("echo", [tensor], outputs=[triton.InferRequestedOutput("t_out", binary_data=binary)])
        returned = result.as_numpy("t_out")
        assert returned is not None
        if datatype == "BYTES" and not binary:
            # JSON carries BYTES as strings, and tritonclient hands them back as str (as with Triton).
            returned = np.vectorize(str.encode, otypes=[object])(returned)
        np.testing.assert_array_equal(returned, array)


def test_errors_surface_in_the_triton_client(client: triton.InferenceServerClient) -> None:
    tensor = triton.InferInput("input", [1, 3], "FP64")
    tensor.set_data_from_numpy(np.zeros((1, 3)))
    with pytest.raises(InferenceServerException, match=r"shape \[1, 3\]"):
        client.infer("iris", [tensor])
