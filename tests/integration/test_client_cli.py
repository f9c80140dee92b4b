"""The Python client and the ``ferryman`` CLI against a real server over HTTP."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import joblib
import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression
from typer.testing import CliRunner, Result

import ferryman
from ferryman.cli.main import app
from ferryman.errors import Conflict, InvalidInput, NotFound

pytestmark = pytest.mark.timeout(180)

runner = CliRunner()

CUSTOM_MODEL = """
import numpy as np

import ferryman
from ferryman import TensorSpec


class Scaler(ferryman.Model):
    inputs = [TensorSpec("x", "FP32", (-1, 3))]
    outputs = [TensorSpec("y", "FP32", (-1, 3)), TensorSpec("label", "BYTES", (-1,))]

    def load(self):
        self.factor = float((self.path / "factor.txt").read_text())

    def predict(self, inputs):
        x = inputs["x"]
        labels = np.array([b"big" if row.sum() > 10 else b"small" for row in x], dtype=object)
        return {"y": (x * self.factor).astype(np.float32), "label": labels}
"""


def cli(server: Any, *args: str) -> Result:
    """Run one CLI command in-process against ``server`` (wide terminal so tables do not wrap)."""
    return runner.invoke(app, [*args, "--url", server.url], env={"COLUMNS": "240"})


def cli_json(server: Any, *args: str) -> Any:
    result = cli(server, *args, "--json")
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


@pytest.fixture
def client(ferryman_server: Any) -> Any:
    with ferryman.Client(ferryman_server.url) as client:
        yield client


@pytest.fixture(scope="module")
def other_joblib(tmp_path_factory: pytest.TempPathFactory, iris_data: tuple[np.ndarray, np.ndarray]) -> Path:
    """A second, different iris classifier (different regularisation, so different bytes)."""
    features, labels = iris_data
    model = LogisticRegression(C=0.05, max_iter=500).fit(features, labels)
    path = tmp_path_factory.mktemp("other") / "iris-weak.joblib"
    joblib.dump(model, path)
    return path


@pytest.fixture
def custom_folder(tmp_path: Path) -> Path:
    folder = tmp_path / "scaler"
    folder.mkdir()
    (folder / "model.py").write_text(CUSTOM_MODEL)
    (folder / "factor.txt").write_text("2.5")
    return folder


# -- the registry through the CLI ------------------------------------------------------------------


def test_push_duplicate_versions_show_alias_and_delete(
    ferryman_server: Any, iris_joblib: Path, other_joblib: Path
) -> None:
    pushed = cli(ferryman_server, "push", str(iris_joblib), "--name", "iris-cli", "--description", "first")
    assert pushed.exit_code == 0, pushed.output
    assert "Registered iris-cli:1 (sklearn, sha256 " in pushed.stdout
    assert "predict_proba" in pushed.stdout  # the signature table

    again = cli(ferryman_server, "push", str(iris_joblib), "--name", "iris-cli")
    assert again.exit_code == 0, again.output
    assert "Already registered: iris-cli:1 has the same bytes (sha256 " in again.stdout

    second = cli_json(ferryman_server, "push", str(other_joblib), "--name", "iris-cli")
    assert second["created"] is True
    assert second["version"]["version"] == 2
    assert second["version"]["framework"] == "sklearn"

    table = cli(ferryman_server, "versions", "iris-cli")
    assert table.exit_code == 0, table.output
    assert "VERSION" in table.stdout
    assert second["version"]["sha256"][:12] in table.stdout
    listed = cli_json(ferryman_server, "versions", "iris-cli")["versions"]
    assert [v["version"] for v in listed] == [1, 2]

    shown = cli(ferryman_server, "show", "iris-cli:1")
    assert shown.exit_code == 0, shown.output
    assert "iris-cli:1" in shown.stdout
    assert "first" in shown.stdout
    assert "[-1, 4]" in shown.stdout
    model = cli_json(ferryman_server, "show", "iris-cli")
    assert model["name"] == "iris-cli"
    assert model["latest_version"] == 2
    assert [v["version"] for v in model["versions"]] == [1, 2]
    assert "iris-cli" in cli(ferryman_server, "models").stdout

    assert cli(ferryman_server, "alias", "set", "iris-cli", "production", "1").stdout.strip() == (
        "iris-cli@production → 1"
    )
    moved = cli(ferryman_server, "alias", "set", "iris-cli", "production", "2")
    assert moved.exit_code == 0, moved.output
    assert "iris-cli@production → 2 (was 1)" in moved.stdout
    assert cli_json(ferryman_server, "alias", "list", "iris-cli") == {"aliases": {"production": 2}}
    assert "production" in cli(ferryman_server, "alias", "list", "iris-cli").stdout
    history = cli_json(ferryman_server, "alias", "history", "iris-cli", "production")["history"]
    assert {(h["from_version"], h["to_version"]) for h in history} == {(None, 1), (1, 2)}
    assert "CHANGED AT" in cli(ferryman_server, "alias", "history", "iris-cli", "production").stdout

    refused = cli(ferryman_server, "delete", "iris-cli:2")
    assert refused.exit_code == 1
    assert "Error:" in refused.output
    assert "production" in refused.output
    assert "Traceback" not in refused.output

    removed = cli(ferryman_server, "alias", "delete", "iris-cli", "production")
    assert removed.exit_code == 0, removed.output
    deleted = cli(ferryman_server, "delete", "iris-cli:2")
    assert deleted.exit_code == 0, deleted.output
    assert "Deleted iris-cli:2" in deleted.stdout
    assert [v["version"] for v in cli_json(ferryman_server, "versions", "iris-cli")["versions"]] == [1]

    missing = cli(ferryman_server, "show", "iris-cli:2")
    assert missing.exit_code == 1
    assert "Error:" in missing.output


def test_load_unload_and_delete_whole_model(ferryman_server: Any, iris_joblib: Path) -> None:
    assert cli(ferryman_server, "push", str(iris_joblib), "--name", "iris-life").exit_code == 0
    unloaded = cli(ferryman_server, "unload", "iris-life:1")
    assert unloaded.exit_code == 0, unloaded.output
    assert unloaded.stdout.strip() == "iris-life:1 unloaded"
    loaded = cli_json(ferryman_server, "load", "iris-life:1")
    assert loaded["state"] == "loaded"

    assert cli(ferryman_server, "delete", "iris-life").exit_code == 1  # needs --yes
    gone = cli(ferryman_server, "delete", "iris-life", "--yes")
    assert gone.exit_code == 0, gone.output
    names = [m["name"] for m in cli_json(ferryman_server, "models")["models"]]
    assert "iris-life" not in names


def test_cli_entry_point_runs_as_module(ferryman_server: Any) -> None:
    for module in ("ferryman.cli.main", "ferryman"):
        done = subprocess.run(
            [sys.executable, "-m", module, "models", "--json", "--url", ferryman_server.url],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert done.returncode == 0, done.stderr
        assert isinstance(json.loads(done.stdout)["models"], list)


# -- predict ---------------------------------------------------------------------------------------


def test_predict_from_data_input_file_and_binary(
    ferryman_server: Any,
    client: Any,
    iris_joblib: Path,
    iris_pipeline: Any,
    iris_data: tuple[np.ndarray, np.ndarray],
    tmp_path: Path,
) -> None:
    client.push(iris_joblib, "iris-predict")
    features = iris_data[0][[0, 60, 120]]
    expected = iris_pipeline.predict(features).tolist()
    data = json.dumps(features.tolist())

    table = cli(ferryman_server, "predict", "iris-predict", "--data", data)
    assert table.exit_code == 0, table.output
    assert "predict_proba[2]" in table.stdout
    assert len([line for line in table.stdout.splitlines() if line.startswith("│")]) == 3  # one per example
    assert "iris-predict:1" in table.stdout

    def predicted(*args: str) -> list[Any]:
        answer = cli_json(ferryman_server, "predict", *args)
        assert answer["model_name"] == "iris-predict"
        assert answer["model_version"] == "1"
        assert np.allclose(answer["outputs"]["predict_proba"], iris_pipeline.predict_proba(features))
        return list(answer["outputs"]["predict"])

    assert predicted("iris-predict:1", "--data", data) == expected
    assert predicted("iris-predict", "--input", f"input={data}") == expected
    assert predicted("iris-predict", "--data", data, "--binary") == expected

    npy = tmp_path / "rows.npy"
    np.save(npy, features)
    assert predicted("iris-predict", "--file", str(npy)) == expected
    csv_file = tmp_path / "rows.csv"
    csv_file.write_text(
        "sepal_length,sepal_width,petal_length,petal_width\n"
        + "\n".join(",".join(repr(float(v)) for v in row) for row in features)
        + "\n"
    )
    assert predicted("iris-predict", "--file", str(csv_file), "--binary") == expected

    only = cli_json(ferryman_server, "predict", "iris-predict", "--data", data, "--output", "predict")
    assert list(only["outputs"]) == ["predict"]

    wrong = cli(ferryman_server, "predict", "iris-predict", "--data", "[[1, 2, 3]]")
    assert wrong.exit_code == 1
    assert "Error:" in wrong.output
    unknown = cli(ferryman_server, "predict", "no-such-model", "--data", "[[1]]")
    assert unknown.exit_code == 1
    assert "no-such-model" in unknown.output


# -- the Python client -----------------------------------------------------------------------------


def test_client_infer_json_and_binary_match_in_process(
    client: Any, iris_joblib: Path, iris_pipeline: Any, iris_data: tuple[np.ndarray, np.ndarray]
) -> None:
    progress: list[tuple[int, int]] = []
    pushed = client.push(iris_joblib, "iris-client", progress=lambda sent, total: progress.append((sent, total)))
    assert pushed["created"] is True
    size = iris_joblib.stat().st_size
    assert progress[-1] == (size, size)
    assert all(sent <= total for sent, total in progress)

    features = iris_data[0]
    want_labels = iris_pipeline.predict(features)
    want_proba = iris_pipeline.predict_proba(features)
    for binary in (False, True):
        result = client.infer("iris-client", features, binary=binary, request_id=f"req-{binary}")
        assert result.model_name == "iris-client"
        assert result.model_version == "1"
        assert result.id == f"req-{binary}"
        assert set(result.outputs) == {"predict", "predict_proba"}
        assert result.outputs["predict"].dtype == np.int64
        np.testing.assert_array_equal(result.outputs["predict"], want_labels)
        assert result.outputs["predict_proba"].shape == want_proba.shape
        np.testing.assert_allclose(result.outputs["predict_proba"], want_proba, rtol=0, atol=1e-12)

    # float32 rows are cast to the model's FP64; a mapping and an explicit version work too.
    as_float32 = client.infer("iris-client", features[:5].astype(np.float32), version=1, binary=True)
    np.testing.assert_array_equal(as_float32.outputs["predict"], iris_pipeline.predict(features[:5].astype(np.float32)))
    mapped = client.infer("iris-client", {"input": features[:5]}, outputs=["predict_proba"])
    assert list(mapped.outputs) == ["predict_proba"]
    np.testing.assert_allclose(mapped.outputs["predict_proba"], want_proba[:5], rtol=0, atol=1e-12)


def test_client_management_calls_and_errors(client: Any, iris_joblib: Path, other_joblib: Path) -> None:
    assert client.live() is True
    assert client.ready() is True
    assert "binary_tensor_data" in client.server_metadata()["extensions"]

    client.push(iris_joblib, "iris-manage", description="one")
    client.push(other_joblib, "iris-manage")
    assert [v["version"] for v in client.versions("iris-manage")] == [1, 2]
    assert client.version("iris-manage", 1)["description"] == "one"
    assert client.model("iris-manage")["version_count"] == 2
    assert any(m["name"] == "iris-manage" for m in client.models())

    changed = client.set_alias("iris-manage", "staging", 1)
    assert changed["version"] == 1
    assert changed["previous"] is None
    assert client.aliases("iris-manage") == {"staging": 1}
    with pytest.raises(Conflict, match="staging") as conflict:
        client.delete_version("iris-manage", 1)
    assert conflict.value.status == 409
    assert len(client.alias_history("iris-manage", "staging")) == 1
    client.delete_alias("iris-manage", "staging")
    client.delete_version("iris-manage", 1)

    metadata = client.model_metadata("iris-manage", 2)
    assert [spec["name"] for spec in metadata["inputs"]] == ["input"]
    assert client.unload("iris-manage", 2)["state"] == "unloaded"
    assert client.load("iris-manage", 2)["state"] == "loaded"

    with pytest.raises(NotFound) as missing:
        client.version("iris-manage", 1)
    assert missing.value.status == 404
    assert "1" in str(missing.value)
    with pytest.raises(NotFound):
        client.infer("no-such-model", np.zeros((1, 4)))
    with pytest.raises(InvalidInput):
        client.infer("iris-manage", np.zeros((2, 3)))
    with pytest.raises(InvalidInput, match="nope"):
        client.infer("iris-manage", {"input": np.zeros((1, 4))}, version="2", binary=True, outputs=["nope"])

    client.delete_model("iris-manage")
    with pytest.raises(NotFound):
        client.model("iris-manage")


def test_folder_push_of_a_custom_model(ferryman_server: Any, client: Any, custom_folder: Path) -> None:
    pushed = cli(ferryman_server, "push", str(custom_folder), "--name", "scaler")
    assert pushed.exit_code == 0, pushed.output
    assert "Registered scaler:1 (custom, sha256 " in pushed.stdout
    # Packing is deterministic: the same folder is the same bytes.
    again = cli(ferryman_server, "push", str(custom_folder), "--name", "scaler")
    assert "Already registered: scaler:1" in again.stdout

    x = np.array([[1, 2, 3], [4, 5, 6]], dtype=np.float32)
    for binary in (False, True):
        result = client.infer("scaler", x, binary=binary)
        assert result.outputs["y"].dtype == np.float32
        np.testing.assert_array_equal(result.outputs["y"], x * np.float32(2.5))
        assert result.outputs["label"].tolist() == [b"small", b"big"]

    table = cli(ferryman_server, "predict", "scaler", "--data", "[[1, 2, 3], [4, 5, 6]]")
    assert table.exit_code == 0, table.output
    assert "big" in table.stdout
    assert "y[2]" in table.stdout


TEXT_MODEL = """
import numpy as np

