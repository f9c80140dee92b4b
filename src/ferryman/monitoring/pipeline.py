"""Monitoring off the request path: sampled records → one bounded queue → a worker thread → per-version monitors.

The event loop only appends a record (references to the request's input arrays and the answer's
output arrays, which nobody writes after the answer) to a ``collections.deque`` — about a
microsecond, no lock, no wake-up. When the queue holds ``queue_records`` records or
``queue_bytes`` bytes of arrays, the record is dropped and counted instead: monitoring never
makes a request wait, never raises into it, and never holds more memory than that.

One worker thread polls the queue every ``poll_seconds`` and drains it in batches: records of
one version with the same tensor layout are concatenated, so the drift window and the quality
counters see one batch of hundreds of rows instead of hundreds of one-row calls (their cost is
mostly per call). A thread rather than an asyncio task because the work is numpy on small arrays
plus registry reads and writes (loading and storing profiles) and scipy tests (reports): on the
event loop all of it would take turns with requests; in a thread it needs no executor hops, and
whenever numpy or SQLite release the GIL it runs on another core.

Reports for metrics are refreshed by the worker at most every ``report_seconds`` per version
(a report costs ~5 ms); the drift endpoint computes a fresh one after :meth:`flush`.
"""

from __future__ import annotations

import collections
import logging
from collections.abc import Iterator
from typing import Any, Literal, Protocol

import numpy as np

from ferryman.errors import FerrymanError
from ferryman.monitoring.background import BackgroundWorker
from ferryman.monitoring.profile import Profile
from ferryman.monitoring.version_monitor import MonitorSettings, VersionMonitor, empty_report

__all__ = ["MonitoringPipeline", "ProfileRepository"]

logger = logging.getLogger(__name__)

Arrays = dict[str, np.ndarray[Any, Any]]
Key = tuple[str, int]
#: (model, version, inputs, outputs or None, rejected field or None, bytes held)
_Record = tuple[str, int, Arrays | None, Arrays | None, str | None, int]

#: Records taken from the queue per round of the worker.
_BATCH = 1024


class ProfileRepository(Protocol):
    """Where profiles are stored (the registry: ``registry/profiles.py``)."""

    def get_profile(self, name: str, version: int) -> tuple[dict[str, Any], Literal["sample", "traffic"]] | None:
        """The stored profile of a version and its source, or None."""
        ...

    def set_profile(
        self, name: str, version: int, profile: dict[str, Any], source: Literal["sample", "traffic"]
    ) -> bool:
        """Store a profile; False when a traffic profile lost to one already stored."""
        ...


