"""The V2 wire format on its own: JSON and binary decoding and encoding of every datatype."""

from __future__ import annotations

import json
import struct

import numpy as np
import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from ferryman.errors import InvalidInput
from ferryman.protocols.v2_codec import decode_raw_binary_request, decode_request, encode_response
from ferryman.tensors import InferenceResponse, TensorSpec
from tests.conftest import NUMERIC_DTYPES


def binary_body(header: dict, *chunks: bytes) -> tuple[bytes, int]:
    raw = orjson.dumps(header)
    return raw + b"".join(chunks), len(raw)


@pytest.mark.parametrize("datatype", sorted(NUMERIC_DTYPES))
def test_json_flat_and_nested_data_decode_to_the_same_array(datatype: str) -> None:
    values = [[1, 0, 1], [0, 1, 1]] if datatype == "BOOL" else [[1, 2, 3], [4, 5, 6]]
    if datatype == "BOOL":
        values = [[bool(v) for v in row] for row in values]
    flat = [v for row in values for v in row]
    for data in (values, flat):
        body = orjson.dumps({"inputs": [{"name": "x", "datatype": datatype, "shape": [2, 3], "data": data}]})
        request = decode_request(body, None, "m", None)
        array = request.inputs["x"]
        assert array.dtype == np.dtype(NUMERIC_DTYPES[datatype])
        assert array.shape == (2, 3)
        np.testing.assert_array_equal(array, np.array(values, dtype=NUMERIC_DTYPES[datatype]))


@pytest.mark.parametrize("datatype", sorted(NUMERIC_DTYPES))
@settings(max_examples=15, deadline=None)
@given(data=st.data())
def test_binary_round_trip_of_every_numeric_datatype(datatype: str, data: st.DataObject) -> None:
    dtype = np.dtype(NUMERIC_DTYPES[datatype])
    array = data.draw(hnp.arrays(dtype, hnp.array_shapes(min_dims=1, max_dims=3, max_side=5)))
    header = {
        "inputs": [
            {
                "name": "x",
                "datatype": datatype,
                "shape": list(array.shape),
                "parameters": {"binary_data_size": array.nbytes},
            }
        ]
    }
    body, length = binary_body(header, array.astype(dtype.newbyteorder("<")).tobytes())
    decoded = decode_request(body, length, "m", None).inputs["x"]
    np.testing.assert_array_equal(decoded, array)

    response = InferenceResponse("m", "1", {"y": array}, {"y": datatype})
    payload, header_length = encode_response(response, {"y"}, False)
    assert header_length is not None
    document = orjson.loads(payload[:header_length])
    out = document["outputs"][0]
    assert out["parameters"]["binary_data_size"] == len(payload) - header_length
    again = np.frombuffer(payload[header_length:], dtype=dtype.newbyteorder("<")).reshape(out["shape"])
    np.testing.assert_array_equal(again, array)


def test_bytes_tensors_in_json_and_binary() -> None:
    words = [b"alpha", b"", "żółw".encode()]
    body = orjson.dumps({"inputs": [{"name": "s", "datatype": "BYTES", "shape": [3], "data": ["alpha", "", "żółw"]}]})
    assert list(decode_request(body, None, "m", None).inputs["s"]) == words
    packed = b"".join(struct.pack("<I", len(w)) + w for w in words)
    header = {
        "inputs": [{"name": "s", "datatype": "BYTES", "shape": [3], "parameters": {"binary_data_size": len(packed)}}]
    }
    raw, length = binary_body(header, packed)
    assert list(decode_request(raw, length, "m", None).inputs["s"]) == words

    array = np.array(words, dtype=object)
    payload, header_length = encode_response(InferenceResponse("m", "1", {"s": array}, {"s": "BYTES"}), {"s"}, False)
    assert header_length is not None and payload[header_length:] == packed
    payload, header_length = encode_response(InferenceResponse("m", "1", {"s": array}, {"s": "BYTES"}), None, False)
    assert header_length is None
    assert orjson.loads(payload)["outputs"][0]["data"] == ["alpha", "", "żółw"]


def test_bf16_is_widened_to_float32() -> None:
    values = np.array([1.0, -2.5, 3.140625], dtype=np.float32)
    bf16 = (values.view(np.uint32) >> 16).astype("<u2").tobytes()
    header = {"inputs": [{"name": "x", "datatype": "BF16", "shape": [3], "parameters": {"binary_data_size": 6}}]}
    body, length = binary_body(header, bf16)
    request = decode_request(body, length, "m", None)
    np.testing.assert_array_equal(request.inputs["x"], values)
    assert request.declared_datatypes == {"x": "BF16"}


