"""V2 gRPC wire format: ``ModelInferRequest`` → internal request, internal response → ``ModelInferResponse``.

The same internal request the REST codec builds, with the same rules: every malformed field is an
:class:`InvalidInput` naming the input, an input over ``max_tensor_elements`` is a 413, BF16 is
widened to float32. Data comes either typed (``contents.<type>_contents``, one field per datatype
family) or as ``raw_input_contents`` — little-endian bytes in input order, BYTES elements each
behind a 4-byte length, exactly the REST binary extension's layout, so both codecs share its
converters. A request that sent raw inputs gets raw outputs; one that sent typed contents gets
typed outputs unless an output's datatype has no typed field (FP16, BF16).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from ferryman.errors import InvalidInput
from ferryman.protocols.v2_codec import _binary_from_tensor, _check_elements, _tensor_from_binary
from ferryman.protocols.v2_grpc_messages import V2Messages
from ferryman.tensors import DATATYPES, InferenceRequest, InferenceResponse

__all__ = ["decode_infer_request", "encode_infer_response", "parameters_from_wire"]

#: V2 datatype → the ``InferTensorContents`` field that carries it (FP16 and BF16 travel raw only).
CONTENTS_FIELD: dict[str, str] = {
    "BOOL": "bool_contents",
    "INT8": "int_contents",
    "INT16": "int_contents",
    "INT32": "int_contents",
    "INT64": "int64_contents",
    "UINT8": "uint_contents",
    "UINT16": "uint_contents",
    "UINT32": "uint_contents",
    "UINT64": "uint64_contents",
    "FP32": "fp32_contents",
    "FP64": "fp64_contents",
    "BYTES": "bytes_contents",
}


def parameters_from_wire(wire: Any) -> dict[str, Any] | None:
    """A ``map<string, InferParameter>`` as a plain dict (None when empty)."""
    if not wire:
        return None
    out: dict[str, Any] = {}
    for key, parameter in wire.items():
        choice = parameter.WhichOneof("parameter_choice")
        out[key] = getattr(parameter, choice) if choice is not None else None
    return out


def _parameters_to_wire(parameters: dict[str, Any], wire: Any) -> None:
    for key, value in parameters.items():
        if isinstance(value, bool):
            wire[key].bool_param = value
        elif isinstance(value, int):
            if value < 2**63:
                wire[key].int64_param = value
            else:
                wire[key].uint64_param = value
        elif isinstance(value, float):
            wire[key].double_param = value
        else:
            wire[key].string_param = str(value)


def decode_infer_request(message: Any, *, max_elements: int) -> InferenceRequest:
    """Decode a ``ModelInferRequest`` into the internal request (no deadline, request id or headers yet)."""
    if not message.model_name:
        raise InvalidInput("model_name: required")
    raw = message.raw_input_contents
    if raw and len(raw) != len(message.inputs):
        raise InvalidInput(
            f"raw_input_contents has {len(raw)} entries for {len(message.inputs)} inputs: give one per input, in order"
        )
    inputs: dict[str, np.ndarray[Any, Any]] = {}
    declared: dict[str, str] = {}
    for position, tensor in enumerate(message.inputs):
        name = tensor.name
        if not name:
            raise InvalidInput(f"inputs[{position}].name: required")
        if name in inputs:
            raise InvalidInput(f"input '{name}' is given twice")
        datatype = tensor.datatype
        if datatype not in DATATYPES:
            raise InvalidInput(f"input '{name}': unknown datatype {datatype!r}; expected one of {', '.join(DATATYPES)}")
        shape = tuple(int(d) for d in tensor.shape)
        if any(d < 0 for d in shape):
            raise InvalidInput(f"input '{name}': shape {list(shape)} has a negative dimension")
        _check_elements(name, math.prod(shape), max_elements)
        if raw:
            if tensor.HasField("contents"):
                raise InvalidInput(f"input '{name}': give its data in contents or raw_input_contents, not both")
            inputs[name] = _from_raw(name, datatype, shape, raw[position])
        else:
            inputs[name] = _from_contents(name, datatype, shape, tensor.contents)
        if datatype == "BF16":
            declared[name] = datatype
    return InferenceRequest(
        model_name=message.model_name,
        model_version=message.model_version or None,
        inputs=inputs,
        id=message.id or None,
        parameters=parameters_from_wire(message.parameters),
        outputs=[output.name for output in message.outputs] or None,
        declared_datatypes=declared,
    )


def _from_raw(name: str, datatype: str, shape: tuple[int, ...], data: bytes) -> np.ndarray[Any, Any]:
    if datatype != "BYTES":
        itemsize = 2 if datatype == "BF16" else DATATYPES[datatype].itemsize
        needed = math.prod(shape) * itemsize
        if len(data) != needed:
            raise InvalidInput(
                f"input '{name}': {datatype} shape {list(shape)} needs {needed} bytes, "
                f"its raw_input_contents has {len(data)}"
            )
    return _tensor_from_binary(name, datatype, shape, memoryview(data))


def _from_contents(name: str, datatype: str, shape: tuple[int, ...], contents: Any) -> np.ndarray[Any, Any]:
    field = CONTENTS_FIELD.get(datatype)
    if field is None:
        raise InvalidInput(
            f"input '{name}': {datatype} has no typed contents field in the V2 protocol; send it in raw_input_contents"
        )
    values = getattr(contents, field)
    count = math.prod(shape)
    if len(values) != count:
        raise InvalidInput(
            f"input '{name}': shape {list(shape)} needs {count} values, contents.{field} has {len(values)}"
        )
    if datatype == "BYTES":
        array: np.ndarray[Any, Any] = np.empty(count, dtype=object)
        array[:] = list(values)
        return array.reshape(shape)
    dtype = DATATYPES[datatype]
    if dtype.kind in "iu" and dtype.itemsize < 4 and count:
        # The wire field is 32 bits wide: values that do not fit the declared type are refused, not wrapped.
        wide = np.asarray(values, dtype=np.int64)
        limits = np.iinfo(dtype)
        if int(wide.min()) < limits.min or int(wide.max()) > limits.max:
            raise InvalidInput(f"input '{name}': a value in contents.{field} does not fit {datatype}")
    return np.asarray(values, dtype=dtype).reshape(shape)


def encode_infer_response(response: InferenceResponse, messages: V2Messages, *, raw: bool) -> Any:
    """Encode a response as ``ModelInferResponse``: raw output bytes, or typed contents where every output has them."""
    wire = messages.ModelInferResponse(model_name=response.model_name, model_version=response.model_version)
    if response.id is not None:
        wire.id = response.id
    if response.parameters:
        _parameters_to_wire(response.parameters, wire.parameters)
    datatypes = response.output_datatypes
    raw = raw or any(datatypes[name] not in CONTENTS_FIELD for name in response.outputs)
    for name, array in response.outputs.items():
        datatype = datatypes[name]
        tensor = wire.outputs.add(name=name, datatype=datatype, shape=array.shape)
        if raw:
            wire.raw_output_contents.append(_binary_from_tensor(array, datatype))
        elif datatype == "BYTES":
            tensor.contents.bytes_contents.extend(
                item if isinstance(item, bytes) else str(item).encode() for item in array.reshape(-1)
            )
        else:
            getattr(tensor.contents, CONTENTS_FIELD[datatype]).extend(array.reshape(-1).tolist())
    return wire
