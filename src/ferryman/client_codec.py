"""The client's side of the V2 wire format: request bodies out, decoded responses in.

Requests travel as JSON or with the binary tensor extension (a JSON header, then the raw tensor
bytes); responses are decoded into numpy arrays either way. The server's side of the same format
is :mod:`ferryman.protocols.v2_codec`.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import numpy as np
import orjson

from ferryman.errors import FerrymanError, InvalidInput
from ferryman.tensors import DATATYPES, numpy_dtype

__all__ = ["HEADER_LENGTH", "Tensor", "coerce", "decode_response", "encode_request"]

#: Says how long the JSON part of a binary-extension body is; the tensor bytes follow it.
HEADER_LENGTH = "Inference-Header-Content-Length"

Array = np.ndarray[Any, Any]
#: One input ready to send: its name, its V2 datatype and the array in that datatype's numpy form.
Tensor = tuple[str, str, Array]


def coerce(array: Array, datatype: str, name: str) -> Array:
    """Cast ``array`` to the numpy form of ``datatype`` without silently losing values."""
    if datatype == "BYTES":
        return _bytes_array(array)
    dtype = numpy_dtype(datatype)
    if array.dtype == dtype:
        return array
    if array.dtype.kind in "fc" and dtype.kind in "iub":
        finite = np.isfinite(array)
        if not finite.all() or not np.array_equal(array, np.trunc(array)):
            raise InvalidInput(f"input {name!r} holds non-integer values but the model expects {datatype}")
    try:
        return array.astype(dtype)
    except (ValueError, TypeError) as exc:
        raise InvalidInput(f"input {name!r} cannot be converted to {datatype}: {exc}") from None


def encode_request(
    tensors: Sequence[Tensor],
    *,
    binary: bool,
    request_id: str | None = None,
    parameters: Mapping[str, Any] | None = None,
    outputs: Sequence[str] | None = None,
) -> tuple[bytes, dict[str, str]]:
    """Build an inference request: the body and its headers.

    ``binary`` sends the inputs with the binary tensor extension and asks for every output
    the same way; otherwise the body is JSON.
    """
    request: dict[str, Any] = {}
    if request_id is not None:
        request["id"] = request_id
    request_parameters = dict(parameters or {})
    if binary:
        request_parameters["binary_data_output"] = True
    if request_parameters:
        request["parameters"] = request_parameters
    if outputs is not None:
        request["outputs"] = [
            {"name": out, "parameters": {"binary_data": True}} if binary else {"name": out} for out in outputs
        ]
    if binary:
        return _binary_body(request, tensors)
    request["inputs"] = [
        {"name": name, "shape": list(array.shape), "datatype": datatype, "data": _to_json(array)}
        for name, datatype, array in tensors
    ]
    return _json_body(request, [array for _, _, array in tensors]), {"Content-Type": "application/json"}


def decode_response(body: bytes, header_length: str | None) -> tuple[dict[str, Any], dict[str, Array]]:
    """Decode an inference response into its JSON document and its outputs as numpy arrays.

    ``header_length`` is the response's :data:`HEADER_LENGTH` header, present when any
    output came back binary.
    """
    if header_length is not None:
        split = int(header_length)
        header, binary = body[:split], memoryview(body)[split:]
    else:
        header, binary = body, memoryview(b"")
    message: dict[str, Any] = orjson.loads(header)
    outputs: dict[str, Array] = {}
    offset = 0
    for output in message.get("outputs", []):
        name, datatype = str(output["name"]), str(output["datatype"])
        shape = tuple(int(d) for d in output["shape"])
        size = (output.get("parameters") or {}).get("binary_data_size")
        if size is not None:
            raw = binary[offset : offset + int(size)]
            if len(raw) != int(size):
                raise FerrymanError(f"output {name!r}: the response ends before its {size} bytes")
            offset += int(size)
            outputs[name] = _from_binary(bytes(raw), datatype, shape)
        else:
            outputs[name] = _from_json(output.get("data", []), datatype, shape)
    return message, outputs


# -- encoding ------------------------------------------------------------------------------------


def _bytes_array(array: Array) -> Array:
    out = np.empty(array.shape, dtype=object)
    flat = out.reshape(-1)
    for i, item in enumerate(array.reshape(-1).tolist()):
        flat[i] = item if isinstance(item, bytes) else str(item).encode()
    return out


def _to_json(array: Array) -> Any:
    """Flattened row-major data for a V2 JSON tensor (BYTES as utf-8 strings)."""
    if array.dtype == object:
        out: list[Any] = []
        for item in array.reshape(-1).tolist():
            if isinstance(item, bytes):
                try:
                    out.append(item.decode())
                except UnicodeDecodeError:
                    raise InvalidInput(
                        "a BYTES element is not valid utf-8 and cannot travel as JSON; use binary=True"
                    ) from None
            else:
                out.append(item)
        return out
    return np.ascontiguousarray(array).reshape(-1)


def _json_body(request: dict[str, Any], arrays: list[Array]) -> bytes:
    """Encode a JSON request; NaN and infinities travel as the ``NaN``/``Infinity`` tokens.

    Strict JSON has no such values (orjson would write null), but Python's json module, the
    Ferryman server and Triton accept the tokens, and a model that allows NaN needs them.
    """
    if not any(a.dtype.kind in "fc" and not np.isfinite(a).all() for a in arrays):
        return orjson.dumps(request, option=orjson.OPT_SERIALIZE_NUMPY)
    for entry in request["inputs"]:
        if isinstance(entry["data"], np.ndarray):
            entry["data"] = entry["data"].tolist()
    return json.dumps(request, allow_nan=True).encode()


def _binary_body(request: dict[str, Any], tensors: Sequence[Tensor]) -> tuple[bytes, dict[str, str]]:
    """The JSON header describing each input's byte count, followed by the inputs' bytes."""
    chunks: list[bytes] = []
    request["inputs"] = []
    for name, datatype, array in tensors:
        raw = _to_binary(array, datatype)
        chunks.append(raw)
        request["inputs"].append(
            {
                "name": name,
                "shape": list(array.shape),
                "datatype": datatype,
                "parameters": {"binary_data_size": len(raw)},
            }
        )
    header = orjson.dumps(request)
    headers = {"Content-Type": "application/octet-stream", HEADER_LENGTH: str(len(header))}
    return b"".join([header, *chunks]), headers


def _to_binary(array: Array, datatype: str) -> bytes:
    """The binary tensor extension's bytes for one tensor: little-endian, row-major."""
    if datatype == "BYTES":
        parts: list[bytes] = []
        for item in array.reshape(-1).tolist():
            parts.append(struct.pack("<I", len(item)))
            parts.append(item)
        return b"".join(parts)
    if datatype == "BF16":
        bits = np.ascontiguousarray(array, dtype="<f4").view("<u4") >> 16
        return bits.astype("<u2").tobytes()
    return np.ascontiguousarray(array, dtype=array.dtype.newbyteorder("<")).tobytes()


