"""The public base class for custom Python models."""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from ferryman.tensors import TensorSpec

__all__ = ["Model"]


class Model:
    """Subclass this to serve any Python code as a model.

    Put the subclass in ``model.py`` inside a folder (with any files it needs) and push the
    folder. Ferryman constructs it with the folder path and the version's runtime options,
    calls :meth:`load` once, then :meth:`predict` with a dict of named numpy arrays.

    Declare ``inputs`` and ``outputs`` to have requests validated against them; without
    ``inputs`` any input names are accepted, and a pushed ``--sample`` fills them in::

        class Doubler(ferryman.Model):
            inputs = [TensorSpec("x", "FP32", (-1, 4))]
            outputs = [TensorSpec("y", "FP32", (-1, 4))]

            def predict(self, inputs):
                return {"y": inputs["x"] * 2}
    """

    inputs: ClassVar[list[TensorSpec] | None] = None
    outputs: ClassVar[list[TensorSpec] | None] = None

    def __init__(self, path: Path, options: dict[str, Any] | None = None) -> None:
        self.path = path
        self.options: dict[str, Any] = dict(options or {})

    def load(self) -> None:
        """Load weights or other resources from ``self.path``; called once before predict."""

    def predict(self, inputs: dict[str, np.ndarray[Any, Any]]) -> dict[str, np.ndarray[Any, Any]]:
        """Return named output arrays for the named input arrays."""
        raise NotImplementedError(f"{type(self).__name__}.predict is not implemented")

    def unload(self) -> None:
        """Release resources; called before the version is dropped from memory."""
