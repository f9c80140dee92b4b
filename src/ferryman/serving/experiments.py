"""What an experiment needs to remember about served predictions, per process.

Every answered request is put in a ledger here: which version served which request id, with its
prediction (the first output's value, for one-row requests), so that feedback — which names only
the request id — can be joined to the version and prediction it is about (by this process, or by
another one's ``FeedbackResolver``). For models under a traffic policy or a rollout, a per-version
tally of predictions (class counts, or a running mean/variance for numbers) feeds the experiment
report's prediction distribution. Both are
bounded: the ledger keeps the latest ``capacity`` requests, a tally at most ``max_classes`` classes.
"""

from __future__ import annotations

import collections
import math
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = ["ExperimentRecorder", "Served"]

Arrays = dict[str, np.ndarray[Any, Any]]
_OTHER = "__other__"


@dataclass(frozen=True, slots=True)
class Served:
    """Which version answered a request, and what it predicted (None for multi-row requests)."""

    model: str
    version: int
    prediction: Any


class _Tally:
    """Prediction distribution of one version: class counts, or count/mean/variance for numbers."""

    __slots__ = ("classes", "count", "maximum", "mean", "minimum", "squares")

    def __init__(self) -> None:
        self.classes: dict[str, int] = {}
        self.count = 0
        self.mean = 0.0
        self.squares = 0.0
        self.minimum = math.inf
        self.maximum = -math.inf

    def add(self, values: np.ndarray[Any, Any], max_classes: int) -> None:
        if values.dtype.kind == "f":
            finite = values[np.isfinite(values)]
            for value in finite.tolist():  # Welford; one-row requests make this one step
                self.count += 1
                delta = value - self.mean
                self.mean += delta / self.count
                self.squares += delta * (value - self.mean)
                self.minimum = min(self.minimum, value)
                self.maximum = max(self.maximum, value)
            return
        for value in values.tolist():
            label = value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)
            if label not in self.classes and len(self.classes) >= max_classes:
                label = _OTHER
            self.classes[label] = self.classes.get(label, 0) + 1

    def to_dict(self) -> dict[str, Any]:
        if self.classes:
            return {"classes": dict(self.classes)}
        if not self.count:
            return {}
        variance = self.squares / (self.count - 1) if self.count > 1 else 0.0
        return {
            "count": self.count,
            "mean": self.mean,
            "variance": variance,
            "min": self.minimum,
            "max": self.maximum,
        }


class ExperimentRecorder:
    """A bounded ledger of request id → (version, prediction) and per-version prediction tallies."""

    def __init__(self, capacity: int = 50_000, max_classes: int = 100) -> None:
        self._capacity = capacity
        self._max_classes = max_classes
        self._ledger: collections.OrderedDict[str, Served] = collections.OrderedDict()
        self._tallies: dict[tuple[str, int], _Tally] = {}

    def record(self, request_id: str | None, model: str, version: int, outputs: Arrays) -> None:
        """Remember one answered request (call on the event loop, after the answer is ready)."""
        first = next(iter(outputs.values()), None)
        if first is None:
            return
        values = first.reshape(-1) if first.ndim <= 1 else first[:, 0]
        tally = self._tallies.get((model, version))
        if tally is None:
            tally = self._tallies[(model, version)] = _Tally()
        tally.add(values, self._max_classes)
        self.remember(request_id, model, version, first)

    def remember(self, request_id: str | None, model: str, version: int, first: np.ndarray[Any, Any] | None) -> None:
        """Put one answered request in the ledger (every model's requests; ``first`` is its first output)."""
        if request_id is None or first is None:
            return
        prediction = None
        if first.ndim and first.shape[0] == 1:
            # A scalar for a label, a list for a row of scores, the object itself for BYTES.
            value = first[:1].tolist()[0]
            prediction = value.decode("utf-8", "replace") if isinstance(value, bytes) else value
        ledger = self._ledger
        ledger[request_id] = Served(model, version, prediction)
        if len(ledger) > self._capacity:
            ledger.popitem(last=False)

    def lookup(self, request_id: str) -> Served | None:
        """What served ``request_id``, if this process answered it recently."""
        return self._ledger.get(request_id)

    def distribution(self, model: str, version: int) -> dict[str, Any]:
        """The version's prediction distribution so far (``{"classes": {...}}`` or a numeric summary)."""
        tally = self._tallies.get((model, version))
        return tally.to_dict() if tally is not None else {}

    def forget(self, model: str) -> None:
        """Drop a model's tallies (its experiment ended or it was deleted)."""
        for key in [key for key in self._tallies if key[0] == model]:
            del self._tallies[key]
