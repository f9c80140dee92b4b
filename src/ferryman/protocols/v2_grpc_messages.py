"""The V2 gRPC message classes, compiled from the shipped ``v2_grpc_service.proto`` on first use.

``protoc`` (from ``grpcio-tools``) turns the .proto into a descriptor set once per process (a few
tens of milliseconds); the descriptors go into a *private* descriptor pool, so the ``inference.*``
names never clash with another copy of the same protocol in the process (``tritonclient.grpc``
registers its own in the default pool). Why compile instead of importing generated stubs:
``docs/architecture.md`` ("gRPC").
"""

from __future__ import annotations

import importlib.resources
import tempfile
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

from ferryman.errors import RuntimeUnavailable

__all__ = ["PROTO_FILE", "SERVICE", "V2Messages", "v2_messages"]

#: The protocol's .proto, shipped with the package.
PROTO_FILE = "v2_grpc_service.proto"
#: The fully qualified service name clients call.
SERVICE = "inference.GRPCInferenceService"


@dataclass(frozen=True, slots=True)
class V2Messages:
    """The message classes of ``inference.GRPCInferenceService`` (protobuf classes, untyped to mypy)."""

    ServerLiveRequest: Any
    ServerLiveResponse: Any
    ServerReadyRequest: Any
    ServerReadyResponse: Any
    ModelReadyRequest: Any
    ModelReadyResponse: Any
    ServerMetadataRequest: Any
    ServerMetadataResponse: Any
    ModelMetadataRequest: Any
    ModelMetadataResponse: Any
    ModelInferRequest: Any
    ModelInferResponse: Any
    InferParameter: Any
    InferTensorContents: Any


def _descriptor_set(proto_dir: Path) -> bytes:
    try:
        from grpc_tools import protoc
    except ImportError:
        raise RuntimeUnavailable("gRPC needs the 'grpc' extra: pip install 'ferryman[grpc]'") from None
    include = str(importlib.resources.files("grpc_tools") / "_proto")
    with tempfile.TemporaryDirectory(prefix="ferryman-proto-") as scratch:
        out = Path(scratch) / "v2.binpb"
        code = protoc.main(["protoc", f"-I{proto_dir}", f"-I{include}", f"--descriptor_set_out={out}", PROTO_FILE])
        if code != 0:
            raise RuntimeError(f"protoc failed ({code}) on {proto_dir / PROTO_FILE}")
        return out.read_bytes()


@cache
def v2_messages() -> V2Messages:
    """Compile the V2 protocol (once per process) and return its message classes."""
    with importlib.resources.as_file(importlib.resources.files("ferryman.protocols") / PROTO_FILE) as path:
        data = _descriptor_set(path.parent)
    pool = descriptor_pool.DescriptorPool()
    for file in descriptor_pb2.FileDescriptorSet.FromString(data).file:
        pool.Add(file)

    def message(name: str) -> Any:
        return message_factory.GetMessageClass(pool.FindMessageTypeByName(f"inference.{name}"))

    return V2Messages(**{field: message(field) for field in V2Messages.__dataclass_fields__})
