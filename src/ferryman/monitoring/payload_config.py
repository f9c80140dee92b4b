"""The ``payload_log`` block of a version's runtime config: what to log, where, and what to hide.

```json
{"payload_log": {"sample_rate": 0.1, "redact": ["ssn", "input[3]"], "path": "s3://bucket/payloads",
                 "format": "jsonl", "max_file_mb": 64, "max_files": 100}}
```

Checked when a version is pushed (``app.py`` runs :func:`check_payload_log_config`), so a
version with a block the server could not honour never enters the registry.
"""

from __future__ import annotations

import importlib.util
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from ferryman.errors import InvalidInput

__all__ = ["REDACTED", "PayloadLogConfig", "check_payload_log_config", "parse_payload_log"]

#: What a redacted value is replaced with.
REDACTED = "[redacted]"

_FIELDS = ("sample_rate", "redact", "path", "format", "max_file_mb", "max_files")
#: ``name`` (a whole tensor) or ``name[i]`` (column ``i`` of each row of a tensor).
_REDACT = re.compile(r"([^\[\]]{1,200})(?:\[(\d{1,6})\])?")
_PREFIX = "runtime_config.payload_log"


@dataclass(frozen=True, slots=True)
class PayloadLogConfig:
    """One version's payload logging: the share of requests logged, redactions, sink and rotation."""

    sample_rate: float = 1.0
    #: Tensor names whose whole value is replaced.
    redact_tensors: frozenset[str] = frozenset()
    #: Columns replaced per tensor: ``(("input", (3,)),)`` for ``input[3]`` (a tuple: configs are hashable).
    redact_columns: tuple[tuple[str, tuple[int, ...]], ...] = ()
    #: Root folder or fsspec URL; None = ``<FERRYMAN_HOME>/payloads``.
    path: str | None = None
    format: Literal["jsonl", "parquet"] = "jsonl"
    max_file_bytes: int = 64 << 20
    max_files: int = 100


def check_payload_log_config(runtime_config: dict[str, Any]) -> None:
    """Refuse a malformed ``payload_log`` block (InvalidInput naming the field); absent is fine."""
    parse_payload_log(runtime_config)


def parse_payload_log(runtime_config: Mapping[str, Any]) -> PayloadLogConfig | None:
    """The version's payload-log settings, or None when it does not log payloads."""
    block = runtime_config.get("payload_log")
    if block is None or block is False:
        return None
    if block is True:
        return PayloadLogConfig()
    if not isinstance(block, dict):
        raise InvalidInput(f"{_PREFIX}: expected an object (or true), got {type(block).__name__}")
    unknown = sorted(set(block) - set(_FIELDS))
    if unknown:
        raise InvalidInput(f"{_PREFIX}.{unknown[0]}: unknown field (fields: {', '.join(_FIELDS)})")
    rate = block.get("sample_rate", 1.0)
    if isinstance(rate, bool) or not isinstance(rate, int | float) or not 0 < rate <= 1:
        raise InvalidInput(f"{_PREFIX}.sample_rate: expected a number above 0 and at most 1, got {rate!r}")
    tensors, columns = _redactions(block.get("redact", []))
    path = block.get("path")
    if path is not None:
        if not isinstance(path, str) or not path.strip():
            raise InvalidInput(f"{_PREFIX}.path: expected a folder or an fsspec URL, got {path!r}")
        if "://" in path and not path.startswith("file://") and importlib.util.find_spec("fsspec") is None:
            raise InvalidInput(f"{_PREFIX}.path: {path!r} is a URL, which needs fsspec (pip install fsspec)")
    fmt = block.get("format", "jsonl")
    if fmt not in ("jsonl", "parquet"):
        raise InvalidInput(f"{_PREFIX}.format: expected 'jsonl' or 'parquet', got {fmt!r}")
    if fmt == "parquet" and importlib.util.find_spec("pyarrow") is None:
        raise InvalidInput(f"{_PREFIX}.format: parquet needs pyarrow (pip install pyarrow)")
    size = block.get("max_file_mb", 64)
    if isinstance(size, bool) or not isinstance(size, int | float) or not math.isfinite(size) or size <= 0:
        raise InvalidInput(f"{_PREFIX}.max_file_mb: expected a positive number of MiB, got {size!r}")
    count = block.get("max_files", 100)
    if isinstance(count, bool) or not isinstance(count, int) or not 1 <= count <= 100_000:
        raise InvalidInput(f"{_PREFIX}.max_files: expected an integer from 1 to 100000, got {count!r}")
    return PayloadLogConfig(
        sample_rate=float(rate),
        redact_tensors=tensors,
        redact_columns=tuple(sorted(columns.items())),
        path=path.removeprefix("file://") if isinstance(path, str) else None,
        format=fmt,
        max_file_bytes=max(1, int(size * 2**20)),
        max_files=count,
    )


def _redactions(value: Any) -> tuple[frozenset[str], dict[str, tuple[int, ...]]]:
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise InvalidInput(f'{_PREFIX}.redact: expected a list of names like "ssn" or "input[3]", got {value!r}')
    tensors: set[str] = set()
    columns: dict[str, set[int]] = {}
    for index, item in enumerate(value):
        match = _REDACT.fullmatch(item)
        if match is None:
            raise InvalidInput(f'{_PREFIX}.redact[{index}]: expected a name like "ssn" or "input[3]", got {item!r}')
        name, column = match.group(1), match.group(2)
        if column is None:
            tensors.add(name)
        else:
            columns.setdefault(name, set()).add(int(column))
    return frozenset(tensors), {name: tuple(sorted(cols)) for name, cols in columns.items()}
