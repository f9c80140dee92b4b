"""The runtime contract every framework adapter implements."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Protocol, runtime_checkable

import numpy as np

from ferryman.tensors import Signature

__all__ = ["Runtime", "RuntimeConfig", "SelectiveRuntime", "run_predict"]


@dataclass(frozen=True, slots=True)
class RuntimeConfig:
    """Per-version runtime options (from the push metadata or a repository ``model.yaml``).

    ``options`` is framework-specific and passed through untouched (e.g. ``intra_op_threads``
    for ONNX Runtime, ``predict_proba: false`` for scikit-learn).
    """

    options: dict[str, Any] = field(default_factory=dict)
    #: Number of intra-op threads a runtime may use (None = framework default).
    threads: int | None = None


@runtime_checkable
class Runtime(Protocol):
    """Loads one model artifact and runs predictions on dicts of numpy arrays.

    ``predict`` is called from worker threads, never on the event loop; it must be safe to
    call after ``load`` and before ``unload``. Runtimes raise plain exceptions; the serving
    layer turns them into ``ModelFailed`` naming the model and version.
    """

    framework: ClassVar[str]

    def load(self, path: Path, config: RuntimeConfig) -> None:
        """Load the artifact at ``path`` (a file, or a folder for custom models)."""
        ...

    def signature(self) -> Signature:
        """Return the inputs and outputs as far as the model itself declares them."""
        ...

    def predict(self, inputs: dict[str, np.ndarray[Any, Any]]) -> dict[str, np.ndarray[Any, Any]]:
        """Run one (possibly batched) prediction."""
        ...

    def unload(self) -> None:
        """Release the model's memory."""
        ...


@runtime_checkable
class SelectiveRuntime(Protocol):
    """A runtime that can compute only some of its outputs (e.g. ``predict`` without ``predict_proba``)."""

    def predict_outputs(
        self, inputs: dict[str, np.ndarray[Any, Any]], outputs: frozenset[str]
    ) -> dict[str, np.ndarray[Any, Any]]:
        """Run a prediction computing at least the named outputs."""
        ...


def run_predict(
    runtime: Runtime, inputs: dict[str, np.ndarray[Any, Any]], outputs: frozenset[str] | None = None
) -> dict[str, np.ndarray[Any, Any]]:
    """Predict, computing only ``outputs`` when the caller named some and the runtime can skip the rest."""
    if outputs is not None and isinstance(runtime, SelectiveRuntime):
        return runtime.predict_outputs(inputs, outputs)
    return runtime.predict(inputs)
