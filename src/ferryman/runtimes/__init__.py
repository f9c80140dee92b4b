"""Framework runtimes behind one :class:`~ferryman.runtimes.base.Runtime` protocol.

Each framework lives in its own module, imported only when a model of that framework is
loaded, so a server that serves scikit-learn never imports onnxruntime. This module finds
out which framework an artifact belongs to and builds the matching runtime.
"""

from __future__ import annotations

import importlib
import json
from pathlib import Path

import yaml

from ferryman.errors import FerrymanError, InvalidInput, ModelFailed, RuntimeUnavailable
from ferryman.runtimes.base import Runtime, RuntimeConfig

__all__ = [
    "FRAMEWORKS",
    "Runtime",
    "RuntimeConfig",
    "create_runtime",
    "detect_framework",
    "load_runtime",
    "resolve_artifact",
]

#: The framework names a model version can carry.
FRAMEWORKS: tuple[str, ...] = ("sklearn", "xgboost", "lightgbm", "onnx", "custom")

#: framework -> (runtime module, runtime class, modules it imports, extra that installs them)
_RUNTIMES: dict[str, tuple[str, str, tuple[str, ...], str | None]] = {
    "sklearn": ("sklearn", "SklearnRuntime", ("sklearn", "joblib"), "sklearn"),
    "xgboost": ("xgboost", "XGBoostRuntime", ("xgboost",), "xgboost"),
    "lightgbm": ("lightgbm", "LightGBMRuntime", ("lightgbm",), "lightgbm"),
    "onnx": ("onnx", "OnnxRuntime", ("onnxruntime",), "onnx"),
    "custom": ("custom", "CustomRuntime", (), None),
}

#: Importable module name -> the distribution that provides it, for error messages.
_DISTRIBUTIONS = {"sklearn": "scikit-learn", "onnxruntime": "onnxruntime"}

#: Artifact file suffix -> framework.
_SUFFIXES = {
    ".onnx": "onnx",
    ".joblib": "sklearn",
    ".pkl": "sklearn",
    ".pickle": "sklearn",
    ".skops": "sklearn",
    ".json": "xgboost",
    ".ubj": "xgboost",
    ".txt": "lightgbm",
}

_SUPPORTED = (
    "a .onnx file, a scikit-learn .joblib/.pkl/.pickle/.skops file, an XGBoost .json/.ubj file, "
    "a LightGBM .txt file, or a folder with model.py (custom), a model.yaml naming the framework, "
    "or exactly one of those files"
)


def create_runtime(framework: str) -> Runtime:
    """Return a fresh, unloaded runtime for ``framework``, importing its package now."""
    try:
        module_name, class_name, needs, extra = _RUNTIMES[framework]
    except KeyError:
        raise InvalidInput(f"unknown framework {framework!r}; expected one of {', '.join(FRAMEWORKS)}") from None
    try:
        # Import the framework's packages here, every time, so a missing package is reported
        # even when the runtime module itself was imported earlier.
        for needed in needs:
            importlib.import_module(needed)
        module = importlib.import_module(f"ferryman.runtimes.{module_name}")
    except ImportError as exc:
        missing = exc.name or (needs[0] if needs else module_name)
        distribution = _DISTRIBUTIONS.get(missing, missing)
        raise RuntimeUnavailable(
            f"the {framework!r} runtime needs {distribution}: pip install 'ferryman[{extra}]'"
        ) from exc
    runtime: Runtime = getattr(module, class_name)()
    return runtime


def detect_framework(path: Path) -> str:
    """Name the framework of an artifact file or model folder, or raise InvalidInput."""
    if path.is_dir():
        return _folder_framework(path)
    if not path.is_file():
        raise InvalidInput(f"{path.name}: no such file or folder")
    framework = _file_framework(path)
    if framework is None:
        raise InvalidInput(f"cannot tell the framework of {path.name}; supported: {_SUPPORTED}")
    return framework


def resolve_artifact(path: Path, framework: str) -> Path:
    """Return what the runtime loads: the file itself, the folder (custom), or its one artifact."""
    if not path.is_dir() or framework == "custom":
        return path
    found = [file for file, kind in _artifact_files(path) if kind == framework]
    if len(found) != 1:
        names = ", ".join(file.name for file in found) or "none"
        raise InvalidInput(f"folder {path.name} must hold exactly one {framework} artifact file, found: {names}")
    return found[0]


def load_runtime(path: Path, framework: str | None, config: RuntimeConfig) -> Runtime:
    """Detect (if not given) the framework, build its runtime and load the artifact at ``path``."""
    framework = framework or detect_framework(path)
    runtime = create_runtime(framework)
    artifact = resolve_artifact(path, framework)
    try:
        runtime.load(artifact, config)
    except FerrymanError:
        raise
    except Exception as exc:
        raise ModelFailed(
            f"cannot load {artifact.name} with the {framework} runtime: {type(exc).__name__}: {exc}"
        ) from exc
    return runtime


def _file_framework(path: Path) -> str | None:
    """The framework of one artifact file, or None when it is not one we know."""
    framework = _SUFFIXES.get(path.suffix.lower())
    if framework == "xgboost" and path.suffix.lower() == ".json" and not _is_xgboost_json(path):
        return None
    if framework == "lightgbm" and not _is_lightgbm_text(path):
        return None
    return framework


def _is_xgboost_json(path: Path) -> bool:
    try:
        with path.open("rb") as file:
            document = json.load(file)
    except (OSError, ValueError):
        return False
    return isinstance(document, dict) and "learner" in document


def _is_lightgbm_text(path: Path) -> bool:
    try:
        with path.open("rb") as file:
            return file.read(4) == b"tree"
    except OSError:
        return False


def _artifact_files(folder: Path) -> list[tuple[Path, str]]:
    """Top-level files of ``folder`` that are artifacts of a known framework."""
    found = []
    for file in sorted(folder.iterdir()):
        if file.is_file() and not file.name.startswith("."):
            framework = _file_framework(file)
            if framework is not None:
                found.append((file, framework))
    return found


def _folder_framework(folder: Path) -> str:
    manifest = folder / "model.yaml"
    if manifest.is_file():
        try:
            settings = yaml.safe_load(manifest.read_text()) or {}
        except yaml.YAMLError as exc:
            raise InvalidInput(f"{folder.name}/model.yaml is not valid YAML: {exc}") from None
        if not isinstance(settings, dict):
            raise InvalidInput(f"{folder.name}/model.yaml must be a mapping")
        framework = settings.get("framework")
        if framework is not None:
            if framework not in FRAMEWORKS:
                raise InvalidInput(
                    f"{folder.name}/model.yaml names unknown framework {framework!r}; "
                    f"expected one of {', '.join(FRAMEWORKS)}"
                )
            return str(framework)
        if "entrypoint" in settings:
            return "custom"
    if (folder / "model.py").is_file():
        return "custom"
    found = _artifact_files(folder)
    if len(found) == 1:
        return found[0][1]
    listed = f" (found {', '.join(file.name for file, _ in found)})" if found else ""
    raise InvalidInput(f"cannot tell the framework of folder {folder.name}{listed}; supported: {_SUPPORTED}")
