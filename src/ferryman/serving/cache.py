"""Response cache (opt-in per version): identical requests get the stored answer without running the model.

A version's ``runtime_config`` turns it on with ``cache: true`` (server defaults for the limits)
or ``cache: {"max_entries": N, "max_mb": M}``. The key is a hash of model, version, the requested
outputs and every input's name, datatype, shape and bytes (BYTES tensors element by element), so
two requests share an entry only when the model would see the same arrays. Entries are evicted
least-recently-used past either limit. The cache belongs to one loaded version: unloading the
version drops it, so a reloaded or replaced version never answers from an older one's entries.

Used on the event loop only (the handler's thread), so it takes no locks.
"""

from __future__ import annotations

import collections
import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ferryman.errors import InvalidInput

__all__ = ["CacheLimits", "CachedResponse", "ResponseCache", "cache_for", "check_cache_config"]

Arrays = dict[str, np.ndarray[Any, Any]]


@dataclass(frozen=True, slots=True)
class CacheLimits:
    """How much one version's cache may hold: entries and bytes of stored outputs."""

    max_entries: int = 1024
    max_bytes: int = 64 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class CachedResponse:
    """The stored parts of an inference response: outputs (read-only arrays) and their V2 datatypes."""

    outputs: Arrays
    datatypes: dict[str, str]
    nbytes: int


class ResponseCache:
    """An LRU map from request hash to response, with ``hits``, ``misses`` and ``evictions`` counters."""

    def __init__(self, limits: CacheLimits) -> None:
        self.limits = limits
        self._entries: collections.OrderedDict[bytes, CachedResponse] = collections.OrderedDict()
        self._bytes = 0
        self.hits = 0
        self.misses = 0
        self.evictions = 0

    @staticmethod
    def key(model: str, version: int, inputs: Arrays, requested_outputs: Sequence[str] | None) -> bytes:
        """A 32-byte hash of everything that decides the response (inputs after validation)."""
        digest = hashlib.blake2b(digest_size=32)
        digest.update(f"{model}\0{version}\0".encode())
        if requested_outputs is not None:
            # Order matters: the response lists outputs in the order they were asked for.
            digest.update(b"outputs\0" + "\0".join(requested_outputs).encode() + b"\0")
        for name in sorted(inputs):
            array = inputs[name]
            digest.update(f"{name}\0{array.dtype.str}\0{array.shape}\0".encode())
            if array.dtype.kind == "O":
                for item in array.reshape(-1):
                    data = item if isinstance(item, bytes) else str(item).encode()
                    # Type and length before the bytes: b"1" vs "1" vs 1, and ["ab", "c"] vs ["a", "bc"], differ.
                    digest.update(f"{type(item).__name__}:{len(data)}:".encode())
                    digest.update(data)
            else:
                digest.update(np.ascontiguousarray(array).data)
        return digest.digest()

    def get(self, key: bytes) -> CachedResponse | None:
        """The stored response for ``key`` (now most recently used), counting a hit or a miss."""
        entry = self._entries.get(key)
        if entry is None:
            self.misses += 1
            return None
        self._entries.move_to_end(key)
        self.hits += 1
        return entry

    def put(self, key: bytes, outputs: Arrays, datatypes: dict[str, str]) -> None:
        """Store a response; entries larger than the byte limit are not kept."""
        # Copies: the arrays may be views into a whole batch's results, which must not be kept alive.
        stored: Arrays = {}
        for name, array in outputs.items():
            copy = np.array(array, copy=True)
            copy.flags.writeable = False
            stored[name] = copy
        nbytes = sum(_nbytes(array) for array in stored.values())
        if nbytes > self.limits.max_bytes:
            return
        previous = self._entries.pop(key, None)
        if previous is not None:
            self._bytes -= previous.nbytes
        self._entries[key] = CachedResponse(stored, dict(datatypes), nbytes)
        self._bytes += nbytes
        while len(self._entries) > self.limits.max_entries or self._bytes > self.limits.max_bytes:
            _, evicted = self._entries.popitem(last=False)
            self._bytes -= evicted.nbytes
            self.evictions += 1

    def clear(self) -> None:
        """Drop every entry (the counters stay)."""
        self._entries.clear()
        self._bytes = 0

    @property
    def entries(self) -> int:
        """Responses stored now."""
        return len(self._entries)

    @property
    def nbytes(self) -> int:
        """Bytes of output data stored now."""
        return self._bytes


def _nbytes(array: np.ndarray[Any, Any]) -> int:
    if array.dtype.kind == "O":
        return int(sum(len(item) if isinstance(item, bytes | str) else 64 for item in array.reshape(-1)))
    return int(array.nbytes)


def check_cache_config(runtime_config: dict[str, Any]) -> None:
    """Refuse a version whose ``runtime_config.cache`` is malformed (run at push time)."""
    _limits(runtime_config.get("cache", False), CacheLimits())


def cache_for(runtime_config: dict[str, Any], defaults: CacheLimits) -> ResponseCache | None:
    """A response cache for a version whose runtime config asks for one, else None (the default)."""
    limits = _limits(runtime_config.get("cache", False), defaults)
    return ResponseCache(limits) if limits is not None else None


def _limits(raw: Any, defaults: CacheLimits) -> CacheLimits | None:
    if raw is None or raw is False:
        return None
    if raw is True:
        return defaults
    if not isinstance(raw, dict):
        raise InvalidInput('runtime_config.cache must be true, false or an object like {"max_entries": 1000}')
    unknown = set(raw) - {"enabled", "max_entries", "max_mb"}
    if unknown:
        raise InvalidInput(f"cache: unknown keys {', '.join(sorted(unknown))}; expected enabled, max_entries, max_mb")
    enabled = raw.get("enabled", True)
    if not isinstance(enabled, bool):
        raise InvalidInput("cache.enabled must be true or false")
    entries = raw.get("max_entries", defaults.max_entries)
    if not isinstance(entries, int) or isinstance(entries, bool) or entries < 1:
        raise InvalidInput("cache.max_entries must be a positive integer")
    megabytes = raw.get("max_mb", defaults.max_bytes / 2**20)
    if not isinstance(megabytes, int | float) or isinstance(megabytes, bool) or megabytes <= 0:
        raise InvalidInput("cache.max_mb must be a positive number")
    return CacheLimits(max_entries=entries, max_bytes=int(megabytes * 2**20)) if enabled else None