class MonitoringPipeline(BackgroundWorker):
    """The bounded queue, its worker thread, and the monitors of the versions that served traffic."""

    def __init__(
        self,
        profiles: ProfileRepository,
        settings: MonitorSettings | None = None,
        *,
        queue_records: int = 4096,
        queue_bytes: int = 64 << 20,
        report_seconds: float = 10.0,
        poll_seconds: float = 0.05,
        max_versions: int = 1024,
    ) -> None:
        super().__init__("ferryman-monitoring", close_timeout=5.0)
        self.settings = settings or MonitorSettings()
        self._profiles = profiles
        self._queue: collections.deque[_Record] = collections.deque()
        self._max_records = queue_records
        self._max_bytes = queue_bytes
        self._report_s = report_seconds
        self._poll_s = poll_seconds
        self._max_versions = max_versions
        # Written by the producer (event loop) only:
        self._bytes_in = 0
        #: Records dropped because the queue was full.
        self.dropped = 0
        # Written by the worker only:
        self._bytes_out = 0
        self._monitors: dict[Key, VersionMonitor] = {}
        self._logged: set[Key] = set()

    # -- producer side (the event loop) ----------------------------------------------------------

    def submit(self, model: str, version: int, inputs: Arrays, outputs: Arrays) -> None:
        """Queue one answered request's arrays; drops and counts it when the queue is full. Never raises."""
        queue = self._queue
        if len(queue) >= self._max_records:
            self.dropped += 1
            return
        size = 0
        for array in inputs.values():
            size += array.nbytes
        for array in outputs.values():
            size += array.nbytes
        if self._bytes_in - self._bytes_out + size > self._max_bytes:
            self.dropped += 1
            return
        self._bytes_in += size
        self._enqueued += 1
        queue.append((model, version, inputs, outputs, None, size))

    def rejected(self, model: str, version: int, field: str) -> None:
        """Queue a schema violation in ``field`` refused for this version."""
        if len(self._queue) >= self._max_records:
            self.dropped += 1
            return
        self._enqueued += 1
        self._queue.append((model, version, None, None, field, 0))

    @property
    def queued(self) -> int:
        """Records waiting for the worker."""
        return len(self._queue)

    @property
    def queued_bytes(self) -> int:
        """Bytes of arrays the waiting records hold."""
        return self._bytes_in - self._bytes_out

    # -- reading -----------------------------------------------------------------------------------

    def monitors(self) -> list[VersionMonitor]:
        """The monitors of every version that served traffic (for metrics)."""
        return list(self._monitors.values())

    def monitor(self, model: str, version: int) -> VersionMonitor | None:
        """The monitor of one version, if it has seen traffic."""
        return self._monitors.get((model, version))

    def report(self, model: str, version: int) -> dict[str, Any]:
        """The drift endpoint's document: blocking (flushes the queue, then runs the tests)."""
        self.flush()
        monitor = self._monitors.get((model, version))
        if monitor is not None:
            return monitor.document()
        stored = self._stored(model, version)
        source = stored.source if stored is not None else None
        note = "no traffic has been monitored for this version yet"
        if stored is None:
            note += f"; its profile will be learned from its first {self.settings.profile_rows} rows"
        return {
            "model": model,
            "version": version,
            "status": "no traffic",
            "note": note,
            **empty_report(self.settings, source, None),
            "profile": {"source": source, "rows": stored.rows if stored is not None else None},
        }

    # -- the worker --------------------------------------------------------------------------------

    def _run(self) -> None:
        while not self._stopping:
            self._wake.wait(self._poll_s)
            self._wake.clear()
            try:
                self._drain()
                self._refresh_reports()
            except Exception:  # the worker must outlive any bug in one round
                logger.exception("monitoring round failed")

    def _drain(self) -> None:
        while self._queue and not self._stopping:
            batch: list[_Record] = []
            while self._queue and len(batch) < _BATCH:
                batch.append(self._queue.popleft())
            try:
                self._process(batch)
            finally:
                with self._progress:
                    self._done += len(batch)
                    self._bytes_out += sum(record[5] for record in batch)
                    self._progress.notify_all()

    def _process(self, batch: list[_Record]) -> None:
        by_version: dict[Key, list[_Record]] = {}
        for record in batch:
            by_version.setdefault((record[0], record[1]), []).append(record)
        for key, records in by_version.items():
            try:
                monitor = self._monitor_for(key)
                for field in (r[4] for r in records if r[4] is not None):
                    monitor.rejected(field)
                for inputs, outputs in _concatenated([(r[2], r[3]) for r in records if r[2] is not None]):
                    learned = monitor.observe(inputs, outputs)
                    if learned is not None:
                        self._store_learned(monitor, learned)
            except Exception:
                if key not in self._logged:  # once per version: a broken model must not flood the log
                    self._logged.add(key)
                    logger.exception("monitoring of %s version %s failed", *key)

    def _monitor_for(self, key: Key) -> VersionMonitor:
        monitor = self._monitors.get(key)
        if monitor is not None:
            return monitor
        if len(self._monitors) >= self._max_versions:
            oldest = min(self._monitors.values(), key=lambda m: m.last_seen)
            del self._monitors[(oldest.model, oldest.version)]
        monitor = self._monitors[key] = VersionMonitor(*key, self.settings, self._stored(*key))
        return monitor

    def _stored(self, model: str, version: int) -> Profile | None:
        try:
            found = self._profiles.get_profile(model, version)
            return Profile.from_dict(found[0]) if found is not None else None
        except FerrymanError:  # a repository model (not in the registry), or a profile no longer readable
            return None

    def _store_learned(self, monitor: VersionMonitor, learned: Profile) -> None:
        """Store the learned profile; when another process stored one first, use that one instead."""
        profile = learned
        try:
            if not self._profiles.set_profile(monitor.model, monitor.version, learned.to_dict(), "traffic"):
                profile = self._stored(monitor.model, monitor.version) or learned
        except FerrymanError as exc:  # a repository model: monitored with the profile kept in memory
            logger.info("profile of %s version %s kept in memory only: %s", monitor.model, monitor.version, exc)
        monitor.adopt(profile)
        logger.info("learned the reference profile of %s version %s from traffic", monitor.model, monitor.version)

    def _refresh_reports(self) -> None:
        for monitor in list(self._monitors.values()):
            if monitor.stale(self._report_s):
                monitor.refresh()


def _layout(arrays: Arrays) -> tuple[Any, ...]:
    return tuple((name, array.shape[1:], array.dtype.str) for name, array in arrays.items())


def _stack(members: list[tuple[Arrays, Arrays]]) -> tuple[Arrays, Arrays]:
    first_inputs, first_outputs = members[0]
    return (
        {name: np.concatenate([m[0][name] for m in members]) for name in first_inputs},
        {name: np.concatenate([m[1][name] for m in members]) for name in first_outputs},
    )


def _concatenated(pairs: list[tuple[Arrays | None, Arrays | None]]) -> Iterator[tuple[Arrays, Arrays]]:
    """Records stacked into as few batches as their tensors allow, in order of first appearance.

    The fast path groups by tensor names only and lets ``np.concatenate`` check the trailing
    shapes (a version's answers all have the same ones); only when that fails are the records
    grouped by their full layout (names, trailing shapes, dtypes), and scalars taken one by one.
    """
    groups: dict[tuple[Any, ...], list[tuple[Arrays, Arrays]]] = {}
    for inputs, outputs in pairs:
        if inputs is not None:
            outputs = outputs or {}
            groups.setdefault((tuple(inputs), tuple(outputs)), []).append((inputs, outputs))
    for members in groups.values():
        if len(members) == 1:
            yield members[0]
            continue
        try:
            yield _stack(members)
            continue
        except ValueError:  # different trailing shapes, or scalars
            pass
        layouts: dict[tuple[Any, ...], list[tuple[Arrays, Arrays]]] = {}
        for inputs, outputs in members:
            if any(a.ndim == 0 for a in (*inputs.values(), *outputs.values())):
                yield inputs, outputs  # scalars: one row each, never stacked
            else:
                layouts.setdefault((_layout(inputs), _layout(outputs)), []).append((inputs, outputs))
        for same in layouts.values():
            yield _stack(same) if len(same) > 1 else same[0]
