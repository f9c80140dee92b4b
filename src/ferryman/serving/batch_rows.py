"""Row bookkeeping for batches: keys that say which requests concatenate, merging and splitting.

Splitting checks every output has the batch's row count, so a model that returns the wrong number
of rows fails every request of its batch instead of handing rows to the wrong callers.
"""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING, Any

import numpy as np

from ferryman.errors import FerrymanError, InvalidInput, ModelFailed

if TYPE_CHECKING:
    from ferryman.serving.batcher import _Pending

__all__ = ["batch_key", "checked", "concatenate", "fail", "loop_time", "split", "union"]

Arrays = dict[str, np.ndarray[Any, Any]]


def fail(batch: list[_Pending], exc: Exception, label: str) -> None:
    """Give every request of a failed batch the error (a model's own exception becomes ModelFailed)."""
    error = exc if isinstance(exc, FerrymanError) else ModelFailed(f"{label} failed: {type(exc).__name__}: {exc}")
    for item in batch:
        if not item.future.done():
            item.future.set_exception(error)


def batch_key(inputs: Arrays) -> tuple[int, tuple[Any, ...]]:
    """The request's row count, and the key (names, trailing shapes, dtypes) requests must share to batch."""
    rows = None
    key: list[Any] = []
    for name, array in inputs.items():
        if array.ndim == 0:
            raise InvalidInput(f"input '{name}' is a scalar; a batchable model needs a batch dimension")
        if rows is None:
            rows = int(array.shape[0])
        elif array.shape[0] != rows:
            raise InvalidInput(f"input '{name}' has {array.shape[0]} rows but the other inputs have {rows}")
        key.append((name, array.shape[1:], array.dtype.str))
    return rows or 0, tuple(key)


def union(batch: list[_Pending]) -> frozenset[str] | None:
    """The outputs a batch must compute: everything as soon as one caller wants everything."""
    wanted: frozenset[str] = frozenset()
    for item in batch:
        if item.wanted is None:
            return None
        wanted |= item.wanted
    return wanted


def concatenate(batch: list[_Pending]) -> Arrays:
    """One array per input: the batch's requests stacked along the first axis, in order."""
    return {name: np.concatenate([item.inputs[name] for item in batch]) for name in batch[0].inputs}


def checked(results: Arrays, rows: int, label: str) -> Arrays:
    """The model's outputs as arrays, each with the batch's row count (else ModelFailed naming it)."""
    if not isinstance(results, dict):
        raise ModelFailed(f"{label} returned {type(results).__name__}, expected a dict of arrays")
    arrays = {name: np.asarray(value) for name, value in results.items()}
    for name, array in arrays.items():
        if array.ndim == 0 or array.shape[0] != rows:
            raise ModelFailed(
                f"{label} returned {array.shape[0] if array.ndim else 'a scalar'} rows for output '{name}' "
                f"from a batch of {rows} rows"
            )
    return arrays


def split(results: Arrays, batch: list[_Pending], rows: int, label: str) -> None:
    """Hand each request of the batch its own rows of every output (after checking the row counts)."""
    arrays = checked(results, rows, label)
    if len(batch) == 1:
        if not batch[0].future.done():
            batch[0].future.set_result(arrays)
        return
    offset = 0
    for item in batch:
        end = offset + item.rows
        if not item.future.done():
            item.future.set_result({name: array[offset:end] for name, array in arrays.items()})
        offset = end


def loop_time(loop: asyncio.AbstractEventLoop, monotonic_at: float) -> float:
    """Convert a time.monotonic() instant to the loop's clock (they may differ, e.g. under uvloop)."""
    return loop.time() + (monotonic_at - time.monotonic())
