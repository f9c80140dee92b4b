"""Open Inference Protocol (V2) wire format: JSON bodies and the binary tensor data extension.

Decoding turns a request body straight into numpy arrays inside an :class:`InferenceRequest`;
encoding turns an :class:`InferenceResponse` into body bytes. Both directions support the
binary extension (``Inference-Header-Content-Length``, ``binary_data_size``, ``binary_data``,
``binary_data_output``). Every malformed field raises :class:`InvalidInput` naming it.
"""

from __future__ import annotations

import json
import math
import struct
from typing import Any

import numpy as np
import orjson

from ferryman.errors import InvalidInput, PayloadTooLarge
from ferryman.tensors import DATATYPES, InferenceRequest, InferenceResponse, TensorSpec

__all__ = ["DEFAULT_MAX_TENSOR_ELEMENTS", "decode_raw_binary_request", "decode_request", "encode_response"]

#: Most elements one decoded input may have unless the server is configured otherwise (16 Mi).
DEFAULT_MAX_TENSOR_ELEMENTS = 16 * 1024 * 1024

_NUMPY_OPTIONS = orjson.OPT_SERIALIZE_NUMPY
_LENGTH_PREFIX = struct.Struct("<I")
_INTEGER_KINDS = frozenset("iu")
_NUMERIC_KINDS = frozenset("iuf")


def _check_elements(name: str, count: int, limit: int) -> None:
    if count > limit:
        raise PayloadTooLarge(
            f"input '{name}' has {count} elements, more than the limit of {limit} (max_tensor_elements)"
        )


def _parse_json(raw: bytes | memoryview) -> Any:
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        # Python's json.dumps writes NaN/Infinity tokens that strict JSON (and orjson) reject;
        # accept them on this slow path so NaN reaches validation and gets a precise error.
        try:
            return json.loads(bytes(raw))
        except ValueError:
            raise InvalidInput(f"malformed JSON body: {exc}") from None


def decode_request(
    body: bytes,
    header_length: int | None,
    model_name: str,
    model_version: str | None,
    *,
    max_elements: int = DEFAULT_MAX_TENSOR_ELEMENTS,
) -> InferenceRequest:
    """Decode a V2 inference request body (JSON, or JSON header + binary tensors).

    An input whose shape has more than ``max_elements`` elements is refused (413) before its data is read.
    """
    if header_length is None:
        document = _parse_json(body)
        binary = memoryview(b"")
    else:
        if header_length < 0 or header_length > len(body):
            raise InvalidInput(f"Inference-Header-Content-Length is {header_length} but the body has {len(body)} bytes")
        view = memoryview(body)
        document = _parse_json(view[:header_length])
        binary = view[header_length:]
    if not isinstance(document, dict):
        raise InvalidInput("request body must be a JSON object")
    raw_inputs = document.get("inputs")
    if not isinstance(raw_inputs, list) or not raw_inputs:
        raise InvalidInput("field 'inputs' must be a non-empty list")

    inputs: dict[str, np.ndarray[Any, Any]] = {}
    declared: dict[str, str] = {}
    offset = 0
    for position, raw in enumerate(raw_inputs):
        name, datatype, shape, parameters = _input_header(raw, position)
        _check_elements(name, math.prod(shape), max_elements)
        if name in inputs:
            raise InvalidInput(f"input '{name}' appears more than once")
        size = parameters.get("binary_data_size") if parameters else None
        if size is not None:
            if not isinstance(size, int) or isinstance(size, bool) or size < 0:
                raise InvalidInput(f"input '{name}': binary_data_size must be a non-negative integer")
            if offset + size > len(binary):
                raise InvalidInput(
                    f"input '{name}': binary_data_size {size} runs past the end of the body "
                    f"({len(binary) - offset} bytes left)"
                )
            inputs[name] = _tensor_from_binary(name, datatype, shape, binary[offset : offset + size])
            offset += size
        elif "data" in raw:
            inputs[name] = _tensor_from_json(name, datatype, shape, raw["data"])
        else:
            raise InvalidInput(f"input '{name}' has neither 'data' nor a binary_data_size parameter")
        if datatype == "BF16":
            declared[name] = datatype
    if offset != len(binary):
        raise InvalidInput(
            f"the body has {len(binary) - offset} bytes of binary data that no input claims "
            f"(Inference-Header-Content-Length or binary_data_size is wrong)"
        )

    parameters = _parameters(document.get("parameters"), "parameters")
    binary_default = bool(parameters.get("binary_data_output", False)) if parameters else False
    outputs, binary_outputs = _requested_outputs(document.get("outputs"), binary_default)
    request_id = document.get("id")
    if request_id is not None and not isinstance(request_id, str):
        raise InvalidInput("field 'id' must be a string")
    return InferenceRequest(
        model_name=model_name,
        model_version=model_version,
        inputs=inputs,
        id=request_id,
        parameters=parameters,
        outputs=outputs,
        binary_outputs=binary_outputs,
        all_outputs_binary=binary_default and outputs is None,
        declared_datatypes=declared,
    )


