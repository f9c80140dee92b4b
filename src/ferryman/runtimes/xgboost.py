"""XGBoost native models (``Booster.save_model`` to ``.json`` or ``.ubj``).

Signature: input ``input`` (FP32, ``[-1, num_features]``, NaN allowed: XGBoost treats it as
missing) and output ``predict`` (FP32, ``[-1]`` or ``[-1, k]`` for multi-class
probabilities and multi-target models).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import xgboost

from ferryman.runtimes.base import RuntimeConfig
from ferryman.tensors import Signature, TensorSpec

__all__ = ["XGBoostRuntime"]


class XGBoostRuntime:
    """Serves an XGBoost Booster with lock-free ``inplace_predict``."""

    framework: ClassVar[str] = "xgboost"

    def __init__(self) -> None:
        self._booster: xgboost.Booster | None = None
        self._signature = Signature(inputs=(), outputs=())

    def load(self, path: Path, config: RuntimeConfig) -> None:
        """Read the booster and probe one all-zero row for the output shape."""
        booster = xgboost.Booster(model_file=str(path))
        if config.threads:
            booster.set_param({"nthread": config.threads})
        n_features = booster.num_features()
        probe = np.asarray(booster.inplace_predict(np.zeros((1, n_features), dtype=np.float32)))
        self._signature = Signature(
            inputs=(TensorSpec("input", "FP32", (-1, n_features), allow_nan=True),),
            outputs=(TensorSpec("predict", "FP32", (-1, *probe.shape[1:])),),
        )
        self._booster = booster

    def signature(self) -> Signature:
        """Return the one input and the one output."""
        return self._signature

    def predict(self, inputs: dict[str, np.ndarray[Any, Any]]) -> dict[str, np.ndarray[Any, Any]]:
        """Predict ``inputs["input"]``; NaN marks a missing value."""
        if self._booster is None:
            raise RuntimeError("the XGBoost model is not loaded")
        features = inputs["input"]
        if features.dtype != np.float32:
            features = features.astype(np.float32)
        result = np.asarray(self._booster.inplace_predict(features))
        return {"predict": result if result.dtype == np.float32 else result.astype(np.float32)}

    def unload(self) -> None:
        """Drop the booster."""
        self._booster = None
