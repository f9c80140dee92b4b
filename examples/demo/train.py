"""Train the two demo models from data that ships with scikit-learn and write them to a folder.

- ``iris.joblib``: a scikit-learn pipeline (scaler + logistic regression) on the iris flowers.
- ``breast-cancer.onnx``: a scaler + logistic regression on the breast-cancer data, converted to ONNX.

Prints a ready-to-paste ``curl`` for each model.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import joblib
import numpy as np
from skl2onnx import to_onnx
from sklearn.datasets import load_breast_cancer, load_iris
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler


def train(out: Path) -> dict[str, list[float]]:
    """Write both models (unless already there) and return one example row for each."""
    out.mkdir(parents=True, exist_ok=True)
    iris_x, iris_y = load_iris(return_X_y=True)
    if not (out / "iris.joblib").exists():
        iris = make_pipeline(StandardScaler(), LogisticRegression(max_iter=500)).fit(iris_x, iris_y)
        joblib.dump(iris, out / "iris.joblib")

    cancer_x, cancer_y = load_breast_cancer(return_X_y=True)
    cancer_x = cancer_x.astype(np.float32)
    if not (out / "breast-cancer.onnx").exists():
        cancer = make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000)).fit(cancer_x, cancer_y)
        onnx_model = to_onnx(cancer, cancer_x[:1], options={id(cancer): {"zipmap": False}}, target_opset=17)
        (out / "breast-cancer.onnx").write_bytes(onnx_model.SerializeToString())
    return {"iris": iris_x[0].tolist(), "breast-cancer": cancer_x[0].tolist()}


def curl_for(url: str, model: str, row: list[float], input_name: str, datatype: str) -> str:
    data = [round(v, 4) for v in row]
    body = json.dumps({"inputs": [{"name": input_name, "datatype": datatype, "shape": [1, len(row)], "data": data}]})
    return f"curl -s {url}/v2/models/{model}/infer -H 'content-type: application/json' -d '{body}'"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, default=Path("demo-models"))
    parser.add_argument("--url", default="http://127.0.0.1:8080")
    args = parser.parse_args()
    rows = train(args.out)
    print("Demo models written to", args.out)
    print("\nOnce the server is up (API docs at", f"{args.url}/docs):\n")
    print(curl_for(args.url, "iris", rows["iris"], "input", "FP64"), "\n")
    print(curl_for(args.url, "breast-cancer", rows["breast-cancer"], "X", "FP32"), "\n", flush=True)


if __name__ == "__main__":
    main()
