"""The whole V2 REST surface against a real server, with requests built by hand from the spec."""

from __future__ import annotations

import io
import json
import struct
import textwrap
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import orjson
import pytest

from ferryman.archive import pack_folder
from tests.conftest import NUMERIC_DTYPES, ServerProcess

ECHO_MODEL = """
import ferryman

class Echo(ferryman.Model):
    def predict(self, inputs):
        return {name + "_out": value for name, value in inputs.items()}
"""

STRICT_MODEL = """
import numpy as np
import ferryman
from ferryman import TensorSpec

class Scale(ferryman.Model):
    inputs = [TensorSpec("x", "FP32", (-1, 3)), TensorSpec("k", "INT64", (-1,))]
    outputs = [TensorSpec("y", "FP32", (-1, 3))]

    def predict(self, inputs):
        return {"y": inputs["x"] * inputs["k"][:, None].astype(np.float32)}
"""


def push(url: str, name: str, artifact: Path) -> dict:
    """Push by hand with a multipart body, as any HTTP client would."""
    if artifact.is_dir():
        buffer = io.BytesIO()
        pack_folder(artifact, buffer)
        files = {"artifact": (f"{artifact.name}.tar", buffer.getvalue())}
    else:
        files = {"artifact": (artifact.name, artifact.read_bytes())}
    response = httpx.post(f"{url}/api/v1/models/{name}/versions", files=files, timeout=60)
    assert response.status_code in (200, 201), response.text
    return response.json()


def write_model_folder(root: Path, name: str, source: str) -> Path:
    folder = root / name
    folder.mkdir()
    (folder / "model.py").write_text(textwrap.dedent(source))
    return folder


@pytest.fixture(scope="module")
def server(
    ferryman_server: ServerProcess, iris_joblib: Path, tmp_path_factory: pytest.TempPathFactory
) -> ServerProcess:
    root = tmp_path_factory.mktemp("models")
    push(ferryman_server.url, "iris", iris_joblib)
    push(ferryman_server.url, "echo", write_model_folder(root, "echo", ECHO_MODEL))
    push(ferryman_server.url, "scale", write_model_folder(root, "scale", STRICT_MODEL))
    return ferryman_server


@pytest.fixture(scope="module")
def client(server: ServerProcess) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, timeout=30) as http:
        yield http


def infer(client: httpx.Client, model: str, document: dict, path_version: str | None = None) -> httpx.Response:
    path = f"/v2/models/{model}" + (f"/versions/{path_version}" if path_version else "") + "/infer"
    return client.post(path, content=orjson.dumps(document), headers={"content-type": "application/json"})


def binary_request(client: httpx.Client, model: str, header: dict, *chunks: bytes) -> httpx.Response:
    raw = orjson.dumps(header)
    return client.post(
        f"/v2/models/{model}/infer",
        content=raw + b"".join(chunks),
        headers={
            "content-type": "application/octet-stream",
            "inference-header-content-length": str(len(raw)),
        },
    )


def split_binary_response(response: httpx.Response) -> tuple[dict, bytes]:
    length = int(response.headers["inference-header-content-length"])
    return orjson.loads(response.content[:length]), response.content[length:]


def assert_error(response: httpx.Response, status: int, *fragments: str) -> None:
    assert response.status_code == status, response.text
    message = response.json()["error"]
    for fragment in fragments:
        assert fragment in message, message


# -- health and metadata ----------------------------------------------------------------------------


def test_health_and_server_metadata(client: httpx.Client) -> None:
    assert client.get("/v2/health/live").status_code == 200
    assert client.get("/v2/health/ready").json() == {"ready": True}
    metadata = client.get("/v2").json()
    assert metadata["name"] == "ferryman"
    assert "binary_tensor_data" in metadata["extensions"]
    assert client.get("/v2/health/live").headers["x-request-id"]
    assert client.get("/v2", headers={"x-request-id": "abc-123"}).headers["x-request-id"] == "abc-123"