def decode_raw_binary_request(
    body: bytes,
    spec: TensorSpec,
    model_name: str,
    model_version: str | None,
    *,
    max_elements: int = DEFAULT_MAX_TENSOR_ELEMENTS,
) -> InferenceRequest:
    """Decode ``Inference-Header-Content-Length: 0``: the body is the bytes of the single input.

    The tensor is a batch of one: the spec's shape with its batch dimension set to 1 and at
    most one other variable dimension, inferred from the byte count. All outputs come back binary.
    """
    if spec.datatype == "BYTES":
        shape: tuple[int, ...] = (1,)
    else:
        dims = [1 if i == 0 and d == -1 else d for i, d in enumerate(spec.shape)]
        variable = [i for i, d in enumerate(dims) if d == -1]
        if len(variable) > 1:
            raise InvalidInput(
                f"input '{spec.name}' has more than one variable dimension; a raw binary request needs a JSON header"
            )
        itemsize = DATATYPES[spec.datatype].itemsize if spec.datatype != "BF16" else 2
        fixed = math.prod(d for d in dims if d != -1) * itemsize
        if variable:
            if fixed == 0 or len(body) % fixed:
                raise InvalidInput(
                    f"raw binary body of {len(body)} bytes does not fit input '{spec.name}' {spec.datatype}"
                )
            dims[variable[0]] = len(body) // fixed
        shape = tuple(dims)
    _check_elements(spec.name, math.prod(shape), max_elements)
    tensor = _tensor_from_binary(spec.name, spec.datatype, shape, memoryview(body))
    return InferenceRequest(
        model_name=model_name,
        model_version=model_version,
        inputs={spec.name: tensor},
        all_outputs_binary=True,
        declared_datatypes={spec.name: spec.datatype} if spec.datatype == "BF16" else {},
    )


def _input_header(raw: Any, position: int) -> tuple[str, str, tuple[int, ...], dict[str, Any] | None]:
    if not isinstance(raw, dict):
        raise InvalidInput(f"inputs[{position}] must be an object")
    name = raw.get("name")
    if not isinstance(name, str) or not name:
        raise InvalidInput(f"inputs[{position}].name must be a non-empty string")
    datatype = raw.get("datatype")
    if not isinstance(datatype, str) or datatype not in DATATYPES:
        raise InvalidInput(f"input '{name}': datatype {datatype!r} is not one of {', '.join(DATATYPES)}")
    shape = raw.get("shape")
    if not isinstance(shape, list) or not all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape):
        raise InvalidInput(f"input '{name}': shape must be a list of non-negative integers")
    return name, datatype, tuple(shape), _parameters(raw.get("parameters"), f"input '{name}' parameters")


def _parameters(raw: Any, where: str) -> dict[str, Any] | None:
    if raw is None:
        return None
    if not isinstance(raw, dict):
        raise InvalidInput(f"{where} must be an object")
    return raw


