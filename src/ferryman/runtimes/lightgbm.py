"""LightGBM native models (``Booster.save_model`` text files).

Signature: input ``input`` (FP64, ``[-1, num_feature]``, NaN allowed: LightGBM treats it as
missing) and output ``predict`` (FP64, ``[-1]`` or ``[-1, k]`` for multi-class).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

import lightgbm
import numpy as np

from ferryman.runtimes.base import RuntimeConfig
from ferryman.tensors import Signature, TensorSpec

__all__ = ["LightGBMRuntime"]


class LightGBMRuntime:
    """Serves a LightGBM Booster."""

    framework: ClassVar[str] = "lightgbm"

    def __init__(self) -> None:
        self._booster: lightgbm.Booster | None = None
        self._signature = Signature(inputs=(), outputs=())
        self._params: dict[str, Any] = {}

    def load(self, path: Path, config: RuntimeConfig) -> None:
        """Read the booster and probe one all-zero row for the output shape."""
        booster = lightgbm.Booster(model_file=str(path))
        # A booster read from a file ignores constructor params; threads go to each predict.
        self._params = {"num_threads": config.threads} if config.threads else {}
        n_features = booster.num_feature()
        probe = np.asarray(booster.predict(np.zeros((1, n_features)), **self._params))
        self._signature = Signature(
            inputs=(TensorSpec("input", "FP64", (-1, n_features), allow_nan=True),),
            outputs=(TensorSpec("predict", "FP64", (-1, *probe.shape[1:])),),
        )
        self._booster = booster

    def signature(self) -> Signature:
        """Return the one input and the one output."""
        return self._signature

    def predict(self, inputs: dict[str, np.ndarray[Any, Any]]) -> dict[str, np.ndarray[Any, Any]]:
        """Predict ``inputs["input"]``; NaN marks a missing value."""
        if self._booster is None:
            raise RuntimeError("the LightGBM model is not loaded")
        result = np.asarray(self._booster.predict(inputs["input"], **self._params))
        return {"predict": result if result.dtype == np.float64 else result.astype(np.float64)}

    def unload(self) -> None:
        """Drop the booster."""
        self._booster = None