def test_request_fields_are_carried_through() -> None:
    body = orjson.dumps(
        {
            "id": "42",
            "parameters": {"binary_data_output": True, "custom": 1},
            "inputs": [{"name": "x", "datatype": "FP32", "shape": [1], "data": [1]}],
            "outputs": [{"name": "a"}, {"name": "b", "parameters": {"binary_data": False}}],
        }
    )
    request = decode_request(body, None, "m", "3")
    assert (request.id, request.model_version, request.outputs) == ("42", "3", ["a", "b"])
    assert request.binary_outputs == {"a"}
    assert request.parameters == {"binary_data_output": True, "custom": 1}
    assert not request.all_outputs_binary


def test_raw_binary_request_is_a_batch_of_one() -> None:
    spec = TensorSpec("x", "FP32", (-1, 4))
    raw = np.arange(4, dtype="<f4").tobytes()
    request = decode_raw_binary_request(raw, spec, "m", None)
    assert request.inputs["x"].shape == (1, 4)
    assert request.all_outputs_binary


@pytest.mark.parametrize(
    ("body", "header_length", "fragment"),
    [
        (b"{not json", None, "malformed JSON"),
        (b"[1, 2]", None, "JSON object"),
        (b'{"inputs": []}', None, "'inputs'"),
        (
            orjson.dumps({"inputs": [{"name": "x", "datatype": "FP99", "shape": [1], "data": [1]}]}),
            None,
            "FP99",
        ),
        (
            orjson.dumps({"inputs": [{"name": "x", "datatype": "FP32", "shape": [2, 2], "data": [1, 2, 3]}]}),
            None,
            "needs 4 elements",
        ),
        (
            orjson.dumps({"inputs": [{"name": "x", "datatype": "FP32", "shape": [2], "data": ["a", "b"]}]}),
            None,
            "non-numeric",
        ),
        (
            orjson.dumps({"inputs": [{"name": "x", "datatype": "INT32", "shape": [2], "data": [1.5, 2]}]}),
            None,
            "floating-point",
        ),
        (
            orjson.dumps({"inputs": [{"name": "x", "datatype": "INT8", "shape": [1], "data": [300]}]}),
            None,
            "out of range",
        ),
        (
            orjson.dumps({"inputs": [{"name": "s", "datatype": "BYTES", "shape": [2], "data": [1, 2]}]}),
            None,
            "BYTES data must be strings",
        ),
        (
            orjson.dumps({"inputs": [{"name": "x", "datatype": "FP32", "shape": [2, 2], "data": [[1, 2], [3]]}]}),
            None,
            "ragged",
        ),
        (
            orjson.dumps({"inputs": [{"name": "x", "datatype": "FP32", "shape": [-1], "data": [1]}]}),
            None,
            "non-negative",
        ),
        (orjson.dumps({"inputs": [{"name": "x", "datatype": "FP32", "shape": [1]}]}), None, "neither 'data'"),
        (
            orjson.dumps(
                {
                    "inputs": [
                        {"name": "x", "datatype": "FP32", "shape": [1], "data": [1]},
                        {"name": "x", "datatype": "FP32", "shape": [1], "data": [1]},
                    ]
                }
            ),
            None,
            "more than once",
        ),
    ],
)
def test_malformed_requests_name_the_problem(body: bytes, header_length: int | None, fragment: str) -> None:
    with pytest.raises(InvalidInput, match=fragment):
        decode_request(body, header_length, "m", None)


def test_binary_lengths_that_disagree_with_the_body_are_refused() -> None:
    header = {"inputs": [{"name": "x", "datatype": "FP32", "shape": [2], "parameters": {"binary_data_size": 8}}]}
    body, length = binary_body(header, b"\0" * 8)
    with pytest.raises(InvalidInput, match="Inference-Header-Content-Length"):
        decode_request(body, len(body) + 1, "m", None)
    with pytest.raises(InvalidInput, match="runs past the end"):
        decode_request(body[:-2], length, "m", None)
    with pytest.raises(InvalidInput, match="no input claims"):
        decode_request(body + b"xx", length, "m", None)
    header["inputs"][0]["parameters"]["binary_data_size"] = 6
    body, length = binary_body(header, b"\0" * 6)
    with pytest.raises(InvalidInput, match="needs 8 bytes"):
        decode_request(body, length, "m", None)


def test_python_json_nan_tokens_are_accepted_so_validation_can_name_them() -> None:
    body = json.dumps({"inputs": [{"name": "x", "datatype": "FP64", "shape": [2], "data": [1.0, float("nan")]}]})
    array = decode_request(body.encode(), None, "m", None).inputs["x"]
    assert np.isnan(array[1])


def test_uint64_values_beyond_int64_keep_their_precision() -> None:
    body = orjson.dumps({"inputs": [{"name": "x", "datatype": "UINT64", "shape": [2], "data": [2**64 - 1, 7]}]})
    array = decode_request(body, None, "m", None).inputs["x"]
    assert array.dtype == np.uint64 and array.tolist() == [2**64 - 1, 7]
    body = orjson.dumps({"inputs": [{"name": "x", "datatype": "INT64", "shape": [1], "data": [2**63]}]})
    with pytest.raises(InvalidInput, match="out of range"):
        decode_request(body, None, "m", None)
