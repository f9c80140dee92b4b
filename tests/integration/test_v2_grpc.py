"""The V2 gRPC adapter on a real server: Triton's client and raw stubs, typed and raw contents, errors, deadlines."""

from __future__ import annotations

import re
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import httpx
import numpy as np
import pytest
import tritonclient.grpc as triton

from ferryman.protocols.v2_grpc_messages import SERVICE, v2_messages
from tests.conftest import ServerProcess, wait_for
from tests.integration.test_deadlines import SLOW_MODEL, occupy, push_folder
from tests.integration.test_v2_rest import ECHO_MODEL, push, write_model_folder

M = v2_messages()
#: The log line naming the bound gRPC port (host is an address or a bracketed IPv6 address).
LISTENING = r"gRPC \(V2\) listening on (?:\[[^\]]*\]|[^:\s\"]+):(\d+)"
_RESPONSES = {
    "ServerLive": M.ServerLiveResponse,
    "ServerReady": M.ServerReadyResponse,
    "ModelReady": M.ModelReadyResponse,
    "ServerMetadata": M.ServerMetadataResponse,
    "ModelMetadata": M.ModelMetadataResponse,
    "ModelInfer": M.ModelInferResponse,
}


def grpc_port(server: ServerProcess) -> int:
    """The gRPC port the server logged (it was started with ``--grpc-port 0``)."""
    pattern = re.compile(LISTENING)
    wait_for(lambda: pattern.search(server.logs()), "the gRPC port in the server log", deadline_s=10)
    found = pattern.search(server.logs())
    assert found is not None
    return int(found.group(1))


def call(channel: grpc.Channel, method: str, request: Any, **kwargs: Any) -> Any:
    """One unary call through the raw stubs, e.g. ``call(channel, "ModelInfer", M.ModelInferRequest(...))``."""
    stub = channel.unary_unary(
        f"/{SERVICE}/{method}",
        request_serializer=type(request).SerializeToString,
        response_deserializer=_RESPONSES[method].FromString,
    )
    return stub(request, **kwargs)


def error_of(channel: grpc.Channel, method: str, request: Any, **kwargs: Any) -> grpc.RpcError:
    """The error a call ends with (fails the test when it succeeds)."""
    with pytest.raises(grpc.RpcError) as caught:
        call(channel, method, request, **kwargs)
    return caught.value


def iris_request(features: np.ndarray, *, raw: bool) -> Any:
    request = M.ModelInferRequest(model_name="iris", id="grpc-1")
    tensor = request.inputs.add(name="input", datatype="FP64", shape=list(features.shape))
    if raw:
        request.raw_input_contents.append(features.astype("<f8").tobytes())
    else:
        tensor.contents.fp64_contents.extend(features.reshape(-1).tolist())
    return request


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, iris_joblib: Path) -> Iterator[ServerProcess]:
    root = tmp_path_factory.mktemp("grpc")
    process = ServerProcess(root / "home", ["--grpc-port", "0"])
    process.wait_ready()
    push(process.url, "iris", iris_joblib)
    push(process.url, "echo", write_model_folder(root, "echo", ECHO_MODEL))
    push_folder(
        process.url, "slow", SLOW_MODEL, root, {"batching": {"enabled": True}, "marker": str(root / "slow.marker")}
    )
    process.markers = root  # type: ignore[attr-defined]
    yield process
    process.stop()


@pytest.fixture(scope="module")
def channel(server: ServerProcess) -> Iterator[grpc.Channel]:
    with grpc.insecure_channel(f"127.0.0.1:{grpc_port(server)}") as opened:
        yield opened


@pytest.fixture(scope="module")
def client(server: ServerProcess) -> Iterator[triton.InferenceServerClient]:
    connection = triton.InferenceServerClient(url=f"127.0.0.1:{grpc_port(server)}")
    yield connection
    connection.close()


def test_health_and_metadata_through_the_triton_client(
    server: ServerProcess, client: triton.InferenceServerClient
) -> None:
    assert client.is_server_live() and client.is_server_ready()
    assert client.get_server_metadata().name == "ferryman"
    assert client.is_model_ready("iris") and client.is_model_ready("iris", "1")
    metadata = client.get_model_metadata("iris", as_json=True)
    rest = httpx.get(f"{server.url}/v2/models/iris").json()
    assert metadata["name"] == "iris" and metadata["versions"] == rest["versions"] and metadata["platform"] == "sklearn"
    for key in ("inputs", "outputs"):
        assert [{**t, "shape": [int(d) for d in t["shape"]]} for t in metadata[key]] == rest[key]


