"""Core data types: V2 datatypes, tensor specs, model signatures, and the internal request/response.

Every protocol adapter decodes into :class:`InferenceRequest` and encodes from
:class:`InferenceResponse`; nothing else crosses the engine boundary. These are plain
slotted classes (no pydantic) because they are built on every request.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ferryman.errors import InvalidInput

__all__ = [
    "DATATYPES",
    "InferenceRequest",
    "InferenceResponse",
    "Parameters",
    "Signature",
    "TensorSpec",
    "datatype_of",
    "numpy_dtype",
]

Parameters = dict[str, Any]

#: V2 datatype name -> numpy dtype. BYTES tensors are object arrays of ``bytes``;
#: BF16 has no numpy type and is widened to float32 on decode.
DATATYPES: dict[str, np.dtype[Any]] = {
    "BOOL": np.dtype(np.bool_),
    "UINT8": np.dtype(np.uint8),
    "UINT16": np.dtype(np.uint16),
    "UINT32": np.dtype(np.uint32),
    "UINT64": np.dtype(np.uint64),
    "INT8": np.dtype(np.int8),
    "INT16": np.dtype(np.int16),
    "INT32": np.dtype(np.int32),
    "INT64": np.dtype(np.int64),
    "FP16": np.dtype(np.float16),
    "FP32": np.dtype(np.float32),
    "FP64": np.dtype(np.float64),
    "BF16": np.dtype(np.float32),
    "BYTES": np.dtype(object),
}

_BY_NUMPY: dict[np.dtype[Any], str] = {dt: name for name, dt in DATATYPES.items() if name not in ("BF16",)}


def numpy_dtype(datatype: str) -> np.dtype[Any]:
    """Return the numpy dtype for a V2 datatype name, or raise InvalidInput naming it."""
    try:
        return DATATYPES[datatype]
    except KeyError:
        raise InvalidInput(f"unknown datatype {datatype!r}; expected one of {', '.join(DATATYPES)}") from None


def datatype_of(array: np.ndarray[Any, Any]) -> str:
    """Return the V2 datatype name for a numpy array (strings and bytes map to BYTES)."""
    name = _BY_NUMPY.get(array.dtype)
    if name is not None:
        return name
    if array.dtype.kind in ("U", "S", "O"):
        return "BYTES"
    raise InvalidInput(f"numpy dtype {array.dtype} has no V2 datatype")


@dataclass(frozen=True, slots=True)
class TensorSpec:
    """One named input or output of a model: V2 datatype and shape (-1 = any size)."""

    name: str
    datatype: str
    shape: tuple[int, ...]
    allow_nan: bool = False

    def to_dict(self) -> dict[str, Any]:
        """Serialise as V2 ``$metadata_tensor`` (plus ``allow_nan`` when set)."""
        out: dict[str, Any] = {"name": self.name, "datatype": self.datatype, "shape": list(self.shape)}
        if self.allow_nan:
            out["allow_nan"] = True
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TensorSpec:
        """Build from the form written by :meth:`to_dict`."""
        return cls(
            name=str(data["name"]),
            datatype=str(data["datatype"]),
            shape=tuple(int(d) for d in data["shape"]),
            allow_nan=bool(data.get("allow_nan", False)),
        )

    def shape_matches(self, shape: tuple[int, ...]) -> bool:
        """True when ``shape`` has this spec's rank and every fixed dimension agrees."""
        if len(shape) != len(self.shape):
            return False
        return all(want in (-1, got) for want, got in zip(self.shape, shape, strict=True))


@dataclass(frozen=True, slots=True)
class Signature:
    """A model's inputs and outputs. ``open_inputs`` means any input names are accepted."""

    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    open_inputs: bool = False

    def input(self, name: str) -> TensorSpec | None:
        """Return the input spec called ``name``, if any."""
        for spec in self.inputs:
            if spec.name == name:
                return spec
        return None

    def output_names(self) -> tuple[str, ...]:
        """Names of the declared outputs, in order."""
        return tuple(spec.name for spec in self.outputs)

    def to_dict(self) -> dict[str, Any]:
        """Serialise for the registry and for V2 model metadata."""
        out: dict[str, Any] = {
            "inputs": [spec.to_dict() for spec in self.inputs],
            "outputs": [spec.to_dict() for spec in self.outputs],
        }
        if self.open_inputs:
            out["open_inputs"] = True
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Signature:
        """Build from the form written by :meth:`to_dict`."""
        return cls(
            inputs=tuple(TensorSpec.from_dict(d) for d in data.get("inputs", [])),
            outputs=tuple(TensorSpec.from_dict(d) for d in data.get("outputs", [])),
            open_inputs=bool(data.get("open_inputs", False)),
        )


@dataclass(slots=True)
class InferenceRequest:
    """The one internal inference request every protocol decodes into.

    ``outputs`` is None for "all outputs"; ``binary_outputs`` names outputs the caller wants in
    the binary tensor extension and ``all_outputs_binary`` asks for every output that way
    (protocol details the engine carries through untouched).
    """

    model_name: str
    inputs: dict[str, np.ndarray[Any, Any]]
    model_version: str | None = None
    id: str | None = None
    parameters: Parameters | None = None
    outputs: list[str] | None = None
    binary_outputs: set[str] | None = None
    all_outputs_binary: bool = False
    #: Datatype the caller declared per input, when it differs from what numpy would say (BF16).
    declared_datatypes: dict[str, str] = field(default_factory=dict)
    #: When the caller stops waiting, on the ``time.monotonic()`` clock (None = no deadline).
    deadline: float | None = None
    #: The transport's request id (``x-request-id``), which feedback refers to.
    request_id: str | None = None
    #: The raw request headers (lower-case names) for routing: route keys, a pinned version.
    headers: list[tuple[bytes, bytes]] | None = None


@dataclass(slots=True)
class InferenceResponse:
    """The one internal inference response every protocol encodes from."""

    model_name: str
    model_version: str
    outputs: dict[str, np.ndarray[Any, Any]]
    output_datatypes: dict[str, str]
    id: str | None = None
    parameters: Parameters | None = None