def test_model_metadata_and_readiness(client: httpx.Client) -> None:
    metadata = client.get("/v2/models/iris").json()
    assert metadata == {
        "name": "iris",
        "versions": ["1"],
        "platform": "sklearn",
        "inputs": [{"name": "input", "datatype": "FP64", "shape": [-1, 4]}],
        "outputs": [
            {"name": "predict", "datatype": "INT64", "shape": [-1]},
            {"name": "predict_proba", "datatype": "FP64", "shape": [-1, 3]},
        ],
    }
    assert client.get("/v2/models/iris/versions/1").json() == metadata
    assert client.get("/v2/models/iris/ready").json() == {"name": "iris", "ready": True}
    assert client.get("/v2/models/iris/versions/1/ready").status_code == 200
    assert_error(client.get("/v2/models/nope"), 404, "model 'nope' not found")
    assert_error(client.get("/v2/models/iris/versions/9"), 404, "no version 9")
    assert_error(client.get("/v2/models/iris/versions/9/ready"), 404, "no version 9")


# -- inference ----------------------------------------------------------------------------------------


def test_iris_prediction_matches_the_model_in_process(
    client: httpx.Client, iris_pipeline: object, iris_data: tuple[np.ndarray, np.ndarray]
) -> None:
    features = iris_data[0][::10]
    response = infer(
        client,
        "iris",
        {
            "id": "req-7",
            "inputs": [
                {
                    "name": "input",
                    "datatype": "FP64",
                    "shape": list(features.shape),
                    "data": features.tolist(),
                }
            ],
        },
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert (body["model_name"], body["model_version"], body["id"]) == ("iris", "1", "req-7")
    outputs = {out["name"]: out for out in body["outputs"]}
    np.testing.assert_array_equal(outputs["predict"]["data"], iris_pipeline.predict(features))  # type: ignore[attr-defined]
    proba = np.array(outputs["predict_proba"]["data"]).reshape(outputs["predict_proba"]["shape"])
    np.testing.assert_allclose(proba, iris_pipeline.predict_proba(features))  # type: ignore[attr-defined]


def test_flat_data_and_requested_outputs(client: httpx.Client) -> None:
    row = [5.1, 3.5, 1.4, 0.2, 6.7, 3.0, 5.2, 2.3]
    response = infer(
        client,
        "iris",
        {
            "inputs": [{"name": "input", "datatype": "FP32", "shape": [2, 4], "data": row}],
            "outputs": [{"name": "predict"}],
        },
        path_version="1",
    )
    assert response.status_code == 200, response.text
    assert [out["name"] for out in response.json()["outputs"]] == ["predict"]
    assert response.json()["outputs"][0]["data"] == [0, 2]


@pytest.mark.parametrize("datatype", sorted(NUMERIC_DTYPES))
def test_every_numeric_datatype_round_trips_in_json_and_binary(client: httpx.Client, datatype: str) -> None:
    dtype = NUMERIC_DTYPES[datatype]
    array = (np.arange(6) % 2).astype(dtype) if datatype == "BOOL" else np.arange(6).astype(dtype).reshape(2, 3)
    array = array.reshape(2, 3)
    data = array.tolist()
    response = infer(client, "echo", {"inputs": [{"name": "t", "datatype": datatype, "shape": [2, 3], "data": data}]})
    assert response.status_code == 200, response.text
    out = response.json()["outputs"][0]
    assert (out["name"], out["datatype"], out["shape"]) == ("t_out", datatype, [2, 3])
    np.testing.assert_array_equal(np.array(out["data"], dtype=dtype).reshape(2, 3), array)

    raw = array.astype(np.dtype(dtype).newbyteorder("<")).tobytes()
    response = binary_request(
        client,
        "echo",
        {
            "inputs": [
                {
                    "name": "t",
                    "datatype": datatype,
                    "shape": [2, 3],
                    "parameters": {"binary_data_size": len(raw)},
                }
            ],
            "outputs": [{"name": "t_out", "parameters": {"binary_data": True}}],
        },
        raw,
    )
    assert response.status_code == 200, response.text
    header, payload = split_binary_response(response)
    out = header["outputs"][0]
    assert out["parameters"]["binary_data_size"] == len(raw)
    assert payload == raw


def test_bytes_and_bf16_datatypes(client: httpx.Client) -> None:
    response = infer(
        client, "echo", {"inputs": [{"name": "s", "datatype": "BYTES", "shape": [2], "data": ["hi", "żółw"]}]}
    )
    assert response.json()["outputs"][0]["data"] == ["hi", "żółw"]
    assert response.json()["outputs"][0]["datatype"] == "BYTES"

    packed = b"".join(struct.pack("<I", len(w)) + w for w in [b"\x00\xffraw", b"x"])
    response = binary_request(
        client,
        "echo",
        {
            "inputs": [
                {
                    "name": "s",
                    "datatype": "BYTES",
                    "shape": [2],
                    "parameters": {"binary_data_size": len(packed)},
                }
            ],
            "parameters": {"binary_data_output": True},
        },
        packed,
    )
    header, payload = split_binary_response(response)
    assert payload == packed and header["outputs"][0]["datatype"] == "BYTES"

    floats = np.array([1.5, -2.0], dtype=np.float32)
    bf16 = (floats.view(np.uint32) >> 16).astype("<u2").tobytes()
    response = binary_request(
        client,
        "echo",
        {
            "inputs": [{"name": "b", "datatype": "BF16", "shape": [2], "parameters": {"binary_data_size": 4}}],
        },
        bf16,
    )
    assert response.status_code == 200, response.text
    assert response.json()["outputs"][0]["data"] == [1.5, -2.0]


def test_binary_request_json_response_and_mixed_outputs(client: httpx.Client) -> None:
    x = np.arange(6, dtype="<f4").reshape(2, 3)
    k = np.array([2, 3], dtype="<i8")
    response = binary_request(
        client,
        "scale",
        {
            "inputs": [
                {
                    "name": "x",
                    "datatype": "FP32",
                    "shape": [2, 3],
                    "parameters": {"binary_data_size": x.nbytes},
                },
                {"name": "k", "datatype": "INT64", "shape": [2], "data": [2, 3]},
            ],
        },
        x.tobytes(),
    )
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("application/json")
    np.testing.assert_array_equal(response.json()["outputs"][0]["data"], (x * k[:, None]).ravel())

    response = infer(
        client,
        "scale",
        {
            "inputs": [
                {"name": "x", "datatype": "FP32", "shape": [2, 3], "data": x.tolist()},
                {"name": "k", "datatype": "INT64", "shape": [2], "data": [2, 3]},
            ],
            "parameters": {"binary_data_output": True},
        },
    )
    header, payload = split_binary_response(response)
    assert header["outputs"][0]["parameters"]["binary_data_size"] == 24
    np.testing.assert_array_equal(np.frombuffer(payload, "<f4").reshape(2, 3), x * k[:, None])


def test_raw_binary_request_with_zero_header_length(client: httpx.Client) -> None:
    row = np.array([[5.1, 3.5, 1.4, 0.2]], dtype="<f8")
    response = client.post(
        "/v2/models/iris/infer",
        content=row.tobytes(),
        headers={"content-type": "application/octet-stream", "inference-header-content-length": "0"},
    )
    assert response.status_code == 200, response.text
    header, payload = split_binary_response(response)
    sizes = [out["parameters"]["binary_data_size"] for out in header["outputs"]]
    assert sizes == [8, 24]
    assert np.frombuffer(payload[:8], "<i8")[0] == 0


# -- bad input ----------------------------------------------------------------------------------------


def test_malformed_json(client: httpx.Client) -> None:
    response = client.post(
        "/v2/models/iris/infer", content=b'{"inputs": [', headers={"content-type": "application/json"}
    )
    assert_error(response, 400, "malformed JSON")


def test_unknown_model_and_version(client: httpx.Client) -> None:
    document = {"inputs": [{"name": "input", "datatype": "FP64", "shape": [1, 4], "data": [1, 2, 3, 4]}]}
    assert_error(infer(client, "nope", document), 404, "model 'nope' not found")
    assert_error(infer(client, "iris", document, path_version="7"), 404, "no version 7")
    assert_error(infer(client, "iris", document, path_version="staging"), 404, "no version or alias 'staging'")


@pytest.mark.parametrize(
    ("inputs", "status", "fragments"),
    [
        (
            [{"name": "input", "datatype": "BYTES", "shape": [1], "data": ["a"]}],
            400,
            ["'input'", "BYTES", "FP64"],
        ),
        ([{"name": "input", "datatype": "BOOL", "shape": [1, 4], "data": [True] * 4}], 400, ["BOOL"]),
        (
            [{"name": "input", "datatype": "FP64", "shape": [1, 3], "data": [1, 2, 3]}],
            400,
            ["shape [1, 3]", "[-1, 4]"],
        ),
        ([{"name": "input", "datatype": "FP64", "shape": [4], "data": [1, 2, 3, 4]}], 400, ["shape [4]"]),
        (
            [{"name": "input", "datatype": "FP64", "shape": [1, 4], "data": [1, 2, 3]}],
            400,
            ["needs 4 elements"],
        ),
        (
            [{"name": "other", "datatype": "FP64", "shape": [1, 4], "data": [1, 2, 3, 4]}],
            400,
            ["unknown input 'other'"],
        ),
        (
            [
                {"name": "input", "datatype": "FP64", "shape": [1, 4], "data": [1, 2, 3, 4]},
                {"name": "extra", "datatype": "FP64", "shape": [1], "data": [1]},
            ],
            400,
            ["unknown input 'extra'"],
        ),
        (
            [{"name": "input", "datatype": "FP64", "shape": [1, 4], "data": ["a", "b", "c", "d"]}],
            400,
            ["non-numeric"],
        ),
    ],
)
def test_invalid_inputs_are_named(client: httpx.Client, inputs: list, status: int, fragments: list[str]) -> None:
    assert_error(infer(client, "iris", {"inputs": inputs}), status, *fragments)


def test_missing_input_and_unknown_output(client: httpx.Client) -> None:
    response = infer(
        client, "scale", {"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 3], "data": [1, 2, 3]}]}
    )
    assert_error(response, 400, "missing input 'k'")
    response = infer(
        client,
        "iris",
        {
            "inputs": [{"name": "input", "datatype": "FP64", "shape": [1, 4], "data": [1, 2, 3, 4]}],
            "outputs": [{"name": "nope"}],
        },
    )
    assert_error(response, 400, "unknown output 'nope'", "predict")


def test_nan_is_refused_where_the_signature_forbids_it(client: httpx.Client) -> None:
    body = json.dumps(
        {"inputs": [{"name": "input", "datatype": "FP64", "shape": [1, 4], "data": [1, float("nan"), 3, 4]}]}
    )
    response = client.post("/v2/models/iris/infer", content=body, headers={"content-type": "application/json"})
    assert_error(response, 400, "'input' contains NaN")
    raw = np.array([[1, np.nan, 3, 4]], dtype="<f8").tobytes()
    response = binary_request(
        client,
        "iris",
        {
            "inputs": [{"name": "input", "datatype": "FP64", "shape": [1, 4], "parameters": {"binary_data_size": 32}}],
        },
        raw,
    )
    assert_error(response, 400, "contains NaN")


def test_bytes_tensor_given_numbers(client: httpx.Client) -> None:
    response = infer(client, "echo", {"inputs": [{"name": "s", "datatype": "BYTES", "shape": [2], "data": [1, 2]}]})
    assert_error(response, 400, "'s'", "BYTES data must be strings")


def test_binary_header_length_that_disagrees_with_the_body(client: httpx.Client) -> None:
    header = orjson.dumps(
        {"inputs": [{"name": "input", "datatype": "FP64", "shape": [1, 4], "parameters": {"binary_data_size": 32}}]}
    )
    body = header + np.zeros(4, "<f8").tobytes()
    for bad_length, fragment in [
        (len(body) + 10, "Inference-Header-Content-Length"),
        (len(header) - 3, "malformed JSON"),
        ("abc", "non-negative integer"),
    ]:
        response = client.post(
            "/v2/models/iris/infer",
            content=body,
            headers={"inference-header-content-length": str(bad_length)},
        )
        assert_error(response, 400, fragment)
    response = client.post(
        "/v2/models/iris/infer",
        content=body[:-8],
        headers={"inference-header-content-length": str(len(header))},
    )
    assert_error(response, 400, "binary_data_size 32 runs past the end")


def test_model_that_raises_is_a_500_naming_it(client: httpx.Client) -> None:
    # k is INT64 but a value out of the float range the model expects is fine; an empty batch with
    # mismatched rows makes the model itself raise.
    response = infer(
        client,
        "scale",
        {
            "inputs": [
                {"name": "x", "datatype": "FP32", "shape": [2, 3], "data": [1, 2, 3, 4, 5, 6]},
                {"name": "k", "datatype": "INT64", "shape": [3], "data": [1, 2, 3]},
            ]
        },
    )
    assert_error(response, 500, "model 'scale' version 1 failed")
    assert client.get("/v2/health/live").status_code == 200
