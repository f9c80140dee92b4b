"""Data-quality counters per feature: NaN, infinities, values outside the reference range, unseen categories.

:meth:`QualityCounters.observe` counts a batch with a handful of vectorised numpy operations per
tensor (one ``np.unique`` per categorical column); :meth:`QualityCounters.rejected` counts a
request the server refused for a schema violation, by field. Counts live in one fixed
``[features + 1, issues]`` integer array: at most ``max_features`` feature labels, every other
feature counted under ``__other__``, so metric label cardinality stays bounded whatever clients send.

Issues (the ``issue`` label of ``ferryman_data_quality_total``, see ``docs/monitoring.md``):

- ``nan``: NaN in a numeric feature, or a missing value (None/NaN) in a categorical one;
- ``inf``: +inf or -inf;
- ``below_range`` / ``above_range``: a finite value below the reference minimum or above the
  reference maximum by more than ``range_tolerance`` times the reference range;
- ``unseen_category``: a category the reference never had (only counted when the reference named
  all its categories: a reference with more than 100 pooled the rest under ``__other__``);
- ``rejected``: a request refused by validation, counted under the field it named.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from ferryman.errors import InvalidInput
from ferryman.monitoring.drift import CategoryEncoder
from ferryman.monitoring.profile import (
    OTHER,
    CategoricalProfile,
    FeatureProfile,
    Kind,
    NumericProfile,
    Profile,
    as_columns,
    feature_names_of,
    tensor_kind,
)

__all__ = ["ISSUES", "MAX_LABELS", "QualityCounters"]

Array = np.ndarray[Any, Any]

ISSUES = ("nan", "inf", "below_range", "above_range", "unseen_category", "rejected")
MAX_LABELS = 100
#: Remembered tensor layouts; more would mean clients vary shapes, and the cache starts over.
MAX_PLANS = 64
NAN, INF, BELOW, ABOVE, UNSEEN, REJECTED = range(len(ISSUES))


@dataclass(frozen=True, slots=True)
class _Plan:
    """How to count one tensor layout: its kind, each column's label slot, and its reference bounds.

    ``encoders`` name each categorical column's reference categories when unseen ones are counted
    (else they know none); ``distinct`` says no two columns share a slot (so a plain ``+=`` adds).
    """

    kind: Kind
    slots: Array
    distinct: bool
    low: Array
    high: Array
    encoders: tuple[CategoryEncoder, ...]
    unseen: Array


class QualityCounters:
    """Data-quality counts of one version, against its profile when it has one."""

    def __init__(
        self, profile: Profile | None, *, range_tolerance: float = 0.1, max_features: int = MAX_LABELS
    ) -> None:
        if not range_tolerance >= 0:
            raise InvalidInput("range_tolerance must be zero or positive")
        if max_features < 1:
            raise InvalidInput("max_features must be at least 1")
        self.profile = profile
        self.range_tolerance = range_tolerance
        self.max_features = max_features
        self._lock = threading.Lock()
        self._labels: dict[str, int] = {}
        self._counts = np.zeros((max_features + 1, len(ISSUES)), dtype=np.int64)
        self._rows = 0
        self._plans: dict[tuple[str, int], _Plan] = {}
        self._known: frozenset[str] = frozenset()
        if profile is not None:
            for names in profile.inputs.values():
                for name in names:
                    self._slot(name)
            self._known = frozenset(profile.features) | frozenset(profile.inputs)

    def observe(self, features: Mapping[str, Array]) -> None:
        """Count the issues of a batch of input tensors."""
        updates: list[tuple[_Plan, Array]] = []
        rows = 0
        for tensor, raw in features.items():
            array = np.asarray(raw)
            matrix = as_columns(array)
            rows = max(rows, matrix.shape[0])
            plan = self._plan(tensor, array, matrix)
            issues = self._numeric(matrix, plan) if plan.kind == "numeric" else self._categorical(matrix, plan)
            if issues is not None:
                updates.append((plan, issues))
        with self._lock:
            for plan, issues in updates:
                if plan.distinct:
                    self._counts[plan.slots] += issues
                else:
                    np.add.at(self._counts, plan.slots, issues)
            self._rows += rows

    def rejected(self, field: str) -> None:
        """Count one request refused for a schema violation in ``field`` (a tensor or feature name)."""
        with self._lock:
            if self.profile is not None and field not in self._known:
                slot = self.max_features
            else:
                slot = self._slot(field[:200])
            self._counts[slot, REJECTED] += 1

    def snapshot(self) -> dict[str, Any]:
        """Counts so far: ``rows`` observed, ``totals`` per issue, ``features`` per label and issue."""
        with self._lock:
            counts = self._counts.copy()
            labels = dict(self._labels)
            rows = self._rows
        per_label = {label: _issues(counts[slot]) for label, slot in labels.items()}
        if counts[self.max_features].any():
            per_label[OTHER] = _issues(counts[self.max_features])
        return {"rows": rows, "totals": _issues(counts.sum(axis=0)), "features": per_label}

    def _slot(self, label: str) -> int:
        slot = self._labels.get(label)
        if slot is None:
            if len(self._labels) >= self.max_features:
                return self.max_features
            slot = self._labels[label] = len(self._labels)
        return slot

    def _plan(self, tensor: str, array: Array, matrix: Array) -> _Plan:
        key = (tensor, matrix.shape[1] if array.ndim != 1 else -1)
        plan = self._plans.get(key)
        if plan is not None:
            return plan
        columns = matrix.shape[1]
        profiled = self.profile.features if self.profile is not None else {}
        layout = self.profile.inputs.get(tensor, ()) if self.profile is not None else ()
        if layout and len(layout) <= columns:
            names = layout + tuple(OTHER for _ in range(columns - len(layout)))
            kind: Kind = profiled[layout[0]].kind
        else:
            names = feature_names_of(tensor, columns, array.ndim == 1)
            kind = tensor_kind(array, prediction=False)
        low, high = np.full(columns, np.nan), np.full(columns, np.nan)
        encoders: list[CategoryEncoder] = []
        unseen = np.zeros(columns, dtype=bool)
        for i, name in enumerate(names):
            reference = profiled.get(name)
            bounds = _range(reference)
            if bounds is not None:
                margin = self.range_tolerance * (bounds[1] - bounds[0])
                low[i], high[i] = bounds[0] - margin, bounds[1] + margin
            categories = list(reference.counts) if isinstance(reference, CategoricalProfile) else []
            unseen[i] = isinstance(reference, CategoricalProfile) and reference.complete
            encoders.append(CategoryEncoder(categories))
        with self._lock:
            slots = np.array([self._slot(n) if n != OTHER else self.max_features for n in names], dtype=np.intp)
        distinct = len(set(slots.tolist())) == slots.size
        plan = _Plan(kind, slots, distinct, low, high, tuple(encoders), unseen)
        if len(self._plans) >= MAX_PLANS:
            self._plans.clear()
        self._plans[key] = plan
        return plan

    @staticmethod
    def _numeric(matrix: Array, plan: _Plan) -> Array | None:
        try:
            values = matrix.astype(np.float64, copy=False)
        except (TypeError, ValueError):
            return None
        issues = np.zeros((values.shape[1], len(ISSUES)), dtype=np.int64)
        finite = np.isfinite(values)
        nan = np.isnan(values)
        issues[:, NAN] = nan.sum(axis=0)
        issues[:, INF] = values.shape[0] - finite.sum(axis=0) - issues[:, NAN]
        with np.errstate(invalid="ignore"):
            issues[:, BELOW] = (finite & (values < plan.low)).sum(axis=0)
            issues[:, ABOVE] = (finite & (values > plan.high)).sum(axis=0)
        return issues

    @staticmethod
    def _categorical(matrix: Array, plan: _Plan) -> Array:
        issues = np.zeros((matrix.shape[1], len(ISSUES)), dtype=np.int64)
        for i, encoder in enumerate(plan.encoders):
            codes = encoder.encode(matrix[:, i])
            issues[i, NAN] = np.count_nonzero(codes == encoder.MISSING)
            issues[i, UNSEEN] = np.count_nonzero(codes == encoder.rest)
        issues[:, UNSEEN] *= plan.unseen
        return issues


def _range(reference: FeatureProfile | None) -> tuple[float, float] | None:
    if isinstance(reference, NumericProfile) and reference.minimum is not None and reference.maximum is not None:
        return reference.minimum, reference.maximum
    return None


def _issues(row: Array) -> dict[str, int]:
    return {issue: int(n) for issue, n in zip(ISSUES, row, strict=True)}
