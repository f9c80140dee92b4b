"""What a version answers when a request's deadline cannot be met: a default output or a cheaper model.

Declared per version in ``runtime_config.fallback``::

    {"fallback": {"outputs": {"predict": 0, "predict_proba": [0.5, 0.5]}}}   # a default, per row
    {"fallback": {"model": "churn-lite", "version": "2"}}                    # a cheaper model

A fallback answer is always marked: the response parameter ``ferryman_fallback`` says which one
was used, so a caller can never mistake it for the model's own prediction.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from ferryman.errors import InvalidInput
from ferryman.tensors import DATATYPES, Signature, datatype_of

__all__ = ["FALLBACK_PARAMETER", "Fallback", "check_fallback_config", "parse_fallback"]

#: The response parameter (and, over HTTP, the ``x-ferryman-fallback`` header) that marks a fallback.
FALLBACK_PARAMETER = "ferryman_fallback"


@dataclass(frozen=True, slots=True)
class Fallback:
    """A parsed fallback: exactly one of ``outputs`` (defaults per row) or ``model``."""

    outputs: dict[str, Any] | None = None
    model: str | None = None
    version: str | None = None

    @property
    def label(self) -> str:
        """How the response marks it: ``default`` or ``model:<name>[:<version>]``."""
        if self.model is None:
            return "default"
        return f"model:{self.model}" + (f":{self.version}" if self.version else "")

    def default_outputs(
        self, signature: Signature, rows: int, wanted: list[str] | None
    ) -> tuple[dict[str, np.ndarray[Any, Any]], dict[str, str]]:
        """The default outputs broadcast to ``rows`` rows, typed as the signature declares."""
        assert self.outputs is not None
        declared = {spec.name: spec for spec in signature.outputs}
        outputs: dict[str, np.ndarray[Any, Any]] = {}
        datatypes: dict[str, str] = {}
        for name, value in self.outputs.items():
            if wanted is not None and name not in wanted:
                continue
            spec = declared.get(name)
            datatype = spec.datatype if spec is not None and spec.datatype != "BF16" else None
            row = np.asarray(value, dtype=DATATYPES[datatype] if datatype else None)
            outputs[name] = np.broadcast_to(row, (rows, *row.shape)).copy()
            datatypes[name] = datatype or datatype_of(outputs[name])
        return outputs, datatypes


def parse_fallback(runtime_config: dict[str, Any]) -> Fallback | None:
    """The version's fallback, or None; raises InvalidInput naming the bad field."""
    raw = runtime_config.get("fallback")
    if raw is None:
        return None
    if not isinstance(raw, dict) or set(raw) - {"outputs", "model", "version"}:
        raise InvalidInput("runtime_config.fallback must be an object with 'outputs', or 'model' (and 'version')")
    if ("outputs" in raw) == ("model" in raw):
        raise InvalidInput("runtime_config.fallback needs exactly one of 'outputs' or 'model'")
    if "outputs" in raw:
        outputs = raw["outputs"]
        if not isinstance(outputs, dict) or not outputs or not all(isinstance(k, str) for k in outputs):
            raise InvalidInput("runtime_config.fallback.outputs must map output names to default values")
        for name, value in outputs.items():
            try:
                np.asarray(value, dtype=float if not isinstance(value, str) else None)
            except (TypeError, ValueError):
                raise InvalidInput(
                    f"runtime_config.fallback.outputs.{name} is not a number or list of numbers"
                ) from None
        return Fallback(outputs=dict(outputs))
    model, version = raw["model"], raw.get("version")
    if not isinstance(model, str) or not model:
        raise InvalidInput("runtime_config.fallback.model must be a model name")
    if version is not None and not isinstance(version, str | int):
        raise InvalidInput("runtime_config.fallback.version must be a version number or alias")
    return Fallback(model=model, version=None if version is None else str(version))


def check_fallback_config(runtime_config: dict[str, Any]) -> None:
    """Refuse a version whose ``runtime_config.fallback`` is malformed (run at push time)."""
    parse_fallback(runtime_config)