@pytest.mark.parametrize("raw", [True, False])
def test_infer_matches_the_rest_answer(
    server: ServerProcess, channel: grpc.Channel, iris_data: tuple[np.ndarray, np.ndarray], raw: bool
) -> None:
    features = iris_data[0][:7]
    answer = call(channel, "ModelInfer", iris_request(features, raw=raw))
    body = {"inputs": [{"name": "input", "datatype": "FP64", "shape": [7, 4], "data": features.reshape(-1).tolist()}]}
    rest = {o["name"]: o for o in httpx.post(f"{server.url}/v2/models/iris/infer", json=body).json()["outputs"]}
    assert answer.model_name == "iris" and answer.model_version == "1" and answer.id == "grpc-1"
    assert len(answer.raw_output_contents) == (2 if raw else 0)
    for position, output in enumerate(answer.outputs):
        expected = rest[output.name]
        assert output.datatype == expected["datatype"] and list(output.shape) == expected["shape"]
        if raw:
            data = np.frombuffer(
                answer.raw_output_contents[position], dtype="<i8" if output.datatype == "INT64" else "<f8"
            )
        else:
            data = np.array(output.contents.int64_contents or output.contents.fp64_contents)
        np.testing.assert_allclose(data, np.array(expected["data"]), rtol=0, atol=0)


def test_triton_client_infer_with_every_datatype(client: triton.InferenceServerClient) -> None:
    for datatype, array in [
        ("INT8", np.array([[-3, 4]], dtype=np.int8)),
        ("UINT64", np.array([[2**63, 7]], dtype=np.uint64)),
        ("FP16", np.array([[0.5, -1.25]], dtype=np.float16)),
        ("BOOL", np.array([[True, False]])),
        ("BYTES", np.array([[b"ferry", b"man"]], dtype=object)),
    ]:
        tensor = triton.InferInput("t", list(array.shape), datatype)
        tensor.set_data_from_numpy(array)
        result = client.infer("echo", [tensor], outputs=[triton.InferRequestedOutput("t_out")])
        np.testing.assert_array_equal(result.as_numpy("t_out"), array)


def test_typed_contents_round_trip(channel: grpc.Channel) -> None:
    request = M.ModelInferRequest(model_name="echo")
    request.inputs.add(name="b", datatype="BYTES", shape=[2]).contents.bytes_contents.extend([b"a", b"bc"])
    request.inputs.add(name="i", datatype="INT16", shape=[1, 2]).contents.int_contents.extend([-7, 300])
    request.inputs.add(name="f", datatype="FP32", shape=[2]).contents.fp32_contents.extend([0.5, 2.0])
    answer = call(channel, "ModelInfer", request)
    outputs = {o.name: o for o in answer.outputs}
    assert list(outputs["b_out"].contents.bytes_contents) == [b"a", b"bc"]
    assert list(outputs["i_out"].contents.int_contents) == [-7, 300] and list(outputs["i_out"].shape) == [1, 2]
    assert list(outputs["f_out"].contents.fp32_contents) == [0.5, 2.0]


def test_errors_map_to_status_codes_naming_the_field(channel: grpc.Channel) -> None:
    missing = error_of(channel, "ModelInfer", M.ModelInferRequest(model_name="nope"))
    assert missing.code() == grpc.StatusCode.NOT_FOUND and "nope" in missing.details()
    assert error_of(channel, "ModelMetadata", M.ModelMetadataRequest(name="nope")).code() == grpc.StatusCode.NOT_FOUND
    bad_shape = error_of(channel, "ModelInfer", iris_request(np.zeros((1, 3)), raw=True))
    assert bad_shape.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "input" in bad_shape.details() and "[1, 3]" in bad_shape.details()
    request = M.ModelInferRequest(model_name="iris")
    request.inputs.add(name="input", datatype="FP99", shape=[1, 4])
    bad_type = error_of(channel, "ModelInfer", request)
    assert bad_type.code() == grpc.StatusCode.INVALID_ARGUMENT and "input 'input'" in bad_type.details()
    assert "FP99" in bad_type.details()
    short = iris_request(np.zeros((1, 4)), raw=True)
    short.raw_input_contents[0] = b"\0" * 8
    too_short = error_of(channel, "ModelInfer", short)
    assert too_short.code() == grpc.StatusCode.INVALID_ARGUMENT and "input 'input'" in too_short.details()
    overflow = M.ModelInferRequest(model_name="echo")
    overflow.inputs.add(name="small", datatype="INT8", shape=[1]).contents.int_contents.append(300)
    wide = error_of(channel, "ModelInfer", overflow)
    assert wide.code() == grpc.StatusCode.INVALID_ARGUMENT and "'small'" in wide.details()
    with pytest.raises(grpc.RpcError) as unimplemented:
        channel.unary_unary(f"/{SERVICE}/RepositoryIndex")(b"")
    assert unimplemented.value.code() == grpc.StatusCode.UNIMPLEMENTED


