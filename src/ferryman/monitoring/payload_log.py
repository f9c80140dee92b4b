"""Payload logging: sampled requests and answers written to rotating files, never in a request's way.

The event loop appends a record (request id, version, time, latency and references to the input
and output arrays) to a bounded ``deque``; when ``queue_records`` records or ``queue_bytes``
bytes of arrays wait, the record is dropped and counted (``ferryman_payload_records_total
{result="dropped"}``). One writer thread drains the queue: it redacts, serialises (orjson, numpy
arrays natively) and appends to the version's current file, so a slow disk or object store only
ever costs dropped records. A write that fails is counted as ``failed`` and the file reopened.

Files and rotation: ``payload_sink.py``. JSONL is flushed after every round of the writer; a
Parquet file can only be read once closed (rotation, 30 s without records, or shutdown).
"""

from __future__ import annotations

import collections
import logging
import time
from dataclasses import dataclass
from pathlib import Path

from ferryman.monitoring.background import BackgroundWorker
from ferryman.monitoring.payload_config import PayloadLogConfig
from ferryman.monitoring.payload_sink import PayloadRecord, PayloadSink, iter_lines, payload_line

__all__ = ["PayloadLogger", "PayloadRecord", "iter_lines", "payload_line"]

logger = logging.getLogger(__name__)

Key = tuple[str, int]

_IDLE_CLOSE_S = 30.0


@dataclass(slots=True)
class _Counts:
    written: int = 0
    failed: int = 0


class PayloadLogger(BackgroundWorker):
    """The bounded queue of payload records and the thread that writes them."""

    def __init__(
        self, root: Path, *, queue_records: int = 4096, queue_bytes: int = 64 << 20, poll_seconds: float = 0.1
    ) -> None:
        super().__init__("ferryman-payload-log", close_timeout=10.0)
        self.root = root
        self._queue: collections.deque[tuple[PayloadRecord, int]] = collections.deque()
        self._max_records = queue_records
        self._max_bytes = queue_bytes
        self._poll_s = poll_seconds
        self._bytes_in = 0  # producer only
        self._bytes_out = 0  # writer only
        #: Records dropped because the queue was full, per version (producer only).
        self.dropped: dict[Key, int] = {}
        self._counts: dict[Key, _Counts] = {}
        self._sinks: dict[tuple[Key, PayloadLogConfig], PayloadSink] = {}

    def submit(self, record: PayloadRecord) -> None:
        """Queue a record; drops and counts it when the queue is full. Never raises, never blocks."""
        size = 0
        for array in record.inputs.values():
            size += array.nbytes
        for array in record.outputs.values():
            size += array.nbytes
        if len(self._queue) >= self._max_records or self._bytes_in - self._bytes_out + size > self._max_bytes:
            key = (record.model, record.version)
            self.dropped[key] = self.dropped.get(key, 0) + 1
            return
        self._bytes_in += size
        self._enqueued += 1
        self._queue.append((record, size))

    @property
    def queued(self) -> int:
        """Records waiting for the writer."""
        return len(self._queue)

    def counts(self) -> list[tuple[str, int, int, int, int]]:
        """``(model, version, written, dropped, failed)`` per version that logged or dropped a record."""
        keys = [*self._counts, *(k for k in list(self.dropped) if k not in self._counts)]
        out = []
        for key in keys:
            counts = self._counts.get(key) or _Counts()
            out.append((key[0], key[1], counts.written, self.dropped.get(key, 0), counts.failed))
        return out

    def _run(self) -> None:
        while True:
            stopping = self._stopping
            self._wake.wait(self._poll_s)
            self._wake.clear()
            try:
                self._drain()
                self._close_idle(0.0 if stopping else _IDLE_CLOSE_S)
            except Exception:  # the writer must outlive any bug in one round
                logger.exception("payload logging round failed")
            if stopping:
                return

    def _drain(self) -> None:
        while self._queue:
            batch = [self._queue.popleft() for _ in range(min(len(self._queue), 512))]
            groups: dict[tuple[Key, PayloadLogConfig], list[PayloadRecord]] = {}
            for record, _ in batch:
                groups.setdefault(((record.model, record.version), record.config), []).append(record)
            for (key, config), records in groups.items():
                counts = self._counts.setdefault(key, _Counts())
                try:
                    sink = self._sinks.get((key, config))
                    if sink is None:
                        sink = self._sinks[(key, config)] = PayloadSink(self.root, key, config)
                    sink.write(records)
                    counts.written += len(records)
                except Exception as exc:
                    counts.failed += len(records)
                    self._sinks.pop((key, config), None)
                    logger.warning("payload log of %s version %s: %d records not written: %s", *key, len(records), exc)
            with self._progress:
                self._done += len(batch)
                self._bytes_out += sum(size for _, size in batch)
                self._progress.notify_all()

    def _close_idle(self, idle_s: float) -> None:
        now = time.monotonic()
        for key, sink in list(self._sinks.items()):
            if now - sink.last_write >= idle_s:
                try:
                    sink.close()
                except Exception as exc:
                    logger.warning("payload log of %s version %s: closing failed: %s", *key[0], exc)
                del self._sinks[key]
