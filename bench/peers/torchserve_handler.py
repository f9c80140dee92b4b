"""TorchServe handler for ``make bench``: the archived ``model.joblib`` (``predict``) or ``model.onnx`` (first output).

Each request body is one row as a JSON list; TorchServe hands a batch of them to ``handle``
(batch size 1 unless the model's config sets ``batchSize``), which stacks, predicts once and
returns ``{"predict": label}`` per request.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
from ts.torch_handler.base_handler import BaseHandler


class SklearnOrOnnxHandler(BaseHandler):
    def initialize(self, context: Any) -> None:
        model_dir = Path(context.system_properties["model_dir"])
        path = model_dir / context.manifest["model"]["serializedFile"]
        if path.suffix == ".onnx":
            import onnxruntime

            session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
            name, output = session.get_inputs()[0].name, session.get_outputs()[0].name
            self._predict = lambda rows: session.run([output], {name: rows})[0]
        else:
            import joblib

            model = joblib.load(path)
            self._predict = model.predict
        self.initialized = True

    def preprocess(self, data: list[dict[str, Any]]) -> np.ndarray:
        rows = []
        for item in data:
            payload = item.get("data") if item.get("data") is not None else item.get("body")
            if isinstance(payload, bytes | bytearray):
                payload = json.loads(payload)
            rows.append(payload)
        return np.asarray(rows, dtype=np.float32)

    def inference(self, data: np.ndarray, *args: Any, **kwargs: Any) -> np.ndarray:
        return np.asarray(self._predict(data))

    def postprocess(self, data: np.ndarray) -> list[dict[str, int]]:
        return [{"predict": int(label)} for label in np.ravel(data)]
