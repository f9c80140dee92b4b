"""Where payload records go: serialisation with redactions, the files of a version, rotation and retention.

Files: ``<root>/<model>/<version>/YYYYMMDD-HHMMSS-<n>.jsonl`` (UTC; ``.parquet`` with
``format: parquet``), where root is ``<FERRYMAN_HOME>/payloads`` or the version's ``path`` (a
folder, or an fsspec URL when fsspec is installed). A file is closed when the next line would take
it past ``max_file_mb`` (a Parquet file after the row group that did), and the oldest files beyond
``max_files`` are deleted. Only the payload writer thread (``payload_log.py``) uses this module.
"""

from __future__ import annotations

import contextlib
import importlib
import os
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

import numpy as np
import orjson

from ferryman.monitoring.payload_config import REDACTED, PayloadLogConfig

__all__ = ["PayloadRecord", "PayloadSink", "iter_lines", "payload_line"]

Arrays = dict[str, np.ndarray[Any, Any]]
Key = tuple[str, int]

_NAME = re.compile(r"(\d{8}-\d{6})-(\d+)\.(jsonl|parquet)")
_OPTIONS = orjson.OPT_SERIALIZE_NUMPY | orjson.OPT_APPEND_NEWLINE


@dataclass(frozen=True, slots=True)
class PayloadRecord:
    """One logged request: what the handler hands over (arrays are not copied, and never written after)."""

    config: PayloadLogConfig
    model: str
    version: int
    request_id: str | None
    time: float
    latency_ms: float
    inputs: Arrays
    outputs: Arrays


def payload_line(record: PayloadRecord) -> dict[str, Any]:
    """The JSON object one record becomes (redactions applied; arrays left for orjson)."""
    config = record.config
    return {
        "request_id": record.request_id,
        "model": record.model,
        "version": record.version,
        "time": datetime.fromtimestamp(record.time, UTC).isoformat(timespec="milliseconds"),
        "latency_ms": round(record.latency_ms, 3),
        "inputs": {name: _redacted(name, array, config) for name, array in record.inputs.items()},
        "outputs": {name: _redacted(name, array, config) for name, array in record.outputs.items()},
    }


@dataclass(slots=True)
class PayloadSink:
    """The files of one version: the one being written, rotation and retention."""

    root: Path
    key: Key
    config: PayloadLogConfig
    files: _LocalFiles | _FsspecFiles = field(init=False)
    folder: str = field(init=False)
    handle: IO[bytes] | None = None
    writer: Any = None  # pyarrow.parquet.ParquetWriter while a Parquet file is open
    size: int = 0
    sequence: int = 0
    last_write: float = field(default_factory=time.monotonic)

    def __post_init__(self) -> None:
        base = self.config.path or str(self.root)
        self.files = _FsspecFiles() if "://" in base else _LocalFiles()
        self.folder = self.files.join(base, self.key[0], str(self.key[1]))
        self.files.makedirs(self.folder)

    def write(self, records: list[PayloadRecord]) -> None:
        """Append records to the current file, rotating when it is full; raises what the sink raises."""
        self.last_write = time.monotonic()
        if self.config.format == "parquet":
            self._write_parquet(records)
            return
        for record in records:
            line = _dumps(payload_line(record))
            if self.handle is None or (self.size and self.size + len(line) > self.config.max_file_bytes):
                self._rotate()
            assert self.handle is not None
            self.handle.write(line)
            self.size += len(line)
        if self.handle is not None:
            self.handle.flush()

    def _write_parquet(self, records: list[PayloadRecord]) -> None:
        pa, pq = _optional("pyarrow"), _optional("pyarrow.parquet")
        rows = []
        for record in records:
            line = payload_line(record)
            line["inputs"] = _dumps(line["inputs"]).decode().rstrip("\n")
            line["outputs"] = _dumps(line["outputs"]).decode().rstrip("\n")
            rows.append(line)
        table = pa.Table.from_pylist(rows, schema=_parquet_schema())
        if self.writer is None or self.size >= self.config.max_file_bytes:
            self._rotate()
            assert self.handle is not None
            self.writer = pq.ParquetWriter(self.handle, table.schema)
        assert self.handle is not None
        self.writer.write_table(table)
        self.size = self.handle.tell()

    def _rotate(self) -> None:
        self.close()
        suffix = "parquet" if self.config.format == "parquet" else "jsonl"
        stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime())
        while True:
            self.sequence += 1
            try:
                self.handle = self.files.create(self.files.join(self.folder, f"{stamp}-{self.sequence}.{suffix}"))
                break
            except FileExistsError:  # another process of this server logs the same version
                continue
        self.size = 0
        self._retain()

    def _retain(self) -> None:
        found = []
        for name in self.files.names(self.folder):
            match = _NAME.fullmatch(name)
            if match is not None:
                found.append(((match.group(1), int(match.group(2))), name))
        found.sort()
        for _, name in found[: max(0, len(found) - self.config.max_files)]:
            self.files.remove(self.files.join(self.folder, name))

    def close(self) -> None:
        """Close the current file (a Parquet file gets its footer)."""
        if self.writer is not None:
            self.writer.close()
            self.writer = None
        if self.handle is not None:
            self.handle.close()
            self.handle = None