import ferryman
from ferryman import TensorSpec


class Text(ferryman.Model):
    inputs = [TensorSpec("text", "BYTES", (-1,))]
    outputs = [TensorSpec("upper", "BYTES", (-1,)), TensorSpec("length", "INT64", (-1,))]

    def predict(self, inputs):
        text = inputs["text"]
        upper = np.array([item.upper() for item in text], dtype=object)
        return {"upper": upper, "length": np.array([len(item) for item in text], dtype=np.int64)}
"""

ADDER_MODEL = """
import numpy as np

import ferryman
from ferryman import TensorSpec


class Adder(ferryman.Model):
    inputs = [TensorSpec("a", "INT32", (-1, 2)), TensorSpec("b", "FP32", (-1, 2))]
    outputs = [TensorSpec("total", "FP32", (-1, 2))]

    def predict(self, inputs):
        assert inputs["a"].dtype == np.int32, inputs["a"].dtype
        return {"total": (inputs["a"] + inputs["b"]).astype(np.float32)}
"""


def test_bytes_and_multi_input_models(ferryman_server: Any, client: Any, tmp_path: Path) -> None:
    for name, source in (("text", TEXT_MODEL), ("adder", ADDER_MODEL)):
        folder = tmp_path / name
        folder.mkdir()
        (folder / "model.py").write_text(source)
        assert client.push(folder, name)["created"] is True

    words = np.array(["héllo", "ab"])
    for binary in (False, True):
        result = client.infer("text", words, binary=binary)
        assert result.outputs["upper"].tolist() == ["HéLLO".encode(), b"AB"]
        assert result.outputs["length"].tolist() == [6, 2]  # utf-8 bytes
    raw = client.infer("text", {"text": np.array([b"\xff\xfe"], dtype=object)}, binary=True)
    assert raw.outputs["upper"].tolist() == [b"\xff\xfe"]
    with pytest.raises(InvalidInput, match="utf-8"):
        client.infer("text", {"text": np.array([b"\xff\xfe"], dtype=object)})
    table = cli(ferryman_server, "predict", "text", "--data", '["héllo", "ab"]')
    assert table.exit_code == 0, table.output
    assert "HéLLO" in table.stdout  # bytes.upper() leaves non-ASCII alone

    with pytest.raises(InvalidInput, match="2 inputs"):
        client.infer("adder", np.zeros((1, 2)))
    summed = client.infer(
        "adder",
        {"a": np.array([[1, 2]], dtype=np.int32), "b": np.array([[0.5, 0.25]], dtype=np.float32)},
        binary=True,
    )
    np.testing.assert_array_equal(summed.outputs["total"], np.array([[1.5, 2.25]], dtype=np.float32))
    answer = cli_json(ferryman_server, "predict", "adder", "--input", "a=[[1, 2]]", "--input", "b=[[0.5, 0.25]]")
    assert answer["outputs"]["total"] == [[1.5, 2.25]]


NAN_MODEL = """
import numpy as np

import ferryman
from ferryman import TensorSpec


class Gaps(ferryman.Model):
    inputs = [TensorSpec("x", "FP64", (-1, 2), allow_nan=True)]
    outputs = [TensorSpec("missing", "BOOL", (-1, 2)), TensorSpec("filled", "FP16", (-1, 2))]

    def predict(self, inputs):
        x = inputs["x"]
        return {"missing": np.isnan(x), "filled": np.nan_to_num(x, nan=-1.0).astype(np.float16)}
"""


def test_nan_bool_and_fp16_round_trip(client: Any, tmp_path: Path) -> None:
    folder = tmp_path / "gaps"
    folder.mkdir()
    (folder / "model.py").write_text(NAN_MODEL)
    client.push(folder, "gaps")
    x = np.array([[np.nan, 1.5], [2.0, np.nan]])
    for binary in (False, True):
        result = client.infer("gaps", x, binary=binary)
        assert result.outputs["missing"].dtype == np.bool_
        assert result.outputs["missing"].tolist() == [[True, False], [False, True]]
        assert result.outputs["filled"].dtype == np.float16
        assert result.outputs["filled"].tolist() == [[-1.0, 1.5], [2.0, -1.0]]