def _requested_outputs(raw: Any, binary_default: bool) -> tuple[list[str] | None, set[str]]:
    if raw is None:
        return None, set()
    if not isinstance(raw, list):
        raise InvalidInput("field 'outputs' must be a list")
    names: list[str] = []
    binary: set[str] = set()
    for position, item in enumerate(raw):
        if not isinstance(item, dict) or not isinstance(item.get("name"), str):
            raise InvalidInput(f"outputs[{position}] must be an object with a string 'name'")
        name = item["name"]
        names.append(name)
        params = _parameters(item.get("parameters"), f"output '{name}' parameters")
        wants_binary = params.get("binary_data", binary_default) if params else binary_default
        if wants_binary:
            binary.add(name)
    return names, binary


def _tensor_from_json(name: str, datatype: str, shape: tuple[int, ...], data: Any) -> np.ndarray[Any, Any]:
    count = math.prod(shape)
    if datatype == "BYTES":
        flat = _flatten_strings(name, data)
        array: np.ndarray[Any, Any] = np.empty(len(flat), dtype=object)
        array[:] = flat
    else:
        try:
            array = np.asarray(data)
        except ValueError:
            raise InvalidInput(f"input '{name}': data is ragged (nested lists of different lengths)") from None
        kind = array.dtype.kind
        target = DATATYPES[datatype]
        if kind in "fO" and target.kind in _INTEGER_KINDS:
            # numpy falls back to float64 for integers beyond int64 (e.g. UINT64 values >= 2**63),
            # which would lose precision: build such arrays from the Python ints themselves.
            array = _exact_integers(name, datatype, data, array)
            kind = array.dtype.kind
        if array.size and not _kind_fits(kind, datatype):
            raise InvalidInput(f"input '{name}': data holds {_describe_kind(kind)} values, not {datatype}")
        if array.size and kind in _INTEGER_KINDS and target.kind in _INTEGER_KINDS:
            limits = np.iinfo(target)
            if array.min() < limits.min or array.max() > limits.max:
                raise InvalidInput(f"input '{name}': a value is out of range for {datatype}")
        array = array.astype(target, copy=False)
    if array.size != count:
        raise InvalidInput(f"input '{name}': shape {list(shape)} needs {count} elements but data has {array.size}")
    return array.reshape(shape)