class _LocalFiles:
    """A local folder, with the few operations a sink needs."""

    def join(self, *parts: str) -> str:
        return os.path.join(*parts)

    def makedirs(self, path: str) -> None:
        os.makedirs(path, exist_ok=True)

    def create(self, path: str) -> IO[bytes]:
        return open(path, "xb")

    def names(self, folder: str) -> list[str]:
        return os.listdir(folder)

    def remove(self, path: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            os.remove(path)


class _FsspecFiles:
    """An fsspec URL (object stores: no exclusive create, so an existing name is checked first)."""

    def __init__(self) -> None:
        self._fsspec = _optional("fsspec.core")

    def join(self, *parts: str) -> str:
        return "/".join(part.rstrip("/") for part in parts)

    def makedirs(self, path: str) -> None:
        fs, target = self._fsspec.url_to_fs(path)
        fs.makedirs(target, exist_ok=True)

    def create(self, path: str) -> IO[bytes]:
        fs, target = self._fsspec.url_to_fs(path)
        if fs.exists(target):
            raise FileExistsError(path)
        handle: IO[bytes] = fs.open(target, "wb")
        return handle

    def names(self, folder: str) -> list[str]:
        fs, target = self._fsspec.url_to_fs(folder)
        return [str(p).rstrip("/").rsplit("/", 1)[-1] for p in fs.ls(target, detail=False)]

    def remove(self, path: str) -> None:
        fs, target = self._fsspec.url_to_fs(path)
        if fs.exists(target):
            fs.rm(target)


def _redacted(name: str, array: np.ndarray[Any, Any], config: PayloadLogConfig) -> Any:
    if name in config.redact_tensors:
        return REDACTED
    columns = dict(config.redact_columns).get(name) if config.redact_columns else None
    if columns and array.ndim >= 2:
        hidden = array.astype(object)
        flat = hidden.reshape(hidden.shape[0], -1)  # a view: writing it writes ``hidden``
        for column in columns:
            if column < flat.shape[1]:
                flat[:, column] = REDACTED
        return hidden
    return array


def _default(value: Any) -> Any:
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"cannot log a {type(value).__name__}")


def _dumps(value: Any) -> bytes:
    try:
        return orjson.dumps(value, default=_default, option=_OPTIONS)
    except orjson.JSONEncodeError:  # arrays orjson does not take natively (non-contiguous, float16, …)
        return orjson.dumps(_as_lists(value), default=_default, option=_OPTIONS)


def _as_lists(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _as_lists(v) for k, v in value.items()}
    if isinstance(value, np.ndarray):
        return value.tolist()
    return value


def _optional(module: str) -> Any:
    """An optional dependency (pyarrow, fsspec), imported when a version's config asks for it."""
    return importlib.import_module(module)


def _parquet_schema() -> Any:
    pa = _optional("pyarrow")
    return pa.schema(
        [
            ("request_id", pa.string()),
            ("model", pa.string()),
            ("version", pa.int64()),
            ("time", pa.string()),
            ("latency_ms", pa.float64()),
            ("inputs", pa.string()),
            ("outputs", pa.string()),
        ]
    )


def iter_lines(path: Path) -> Iterator[dict[str, Any]]:
    """The records of one JSONL payload file (for tools and tests)."""
    with path.open("rb") as handle:
        for line in handle:
            if line.strip():
                yield orjson.loads(line)
