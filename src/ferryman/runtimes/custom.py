"""Custom Python models: a folder whose ``model.py`` defines one :class:`ferryman.Model` subclass.

``model.yaml`` may name another module and class with ``entrypoint: "module:Class"``. The
module is imported under a name unique to this load, and the folder's sibling modules are
forgotten after the import, so two versions with a ``features.py`` each never share one.
Signature: the model's ``inputs`` and ``outputs``; without ``inputs`` any names are accepted.
"""

from __future__ import annotations

import importlib.util
import itertools
import sys
import threading
from pathlib import Path
from types import ModuleType
from typing import Any, ClassVar

import numpy as np
import yaml

from ferryman.errors import InvalidInput
from ferryman.model import Model
from ferryman.runtimes.base import RuntimeConfig
from ferryman.tensors import Signature, TensorSpec

__all__ = ["CustomRuntime"]

_load_counter = itertools.count(1)
# sys.path and sys.modules are process-wide: one custom import at a time.
_import_lock = threading.Lock()


class CustomRuntime:
    """Serves an instance of a user's :class:`ferryman.Model` subclass."""

    framework: ClassVar[str] = "custom"

    def __init__(self) -> None:
        self._model: Model | None = None
        self._module_name: str | None = None
        self._signature = Signature(inputs=(), outputs=())

    def load(self, path: Path, config: RuntimeConfig) -> None:
        """Import the folder's model module, construct the model and call its ``load()``."""
        module_file, class_name = _entrypoint(path)
        module = _import(module_file)
        self._module_name = module.__name__
        cls = _model_class(module, class_name, module_file)
        model = cls(path, config.options)
        model.load()
        self._signature = Signature(
            inputs=tuple(_specs(model.inputs, cls, "inputs")),
            outputs=tuple(_specs(model.outputs, cls, "outputs")),
            open_inputs=model.inputs is None,
        )
        self._model = model

    def signature(self) -> Signature:
        """Return what the model class declares (open inputs when it declares none)."""
        return self._signature

    def predict(self, inputs: dict[str, np.ndarray[Any, Any]]) -> dict[str, np.ndarray[Any, Any]]:
        """Call the model and check it returned a dict of output name → array."""
        if self._model is None:
            raise RuntimeError("the custom model is not loaded")
        name = type(self._model).__name__
        result = self._model.predict(inputs)
        if not isinstance(result, dict):
            raise TypeError(f"{name}.predict returned {type(result).__name__}, expected a dict of name → array")
        outputs: dict[str, np.ndarray[Any, Any]] = {}
        for key, value in result.items():
            if not isinstance(key, str):
                raise TypeError(f"{name}.predict returned a non-string output name {key!r}")
            try:
                outputs[key] = np.asarray(value)
            except Exception as exc:
                raise TypeError(f"{name}.predict output {key!r} is not array-like: {exc}") from exc
        return outputs

    def unload(self) -> None:
        """Call the model's ``unload()`` and forget its module."""
        if self._model is not None:
            self._model.unload()
        self._model = None
        if self._module_name is not None:
            sys.modules.pop(self._module_name, None)


def _entrypoint(folder: Path) -> tuple[Path, str | None]:
    """The module file to import and, when ``model.yaml`` names one, the class."""
    manifest = folder / "model.yaml"
    settings = yaml.safe_load(manifest.read_text()) if manifest.is_file() else None
    entrypoint = settings.get("entrypoint") if isinstance(settings, dict) else None
    if entrypoint is None:
        module_file, class_name = folder / "model.py", None
    else:
        module, _, class_name = str(entrypoint).partition(":")
        module = module.removesuffix(".py")
        module_file = folder / f"{module}.py"
        if not (module.isidentifier() and class_name.isidentifier()):
            raise InvalidInput(f"model.yaml entrypoint {entrypoint!r} must look like 'module:Class'")
    if not module_file.is_file():
        raise InvalidInput(f"custom model folder {folder.name} has no {module_file.name}")
    return module_file, class_name


def _import(module_file: Path) -> ModuleType:
    """Import ``module_file`` under a unique name with its folder importable during the import."""
    name = f"ferryman_custom_{next(_load_counter)}_{module_file.stem}"
    spec = importlib.util.spec_from_file_location(name, module_file)
    if spec is None or spec.loader is None:
        raise InvalidInput(f"cannot import {module_file.name}")
    module = importlib.util.module_from_spec(spec)
    folder = str(module_file.parent)
    with _import_lock:
        before = set(sys.modules)
        sys.modules[name] = module
        sys.path.insert(0, folder)
        try:
            spec.loader.exec_module(module)
        except BaseException:
            sys.modules.pop(name, None)
            raise
        finally:
            sys.path.remove(folder)
            for added in set(sys.modules) - before - {name}:
                if _is_inside(sys.modules[added], module_file.parent):
                    del sys.modules[added]
    return module


def _is_inside(module: ModuleType | None, folder: Path) -> bool:
    file = getattr(module, "__file__", None)
    return file is not None and Path(file).resolve().is_relative_to(folder.resolve())


def _model_class(module: ModuleType, class_name: str | None, module_file: Path) -> type[Model]:
    """The one Model subclass in the module (or the one ``class_name`` names)."""
    if class_name is not None:
        found = getattr(module, class_name, None)
        if not (isinstance(found, type) and issubclass(found, Model)):
            raise InvalidInput(f"{module_file.name} has no ferryman.Model subclass called {class_name!r}")
        return found
    candidates = [
        value
        for value in vars(module).values()
        if isinstance(value, type) and issubclass(value, Model) and value is not Model
    ]
    # Prefer classes defined here over base classes imported from elsewhere.
    own = [cls for cls in candidates if cls.__module__ == module.__name__]
    candidates = own or candidates
    if len(candidates) != 1:
        names = ", ".join(sorted(cls.__name__ for cls in candidates)) or "none"
        raise InvalidInput(
            f"{module_file.name} must define exactly one ferryman.Model subclass, found: {names} "
            "(name one with entrypoint: 'module:Class' in model.yaml)"
        )
    return candidates[0]


def _specs(declared: Any, cls: type[Model], attribute: str) -> list[TensorSpec]:
    if declared is None:
        return []
    if not all(isinstance(spec, TensorSpec) for spec in declared):
        raise InvalidInput(f"{cls.__name__}.{attribute} must be a list of ferryman.TensorSpec")
    return list(declared)
