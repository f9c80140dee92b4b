"""Framework detection, artifact resolution, lazy imports and load errors."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import joblib
import numpy as np
import pytest

from ferryman.errors import InvalidInput, ModelFailed, RuntimeUnavailable
from ferryman.runtimes import (
    FRAMEWORKS,
    RuntimeConfig,
    create_runtime,
    detect_framework,
    load_runtime,
    resolve_artifact,
)

XGBOOST_JSON = json.dumps({"learner": {}, "version": [2, 1, 0]})
LIGHTGBM_TEXT = "tree\nversion=v4\nnum_class=1\n"


def write(path: Path, text: str = "x") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_frameworks_are_the_known_names() -> None:
    assert FRAMEWORKS == ("sklearn", "xgboost", "lightgbm", "onnx", "custom")


@pytest.mark.parametrize(
    ("name", "text", "framework"),
    [
        ("model.onnx", "x", "onnx"),
        ("model.joblib", "x", "sklearn"),
        ("model.pkl", "x", "sklearn"),
        ("model.pickle", "x", "sklearn"),
        ("model.skops", "x", "sklearn"),
        ("MODEL.JSON", XGBOOST_JSON, "xgboost"),
        ("model.ubj", "x", "xgboost"),
        ("model.txt", LIGHTGBM_TEXT, "lightgbm"),
    ],
)
def test_detects_artifact_files(tmp_path: Path, name: str, text: str, framework: str) -> None:
    assert detect_framework(write(tmp_path / name, text)) == framework


@pytest.mark.parametrize(
    ("name", "text"),
    [
        ("model.bin", "x"),
        ("config.json", '{"layers": 3}'),
        ("broken.json", "{not json"),
        ("notes.txt", "hello"),
    ],
)
def test_rejects_unknown_files_naming_them(tmp_path: Path, name: str, text: str) -> None:
    with pytest.raises(InvalidInput, match=rf"{name}.*supported: a \.onnx file"):
        detect_framework(write(tmp_path / name, text))


def test_rejects_missing_path(tmp_path: Path) -> None:
    with pytest.raises(InvalidInput, match=r"nothing\.onnx: no such file"):
        detect_framework(tmp_path / "nothing.onnx")


def test_folder_with_model_yaml_framework(tmp_path: Path) -> None:
    write(tmp_path / "m" / "model.yaml", "framework: onnx\n")
    write(tmp_path / "m" / "model.onnx")
    write(tmp_path / "m" / "model.py")  # the manifest wins over model.py

    assert detect_framework(tmp_path / "m") == "onnx"
    assert resolve_artifact(tmp_path / "m", "onnx") == tmp_path / "m" / "model.onnx"


def test_folder_with_unknown_framework_in_model_yaml(tmp_path: Path) -> None:
    write(tmp_path / "m" / "model.yaml", "framework: caffe\n")

    with pytest.raises(InvalidInput, match="unknown framework 'caffe'"):
        detect_framework(tmp_path / "m")


def test_folder_with_model_py_is_custom(tmp_path: Path) -> None:
    write(tmp_path / "m" / "model.py")
    write(tmp_path / "m" / "weights.joblib")

    assert detect_framework(tmp_path / "m") == "custom"
    assert resolve_artifact(tmp_path / "m", "custom") == tmp_path / "m"


def test_folder_with_entrypoint_is_custom(tmp_path: Path) -> None:
    write(tmp_path / "m" / "model.yaml", "entrypoint: serve:Model\n")

    assert detect_framework(tmp_path / "m") == "custom"


def test_folder_with_one_artifact_among_other_files(tmp_path: Path) -> None:
    write(tmp_path / "m" / "model.txt", LIGHTGBM_TEXT)
    write(tmp_path / "m" / "README.txt", "how to use it")
    write(tmp_path / "m" / "config.json", "{}")

    assert detect_framework(tmp_path / "m") == "lightgbm"
    assert resolve_artifact(tmp_path / "m", "lightgbm") == tmp_path / "m" / "model.txt"


def test_folder_with_two_artifacts_is_ambiguous(tmp_path: Path) -> None:
    write(tmp_path / "m" / "a.onnx")
    write(tmp_path / "m" / "b.joblib")

    with pytest.raises(InvalidInput, match=r"folder m \(found a\.onnx, b\.joblib\)"):
        detect_framework(tmp_path / "m")


def test_resolve_artifact_needs_exactly_one_file_of_the_framework(tmp_path: Path) -> None:
    write(tmp_path / "m" / "a.onnx")
    write(tmp_path / "m" / "b.onnx")

    with pytest.raises(InvalidInput, match=r"exactly one onnx artifact file, found: a\.onnx, b\.onnx"):
        resolve_artifact(tmp_path / "m", "onnx")
    assert resolve_artifact(tmp_path / "m" / "a.onnx", "onnx") == tmp_path / "m" / "a.onnx"


def test_unknown_framework_lists_the_known_ones() -> None:
    with pytest.raises(InvalidInput, match="unknown framework 'caffe'; expected one of sklearn, xgboost"):
        create_runtime("caffe")


def test_missing_package_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    assert create_runtime("onnx").framework == "onnx"  # imported once already: still re-checked
    monkeypatch.setitem(sys.modules, "onnxruntime", None)

    with pytest.raises(RuntimeUnavailable) as caught:
        create_runtime("onnx")

    assert str(caught.value) == "the 'onnx' runtime needs onnxruntime: pip install 'ferryman[onnx]'"
    assert caught.value.status == 501


def test_missing_sklearn_names_the_distribution(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "sklearn", None)

    with pytest.raises(RuntimeUnavailable, match=r"needs scikit-learn: pip install 'ferryman\[sklearn\]'"):
        create_runtime("sklearn")


def test_importing_runtimes_imports_no_framework() -> None:
    code = (
        "import sys, ferryman.runtimes\n"
        "loaded = {'onnxruntime', 'sklearn', 'xgboost', 'lightgbm'} & set(sys.modules)\n"
        "assert not loaded, loaded\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_corrupt_onnx_is_model_failed_naming_the_file(tmp_path: Path) -> None:
    path = write(tmp_path / "broken.onnx", "this is not protobuf")

    with pytest.raises(ModelFailed, match=r"cannot load broken\.onnx with the onnx runtime: ") as caught:
        load_runtime(path, None, RuntimeConfig())
    assert caught.value.status == 500


def test_explicit_framework_that_does_not_fit_is_model_failed(tmp_path: Path) -> None:
    joblib.dump(np.zeros(3), tmp_path / "model.joblib")

    with pytest.raises(ModelFailed, match=r"model\.joblib with the xgboost runtime"):
        load_runtime(tmp_path / "model.joblib", "xgboost", RuntimeConfig())