def test_the_rpc_deadline_becomes_the_request_deadline(server: ServerProcess, channel: grpc.Channel) -> None:
    request = M.ModelInferRequest(model_name="slow")
    request.inputs.add(name="x", datatype="FP32", shape=[1, 2]).contents.fp32_contents.extend([1, 2])
    busy = occupy(server, "slow")
    expired = error_of(channel, "ModelInfer", request, timeout=0.05)
    assert expired.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    busy.join()
    # The batcher has timed a batch (~0.4 s) now: the server itself refuses a 50 ms deadline at admission,
    # which only happens when the RPC's deadline reached it.
    refused = error_of(channel, "ModelInfer", request, timeout=0.05)
    assert refused.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    assert "cannot answer within the deadline" in refused.details()
    answer = call(channel, "ModelInfer", request, timeout=10)
    assert list(answer.outputs[0].contents.fp32_contents) == [3.0]
    # The expired request was dropped from the queue, never run: two model calls (the occupier's, the last).
    calls = re.search(
        r'ferryman_batch_size_count\{[^}]*model="slow"[^}]*\} ([0-9.]+)', httpx.get(f"{server.url}/metrics").text
    )
    assert calls is not None and float(calls.group(1)) == 2


def test_request_id_and_served_version_come_back_as_trailers(channel: grpc.Channel) -> None:
    stub = channel.unary_unary(
        f"/{SERVICE}/ModelInfer",
        request_serializer=M.ModelInferRequest.SerializeToString,
        response_deserializer=M.ModelInferResponse.FromString,
    )
    _, outcome = stub.with_call(iris_request(np.zeros((1, 4)), raw=True), metadata=[("x-request-id", "trace-42")])
    trailers = dict(outcome.trailing_metadata())
    assert trailers["x-request-id"] == "trace-42" and trailers["x-ferryman-served-version"] == "1"


def test_workers_share_the_grpc_port(tmp_path: Path) -> None:
    process = ServerProcess(tmp_path / "home", ["--workers", "2", "--grpc-port", "0"])
    try:
        process.wait_ready()
        wait_for(lambda: process.logs().count("gRPC (V2) listening") == 2, "both workers to listen", deadline_s=30)
        ports = set(re.findall(LISTENING, process.logs()))
        assert len(ports) == 1  # both bound the one port the supervisor reserved (SO_REUSEPORT)
        with grpc.insecure_channel(f"127.0.0.1:{ports.pop()}") as opened:
            assert call(opened, "ServerMetadata", M.ServerMetadataRequest()).name == "ferryman"
    finally:
        process.stop()


def test_a_taken_grpc_port_stops_the_server_naming_the_setting(tmp_path: Path) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        process = ServerProcess(tmp_path / "home", ["--grpc-port", str(taken.getsockname()[1])])
        try:
            assert process.process.wait(60) != 0
        finally:
            process.stop()
    assert "grpc_port: cannot listen on 127.0.0.1:" in process.log_path.read_text(errors="replace")


def test_grpc_requests_are_counted_under_their_protocol(server: ServerProcess, channel: grpc.Channel) -> None:
    def counted() -> dict[str, float]:
        text = httpx.get(f"{server.url}/metrics", timeout=30).text
        pattern = r'ferryman_protocol_requests_total\{outcome="(\w+)",protocol="v2_grpc"\} (\S+)'
        return {outcome: float(value) for outcome, value in re.findall(pattern, text)}

    before = counted()
    for _ in range(3):
        call(channel, "ModelInfer", iris_request(np.zeros((1, 4)), raw=True))
    error_of(channel, "ModelInfer", iris_request(np.zeros((1, 3)), raw=True))
    after = counted()
    assert after["ok"] - before.get("ok", 0) == 3
    assert after["invalid"] - before.get("invalid", 0) == 1
