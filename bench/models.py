"""The benchmark's models, request bodies and expected answers.

- **W1** ``LogisticRegression(max_iter=1000)`` and **W2** ``RandomForestClassifier(n_estimators=100,
  max_depth=10)`` on ``make_classification(n_samples=5000, n_features=20, random_state=0)`` (float32),
  saved with joblib, as in ``../shared/references/peer-bench.md``.
- **W3** an ONNX MLP: ``MLPClassifier(hidden_layer_sizes=(64, 64))`` on the same data through skl2onnx
  (zipmap off; input ``input`` FP32 ``[-1, 20]``; outputs ``label`` and ``probabilities``).

Every request carries one row: row 0 of X. Bodies per server kind are built by :func:`request`.
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np

WORKLOADS = ("w1", "w2", "w3")
DESCRIPTIONS = {
    "w1": "LogisticRegression, 20 float features",
    "w2": "RandomForest, 100 trees, depth 10",
    "w3": "ONNX MLP 20-64-64-2 (skl2onnx, ONNX Runtime)",
}


def artifact(models_dir: Path, workload: str) -> Path:
    """``<workload>.joblib`` or ``<workload>.onnx``: Ferryman names the model after the file's stem."""
    return models_dir / (f"{workload}.onnx" if workload == "w3" else f"{workload}.joblib")


def data() -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import make_classification

    features, labels = make_classification(n_samples=5000, n_features=20, random_state=0)
    return features.astype(np.float32), labels


def build(models_dir: Path) -> dict[str, dict[str, object]]:
    """Train and save the three models (once); return and save {workload: {"row", "expected"}}."""
    import joblib
    import onnxruntime
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.linear_model import LogisticRegression
    from sklearn.neural_network import MLPClassifier

    meta_path = models_dir / "meta.json"
    if meta_path.is_file() and all(artifact(models_dir, w).is_file() for w in WORKLOADS):
        return dict(json.loads(meta_path.read_text()))
    features, labels = data()
    row = features[:1]
    meta: dict[str, dict[str, object]] = {}
    estimators = {
        "w1": LogisticRegression(max_iter=1000),
        "w2": RandomForestClassifier(n_estimators=100, max_depth=10, random_state=0),
    }
    for workload, estimator in estimators.items():
        estimator.fit(features, labels)
        path = artifact(models_dir, workload)
        path.parent.mkdir(parents=True, exist_ok=True)
        joblib.dump(estimator, path)
        meta[workload] = {"expected": int(estimator.predict(row)[0])}
    mlp = MLPClassifier(hidden_layer_sizes=(64, 64), max_iter=500, random_state=0).fit(features, labels)
    path = artifact(models_dir, "w3")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(_to_onnx(mlp))
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    label = session.run(["label"], {"input": row})[0]
    agree = int((session.run(["label"], {"input": features[:500]})[0] == mlp.predict(features[:500])).sum())
    meta["w3"] = {"expected": int(label[0]), "onnx_agrees_with_sklearn": f"{agree}/500"}
    for entry in meta.values():
        entry["row"] = [float(v) for v in row[0]]
    meta_path.write_text(json.dumps(meta, indent=2))
    return meta


def _to_onnx(model: object) -> bytes:
    from skl2onnx import to_onnx
    from skl2onnx.common.data_types import FloatTensorType

    onnx_model = to_onnx(
        model,
        initial_types=[("input", FloatTensorType([None, 20]))],
        options={id(model): {"zipmap": False}},
        target_opset={"": 17, "ai.onnx.ml": 3},
    )
    return bytes(onnx_model.SerializeToString())


@dataclass(frozen=True)
class Request:
    """One HTTP request as wrk will send it."""

    path: str
    body: bytes
    headers: dict[str, str]


def request(kind: str, workload: str, row: list[float]) -> Request:
    """The request body for a server kind: ``v2`` (FP32 ``input-0``, MLServer/KServe/bare ASGI),
    ``ferryman-json`` / ``ferryman-binary`` (Ferryman's own signature: ``input``, FP64 for scikit-learn,
    FP32 for ONNX; binary = the V2 binary tensor extension both ways), ``torchserve`` (the row as a JSON list).
    """
    json_headers = {"Content-Type": "application/json"}
    if kind == "torchserve":
        return Request(f"/predictions/{workload}", json.dumps(row).encode(), json_headers)
    if kind == "v2":
        tensor = {"name": "input-0", "shape": [1, len(row)], "datatype": "FP32", "data": row}
        return Request(f"/v2/models/{workload}/infer", json.dumps({"inputs": [tensor]}).encode(), json_headers)
    datatype = "FP32" if workload == "w3" else "FP64"
    path = f"/v2/models/{workload}/infer"
    if kind == "ferryman-json":
        tensor = {"name": "input", "shape": [1, len(row)], "datatype": datatype, "data": row}
        return Request(path, json.dumps({"inputs": [tensor]}).encode(), json_headers)
    if kind == "ferryman-binary":
        raw = np.asarray([row], dtype=np.float32 if datatype == "FP32" else np.float64).tobytes()
        tensor = {
            "name": "input",
            "shape": [1, len(row)],
            "datatype": datatype,
            "parameters": {"binary_data_size": len(raw)},
        }
        header = json.dumps({"inputs": [tensor], "parameters": {"binary_data_output": True}}).encode()
        headers = {"Content-Type": "application/octet-stream", "Inference-Header-Content-Length": str(len(header))}
        return Request(path, header + raw, headers)
    raise ValueError(f"unknown request kind {kind!r}")


def label_of(body: bytes, headers: dict[str, str]) -> int:
    """The predicted label in a response of any server kind (raises if there is none)."""
    length = headers.get("inference-header-content-length")
    if length is not None:
        header = json.loads(body[: int(length)])
        offset = int(length)
        for output in header["outputs"]:
            size = int(output.get("parameters", {}).get("binary_data_size", 0))
            if output["name"] in ("predict", "label"):
                return _first(output["datatype"], body[offset : offset + size])
            offset += size
        raise ValueError(f"no predict/label output in {header}")
    document = json.loads(body)
    if isinstance(document, dict) and "outputs" in document:
        outputs = {output["name"]: output for output in document["outputs"]}
        chosen = outputs.get("predict") or outputs.get("label") or document["outputs"][0]
        return int(np.asarray(chosen["data"]).ravel()[0])
    if isinstance(document, dict) and "predict" in document:
        return int(document["predict"])
    return int(np.asarray(document).ravel()[0])


def _first(datatype: str, raw: bytes) -> int:
    formats = {"INT64": "<q", "INT32": "<i", "FP64": "<d", "FP32": "<f", "BOOL": "<?"}
    return int(struct.unpack_from(formats[datatype], raw)[0])
