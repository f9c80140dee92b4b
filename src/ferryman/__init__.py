"""Ferryman: a fast, full-featured model server speaking the Open Inference Protocol (V2)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ferryman.errors import (
    Conflict,
    FerrymanError,
    InvalidInput,
    ModelFailed,
    NotFound,
    NotReady,
)
from ferryman.model import Model
from ferryman.tensors import Signature, TensorSpec

if TYPE_CHECKING:
    from ferryman.client import Client, InferResult

__version__ = "0.1.0"

__all__ = [
    "Client",
    "Conflict",
    "FerrymanError",
    "InferResult",
    "InvalidInput",
    "Model",
    "ModelFailed",
    "NotFound",
    "NotReady",
    "Signature",
    "TensorSpec",
    "__version__",
]


def __getattr__(name: str) -> Any:
    # The client pulls in httpx; import it only when asked for so the server stays lean.
    if name in ("Client", "InferResult"):
        from ferryman import client

        return getattr(client, name)
    raise AttributeError(f"module 'ferryman' has no attribute {name!r}")