def _exact_integers(name: str, datatype: str, data: Any, array: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
    """Re-read data that numpy widened to float as exact Python ints; non-integers keep their kind."""
    values = np.array(data, dtype=object).ravel()
    if not all(isinstance(v, int) and not isinstance(v, bool) for v in values):
        return array
    limits = np.iinfo(DATATYPES[datatype])
    if any(v < limits.min or v > limits.max for v in values):
        raise InvalidInput(f"input '{name}': a value is out of range for {datatype}")
    return np.array(values.tolist(), dtype=DATATYPES[datatype]).reshape(array.shape)


def _kind_fits(kind: str, datatype: str) -> bool:
    if datatype == "BOOL":
        return kind == "b"
    if datatype.startswith(("INT", "UINT")):
        return kind in _INTEGER_KINDS
    return kind in _NUMERIC_KINDS  # FP16/FP32/FP64/BF16 accept integers too


def _describe_kind(kind: str) -> str:
    return {"b": "boolean", "i": "integer", "u": "integer", "f": "floating-point"}.get(kind, "non-numeric")


def _flatten_strings(name: str, data: Any) -> list[bytes]:
    out: list[bytes] = []
    stack = [data] if not isinstance(data, list) else list(reversed(data))
    while stack:
        item = stack.pop()
        if isinstance(item, list):
            stack.extend(reversed(item))
        elif isinstance(item, str):
            out.append(item.encode())
        else:
            raise InvalidInput(
                f"input '{name}': BYTES data must be strings, got {type(item).__name__} at element {len(out)}"
            )
    return out


def _tensor_from_binary(name: str, datatype: str, shape: tuple[int, ...], raw: memoryview) -> np.ndarray[Any, Any]:
    count = math.prod(shape)
    if datatype == "BYTES":
        return _bytes_tensor_from_binary(name, shape, count, raw)
    itemsize = 2 if datatype == "BF16" else DATATYPES[datatype].itemsize
    if len(raw) != count * itemsize:
        raise InvalidInput(
            f"input '{name}': {datatype} shape {list(shape)} needs {count * itemsize} bytes, "
            f"binary_data_size gives {len(raw)}"
        )
    if datatype == "BF16":
        # bfloat16 is the top half of a float32: widen by shifting the bits.
        halves = np.frombuffer(raw, dtype="<u2").astype(np.uint32)
        return (halves << 16).view(np.float32).reshape(shape)
    if datatype == "BOOL":
        return np.frombuffer(raw, dtype=np.uint8).astype(np.bool_).reshape(shape)
    return np.frombuffer(raw, dtype=DATATYPES[datatype].newbyteorder("<")).reshape(shape)


def _bytes_tensor_from_binary(name: str, shape: tuple[int, ...], count: int, raw: memoryview) -> np.ndarray[Any, Any]:
    array: np.ndarray[Any, Any] = np.empty(count, dtype=object)
    position = 0
    for index in range(count):
        if position + 4 > len(raw):
            raise InvalidInput(f"input '{name}': binary BYTES data ends before element {index}")
        (length,) = _LENGTH_PREFIX.unpack_from(raw, position)
        position += 4
        if position + length > len(raw):
            raise InvalidInput(f"input '{name}': BYTES element {index} is longer than the data left")
        array[index] = bytes(raw[position : position + length])
        position += length
    if position != len(raw):
        raise InvalidInput(f"input '{name}': {len(raw) - position} trailing bytes after {count} BYTES elements")
    return array.reshape(shape)


def encode_response(
    response: InferenceResponse, binary_outputs: set[str] | None, all_binary: bool
) -> tuple[bytes, int | None]:
    """Encode a response; returns the body and, when any output is binary, the JSON header length."""
    entries: list[dict[str, Any]] = []
    chunks: list[bytes] = []
    for name, array in response.outputs.items():
        datatype = response.output_datatypes[name]
        entry: dict[str, Any] = {"name": name, "datatype": datatype, "shape": array.shape}
        if all_binary or (binary_outputs and name in binary_outputs):
            raw = _binary_from_tensor(array, datatype)
            entry["parameters"] = {"binary_data_size": len(raw)}
            chunks.append(raw)
        else:
            entry["data"] = _json_data(array, datatype)
        entries.append(entry)
    document: dict[str, Any] = {"model_name": response.model_name, "model_version": response.model_version}
    if response.id is not None:
        document["id"] = response.id
    if response.parameters:
        document["parameters"] = response.parameters
    document["outputs"] = entries
    header = orjson.dumps(document, option=_NUMPY_OPTIONS)
    if not chunks:
        return header, None
    return header + b"".join(chunks), len(header)


def _json_data(array: np.ndarray[Any, Any], datatype: str) -> Any:
    if datatype == "BYTES":
        return [
            item.decode("utf-8", errors="replace") if isinstance(item, bytes) else str(item)
            for item in array.reshape(-1)
        ]
    flat = np.ascontiguousarray(array).reshape(-1)
    if flat.dtype.byteorder == ">":
        flat = flat.astype(flat.dtype.newbyteorder("="))
    return flat


def _binary_from_tensor(array: np.ndarray[Any, Any], datatype: str) -> bytes:
    if datatype == "BYTES":
        parts: list[bytes] = []
        for item in array.reshape(-1):
            encoded = item if isinstance(item, bytes) else str(item).encode()
            parts.append(_LENGTH_PREFIX.pack(len(encoded)))
            parts.append(encoded)
        return b"".join(parts)
    if datatype == "BOOL":
        return np.ascontiguousarray(array, dtype=np.uint8).tobytes()
    if datatype == "BF16":
        bits = np.ascontiguousarray(array, dtype="<f4").view("<u4") >> 16
        return bits.astype("<u2").tobytes()
    return np.ascontiguousarray(array, dtype=DATATYPES[datatype].newbyteorder("<")).tobytes()
