"""The floor of Python HTTP overhead with a model: raw ASGI, parse a V2 JSON body, run the model, answer V2.

Stdlib ``json``, numpy, one prediction per request in the event loop, no batching, no validation.
``MODEL_PATH`` is a scikit-learn ``.joblib`` (``predict``) or an ``.onnx`` file (first output).
Served by uvicorn (uvloop + httptools, no access log), 1 or 2 worker processes.
"""

from __future__ import annotations

import json
import os
from typing import Any

import numpy as np

MODEL_PATH = os.environ["MODEL_PATH"]
HEADERS = [(b"content-type", b"application/json")]

if MODEL_PATH.endswith(".onnx"):
    import onnxruntime

    _session = onnxruntime.InferenceSession(MODEL_PATH, providers=["CPUExecutionProvider"])
    _input = _session.get_inputs()[0].name
    _output = _session.get_outputs()[0].name

    def predict(rows: np.ndarray) -> np.ndarray:
        return np.asarray(_session.run([_output], {_input: rows})[0])

else:
    import joblib

    _model = joblib.load(MODEL_PATH)

    def predict(rows: np.ndarray) -> np.ndarray:
        return np.asarray(_model.predict(rows))


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    chunks = []
    more = True
    while more:
        message = await receive()
        chunks.append(message.get("body", b""))
        more = message.get("more_body", False)
    request = json.loads(b"".join(chunks))
    tensor = request["inputs"][0]
    rows = np.asarray(tensor["data"], dtype=np.float32).reshape(tensor["shape"])
    labels = predict(rows)
    body = json.dumps(
        {
            "model_name": scope["path"].split("/")[3] if scope["path"].startswith("/v2/models/") else "m",
            "model_version": "1",
            "outputs": [
                {"name": "predict", "datatype": "INT64", "shape": [len(labels)], "data": labels.ravel().tolist()}
            ],
        }
    ).encode()
    await send({"type": "http.response.start", "status": 200, "headers": HEADERS})
    await send({"type": "http.response.body", "body": body})
