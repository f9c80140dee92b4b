"""ONNX models on ONNX Runtime (CPU).

Signature: the session's own input and output names; ``tensor(float)`` → FP32 and so on for
every V2 datatype, symbolic or unknown dimensions → -1. Outputs that are not tensors (the
``seq(map)`` of skl2onnx's ZipMap) are neither declared nor computed.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import onnxruntime

from ferryman.runtimes.base import RuntimeConfig
from ferryman.tensors import Signature, TensorSpec, numpy_dtype

__all__ = ["OnnxRuntime"]

#: ONNX Runtime element type -> V2 datatype.
_DATATYPES = {
    "tensor(bool)": "BOOL",
    "tensor(uint8)": "UINT8",
    "tensor(uint16)": "UINT16",
    "tensor(uint32)": "UINT32",
    "tensor(uint64)": "UINT64",
    "tensor(int8)": "INT8",
    "tensor(int16)": "INT16",
    "tensor(int32)": "INT32",
    "tensor(int64)": "INT64",
    "tensor(float16)": "FP16",
    "tensor(float)": "FP32",
    "tensor(double)": "FP64",
    "tensor(bfloat16)": "BF16",
    "tensor(string)": "BYTES",
}


class OnnxRuntime:
    """Serves an ONNX model through an ONNX Runtime InferenceSession."""

    framework: ClassVar[str] = "onnx"

    def __init__(self) -> None:
        self._session: onnxruntime.InferenceSession | None = None
        self._signature = Signature(inputs=(), outputs=())

    def load(self, path: Path, config: RuntimeConfig) -> None:
        """Open a CPU session; ``config.threads`` bounds its intra-op threads."""
        options = onnxruntime.SessionOptions()
        options.inter_op_num_threads = 1
        if config.threads:
            options.intra_op_num_threads = config.threads
        # Idle intra-op threads spin by default, burning a core between requests that a model
        # server needs for HTTP and other models; a request costs a few µs more to wake them.
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        session = onnxruntime.InferenceSession(str(path), sess_options=options, providers=["CPUExecutionProvider"])
        inputs = []
        for node in session.get_inputs():
            spec = _spec(node)
            if spec is None:
                raise TypeError(f"input {node.name!r} has type {node.type}, which Ferryman cannot feed")
            inputs.append(spec)
        outputs = [spec for spec in map(_spec, session.get_outputs()) if spec is not None]
        self._signature = Signature(inputs=tuple(inputs), outputs=tuple(outputs))
        self._session = session

    def signature(self) -> Signature:
        """Return the session's tensor inputs and outputs."""
        return self._signature

    def predict(self, inputs: dict[str, np.ndarray[Any, Any]]) -> dict[str, np.ndarray[Any, Any]]:
        """Run the session for its tensor outputs, casting inputs to the types it expects."""
        if self._session is None:
            raise RuntimeError("the ONNX model is not loaded")
        feed = {spec.name: _cast(inputs[spec.name], spec.datatype) for spec in self._signature.inputs}
        names = list(self._signature.output_names())
        results = self._session.run(names, feed)
        return {name: np.asarray(value) for name, value in zip(names, results, strict=True)}

    def unload(self) -> None:
        """Close the session."""
        self._session = None


def _spec(node: Any) -> TensorSpec | None:
    """The TensorSpec of a session input/output, or None for non-tensor types."""
    datatype = _DATATYPES.get(node.type)
    if datatype is None:
        return None
    shape = tuple(dim if isinstance(dim, int) and dim >= 0 else -1 for dim in node.shape or ())
    return TensorSpec(node.name, datatype, shape)


def _cast(array: np.ndarray[Any, Any], datatype: str) -> np.ndarray[Any, Any]:
    if datatype == "BYTES":
        if array.dtype.kind == "S" or (array.dtype.kind == "O" and any(isinstance(v, bytes) for v in array.flat)):
            # ONNX Runtime takes str elements for tensor(string); V2 BYTES may arrive as bytes.
            text = [v.decode() if isinstance(v, bytes) else str(v) for v in array.flat]
            return np.array(text, dtype=object).reshape(array.shape)
        return array
    want = numpy_dtype(datatype)
    return array if array.dtype == want else array.astype(want)
