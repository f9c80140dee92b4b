"""How a version batches: its policy (from ``runtime_config.batching``) and the batch-size controller.

See ``docs/batching.md`` for the algorithm; :mod:`ferryman.serving.batcher` does the queueing.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ferryman.errors import InvalidInput

__all__ = ["BatchPolicy", "BatchSizer", "check_batching_config"]


@dataclass(frozen=True, slots=True)
class BatchPolicy:
    """How one version batches. ``latency_slo_ms`` switches on the adaptive sizer."""

    max_batch_size: int = 32
    max_queue_delay_ms: float = 0.0
    preferred_batch_sizes: tuple[int, ...] = ()
    latency_slo_ms: float | None = None
    max_queue_size: int = 1024
    instances: int = 1
    #: A batch predicted to run at most this long runs on the event loop instead of the executor
    #: (0 = never): for a model this fast the hand-off to a thread costs more than the model.
    inline_max_ms: float = 0.5

    @classmethod
    def from_config(cls, raw: dict[str, Any], defaults: BatchPolicy) -> BatchPolicy:
        """Read the ``batching`` block of a version's runtime config, naming any bad field."""
        known = {f for f in cls.__dataclass_fields__}
        unknown = set(raw) - known - {"enabled"}
        if unknown:
            raise InvalidInput(f"batching: unknown keys {', '.join(sorted(unknown))}")
        values: dict[str, Any] = {}
        for key in known & set(raw):
            value = raw[key]
            if key == "preferred_batch_sizes":
                if not isinstance(value, list) or not all(isinstance(v, int) and v > 0 for v in value):
                    raise InvalidInput("batching.preferred_batch_sizes must be a list of positive integers")
                values[key] = tuple(sorted(value))
            elif key == "latency_slo_ms":
                if value is not None and (not isinstance(value, int | float) or value <= 0):
                    raise InvalidInput("batching.latency_slo_ms must be a positive number")
                values[key] = value
            else:
                if not isinstance(value, int | float) or isinstance(value, bool) or value < 0:
                    raise InvalidInput(f"batching.{key} must be a non-negative number")
                values[key] = value
        policy = cls(**{**{f: getattr(defaults, f) for f in known}, **values})
        if policy.max_batch_size < 1 or policy.instances < 1 or policy.max_queue_size < 1:
            raise InvalidInput("batching.max_batch_size, instances and max_queue_size must be at least 1")
        return policy


class BatchSizer:
    """Chooses how many rows the next batch may take.

    Fixed mode: ``max_batch_size``. Adaptive mode: batch execution time is modelled as
    ``t(n) = a + b·n``, fitted online by exponentially weighted least squares over recent batches;
    the target is the largest ``n`` with ``t(n) <= slo / 2`` (the other half of the SLO is left for
    queueing, since a request can wait for one batch ahead of it), clamped to ``[1, max_batch_size]``.
    """

    _DECAY = 0.05

    def __init__(self, policy: BatchPolicy) -> None:
        self._policy = policy
        self._n = self._t = self._nn = self._nt = 0.0
        self._weight = 0.0

    def observe(self, rows: int, seconds: float) -> None:
        """Record one batch's size and execution time."""
        d = self._DECAY
        self._weight = (1 - d) * self._weight + d
        self._n = (1 - d) * self._n + d * rows
        self._t = (1 - d) * self._t + d * seconds
        self._nn = (1 - d) * self._nn + d * rows * rows
        self._nt = (1 - d) * self._nt + d * rows * seconds

    def cost_model(self) -> tuple[float, float] | None:
        """The fitted (a, b) in seconds, or None before there is enough spread in batch sizes."""
        if self._weight == 0:
            return None
        mean_n, mean_t = self._n / self._weight, self._t / self._weight
        var_n = self._nn / self._weight - mean_n * mean_n
        if var_n < 1e-6:
            return (mean_t, 0.0)
        slope = max(0.0, (self._nt / self._weight - mean_n * mean_t) / var_n)
        return (max(0.0, mean_t - slope * mean_n), slope)

    def target(self) -> int:
        """Rows the next batch may take."""
        policy = self._policy
        if policy.latency_slo_ms is None:
            return policy.max_batch_size
        model = self.cost_model()
        if model is None:
            return 1
        intercept, slope = model
        budget = policy.latency_slo_ms / 1000 / 2
        if slope <= 0:
            return policy.max_batch_size if intercept <= budget else 1
        return int(max(1, min(policy.max_batch_size, (budget - intercept) / slope)))


def check_batching_config(runtime_config: dict[str, Any]) -> None:
    """Refuse a version whose ``runtime_config.batching`` block is malformed (run at push time)."""
    raw = runtime_config.get("batching", {})
    if not isinstance(raw, dict):
        raise InvalidInput("runtime_config.batching must be an object")
    BatchPolicy.from_config(raw, BatchPolicy())
