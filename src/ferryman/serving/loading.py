"""The blocking steps of bringing one version into memory, and of dropping it.

:func:`locate_artifact` verifies the artifact (sha256) and sizes it; :func:`start_runtime` loads
the runtime, warms it up and measures what the process gained; :func:`discard_runtime` unloads
it and gives the memory back. The manager runs each in its I/O executor, never on the event loop.

**Warm-up**: one prediction on a synthetic batch before a version is marked loaded. The first
call into a model often pays for lazy initialisation (kernel selection, thread pools, caches);
warming up moves that cost to load time, and a model that cannot predict at all fails its load
("warm-up failed: ...") instead of its first request. The registry stores no sample yet, so the
batch is built from the signature: one zero-filled row per input. Versions whose inputs cannot be
synthesised (no declared inputs, BYTES, or variable trailing dimensions) are not warmed up.
``runtime_config["warmup"] = false`` turns it off for a version.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from ferryman.errors import InvalidInput, ModelFailed
from ferryman.registry.artifacts import ArtifactStore
from ferryman.runtimes import load_runtime
from ferryman.runtimes.base import Runtime, RuntimeConfig
from ferryman.security.artifact_policy import ArtifactPolicy
from ferryman.serving.catalog import CatalogVersion
from ferryman.serving.memory import MemorySnapshot, artifact_bytes, release_memory
from ferryman.serving.workers import ProcessPoolRuntime
from ferryman.tensors import DATATYPES, Signature

__all__ = [
    "check_warmup_config",
    "discard_runtime",
    "locate_artifact",
    "start_runtime",
    "warm_up",
    "warmup_inputs",
]


def locate_artifact(
    entry: CatalogVersion, artifacts: ArtifactStore, policy: ArtifactPolicy | None = None
) -> tuple[Path, int]:
    """The verified, loadable path of a version's artifact and its size on disk.

    Right after the sha256 check, ``policy`` checks the version's signature and format
    (``require_signed_models``, ``allow_pickle``) before any runtime reads the artifact.
    """
    if entry.path is not None:
        path = entry.path
    else:
        assert entry.filename is not None  # registry versions always carry their blob name
        path = artifacts.materialize(entry.sha256, entry.filename)
    if policy is not None:
        policy.check_signature(entry.sha256, entry.record.artifact_signature if entry.record else None)
        policy.check_format(path)
    return path, artifact_bytes(path)


def start_runtime(entry: CatalogVersion, path: Path, threads: int | None) -> tuple[Runtime, Signature, int]:
    """Load and warm up the version's runtime; also returns the bytes the process gained meanwhile."""
    before = MemorySnapshot.take()
    config = RuntimeConfig(options=dict(entry.runtime_config), threads=threads)
    processes = entry.runtime_config.get("process_workers")
    runtime: Runtime
    if processes:
        pool = ProcessPoolRuntime(int(processes))
        pool.load(path, config, entry.framework)
        runtime = pool
    else:
        runtime = load_runtime(path, entry.framework, config)
    try:
        signature = entry.signature or runtime.signature()
        warm_up(runtime, signature, entry.runtime_config)
    except BaseException:
        discard_runtime(runtime)
        raise
    return runtime, signature, MemorySnapshot.take().growth_since(before)


def discard_runtime(runtime: Runtime) -> None:
    """Unload a runtime and return its memory to the OS."""
    try:
        runtime.unload()
    finally:
        release_memory()


def warmup_inputs(signature: Signature) -> dict[str, np.ndarray[Any, Any]] | None:
    """A one-row, zero-filled batch for every declared input, or None when one cannot be built."""
    if not signature.inputs:
        return None
    arrays: dict[str, np.ndarray[Any, Any]] = {}
    for spec in signature.inputs:
        if spec.datatype == "BYTES" or spec.datatype not in DATATYPES or any(d < 0 for d in spec.shape[1:]):
            return None
        shape = tuple(1 if d < 0 else d for d in spec.shape[:1]) + spec.shape[1:]
        arrays[spec.name] = np.zeros(shape, dtype=DATATYPES[spec.datatype])
    return arrays


def check_warmup_config(runtime_config: dict[str, Any]) -> None:
    """Refuse a version whose ``runtime_config.warmup`` is not a boolean (run at push time)."""
    if not isinstance(runtime_config.get("warmup", True), bool):
        raise InvalidInput("runtime_config.warmup must be true or false")


def warm_up(runtime: Runtime, signature: Signature, runtime_config: dict[str, Any]) -> bool:
    """Run one prediction (blocking); True when it ran, False when skipped.

    Raises :class:`ModelFailed` starting "warm-up failed:" when the model raises or returns
    something other than a dict of arrays.
    """
    if runtime_config.get("warmup", True) is False:
        return False
    inputs = warmup_inputs(signature)
    if inputs is None:
        return False
    try:
        results = runtime.predict(inputs)
    except Exception as exc:
        raise ModelFailed(f"warm-up failed: {type(exc).__name__}: {exc}") from exc
    if not isinstance(results, dict):
        raise ModelFailed(f"warm-up failed: predict returned {type(results).__name__}, expected a dict of arrays")
    return True
