"""An MLServer runtime for ONNX models (MLServer 1.7.1 ships none): ONNX Runtime, first input, first output.

Referenced from ``model-settings.json`` as ``mlserver_onnx.OnnxModel`` (``bench/peers`` is on
``PYTHONPATH``). Input: the first V2 tensor, as FP32; output ``predict`` (the session's first output).
Works with MLServer's adaptive batching, which concatenates requests along the first axis.
"""

from __future__ import annotations

import numpy as np
import onnxruntime
from mlserver import MLModel
from mlserver.codecs import NumpyCodec
from mlserver.types import InferenceRequest, InferenceResponse
from mlserver.utils import get_model_uri


class OnnxModel(MLModel):
    async def load(self) -> bool:
        path = await get_model_uri(self._settings)
        self._session = onnxruntime.InferenceSession(path, providers=["CPUExecutionProvider"])
        self._input = self._session.get_inputs()[0].name
        self._output = self._session.get_outputs()[0].name
        return True

    async def predict(self, payload: InferenceRequest) -> InferenceResponse:
        rows = NumpyCodec.decode_input(payload.inputs[0]).astype(np.float32, copy=False)
        labels = self._session.run([self._output], {self._input: rows})[0]
        return InferenceResponse(
            model_name=self.name,
            model_version=self.version,
            outputs=[NumpyCodec.encode_output("predict", np.asarray(labels))],
        )