# -- decoding ------------------------------------------------------------------------------------


def _from_binary(raw: bytes, datatype: str, shape: tuple[int, ...]) -> Array:
    if datatype == "BYTES":
        count = int(np.prod(shape, dtype=np.int64))
        out = np.empty(count, dtype=object)
        position = 0
        for i in range(count):
            (length,) = struct.unpack_from("<I", raw, position)
            position += 4
            out[i] = raw[position : position + length]
            position += length
        return out.reshape(shape)
    if datatype == "BF16":
        bits = np.frombuffer(raw, dtype="<u2").astype(np.uint32) << 16
        return bits.view(np.float32).reshape(shape)
    dtype = numpy_dtype(datatype)
    return np.frombuffer(raw, dtype=dtype.newbyteorder("<")).astype(dtype).reshape(shape)


def _from_json(data: Any, datatype: str, shape: tuple[int, ...]) -> Array:
    dtype = DATATYPES.get(datatype)
    if dtype is None:
        raise FerrymanError(f"the server answered with unknown datatype {datatype!r}")
    if datatype == "BYTES":
        flat = list(_flatten(data))
        out = np.empty(len(flat), dtype=object)
        for i, item in enumerate(flat):
            out[i] = item.encode() if isinstance(item, str) else item
        return out.reshape(shape)
    return np.asarray(data, dtype=dtype).reshape(shape)


def _flatten(data: Any) -> Iterator[Any]:
    if isinstance(data, list):
        for item in data:
            yield from _flatten(item)
    else:
        yield data
