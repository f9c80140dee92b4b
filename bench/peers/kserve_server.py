"""KServe model server for ``make bench``: one ``kserve.Model`` serving ``$MODEL_PATH`` over V2 REST.

``.joblib`` → scikit-learn ``predict``; ``.onnx`` → ONNX Runtime, first output. Input: the first
V2 tensor (FP32 ``[n, 20]``); output ``predict`` INT64 ``[n]``. Prediction runs in the event loop,
as KServe's own sklearnserver does. KServe 0.21's ``RESTServer`` hard-codes ``host="0.0.0.0"``; this
script rebinds it to ``$HOST`` (127.0.0.1) and the benchmark turns gRPC (which binds ``[::]``) off.
Usage: python kserve_server.py --model_name w1 --http_port P [--workers 2] [KServe flags]
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np
from kserve import InferOutput, InferRequest, InferResponse, Model, ModelServer, model_server
from kserve.protocol.rest import server as rest_server
from kserve.utils.utils import generate_uuid

_original_init = rest_server.RESTServer.__init__


def _bind_host(self: Any, *args: Any, **kwargs: Any) -> None:
    _original_init(self, *args, **kwargs)
    self.config.host = os.environ.get("HOST", "127.0.0.1")


rest_server.RESTServer.__init__ = _bind_host  # type: ignore[method-assign]


class BenchModel(Model):
    def __init__(self, name: str, path: str) -> None:
        super().__init__(name)
        self.path = path
        self.load()

    def load(self) -> bool:
        if self.path.endswith(".onnx"):
            import onnxruntime

            session = onnxruntime.InferenceSession(self.path, providers=["CPUExecutionProvider"])
            name, output = session.get_inputs()[0].name, session.get_outputs()[0].name
            self._predict = lambda rows: session.run([output], {name: rows})[0]
        else:
            import joblib

            self._predict = joblib.load(self.path).predict
        self.ready = True
        return self.ready

    # ``--workers 2`` spawns processes and pickles the model into them: send the path, load again there.
    def __getstate__(self) -> dict[str, Any]:
        return {key: value for key, value in self.__dict__.items() if key != "_predict"}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self.load()

    def predict(self, payload: InferRequest, headers: dict[str, str] | None = None) -> InferResponse:  # type: ignore[override]
        rows = payload.inputs[0].as_numpy().astype(np.float32, copy=False)
        labels = np.asarray(self._predict(rows)).astype(np.int64).ravel()
        output = InferOutput(name="predict", shape=list(labels.shape), datatype="INT64", data=labels.tolist())
        return InferResponse(
            response_id=payload.id or generate_uuid(),
            model_name=self.name,
            infer_outputs=[output],
        )


if __name__ == "__main__":
    args = model_server.args
    ModelServer().start([BenchModel(args.model_name, os.environ["MODEL_PATH"])])
