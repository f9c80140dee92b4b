"""Drift of live traffic against a version's reference profile, on a sliding window of the latest rows.

:meth:`DriftMonitor.observe` turns each value into a one-byte code — its reference bin (numeric) or
its reference category (categorical; categories the reference does not name share one code) — and
writes the codes into a fixed ``[window_rows, columns]`` ring per tensor, so memory is set at
construction whatever the traffic. :meth:`DriftMonitor.report` tests the window, per feature and per
prediction column:

- numeric: a two-sample Kolmogorov-Smirnov test evaluated at the reference's bin edges, where the
  reference CDF is known exactly (no interpolation), with p-values from the KS distribution at the
  effective size ``n·m/(n+m)`` (window ``n``, reference ``m`` values), as ``scipy.stats.ks_2samp``
  does asymptotically. The supremum over a subset of points is never larger than the full two-sample
  statistic, so the test is conservative: false alarms stay at or below the significance;
- categorical: a chi-squared test of homogeneity between the reference counts and the window counts
  (categories with an expected count under 5 pooled), which, unlike a goodness-of-fit test, allows
  for the reference being a sample itself;
- both: the population stability index on the same bins, shares clipped at ``PSI_EPSILON``.

Across all tested columns, p-values are adjusted by Benjamini-Hochberg; a column drifted when its
adjusted p-value is at most ``significance``. ``docs/monitoring.md`` explains these choices.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, replace
from typing import Any, Literal

import numpy as np

from ferryman.errors import InvalidInput
from ferryman.monitoring.profile import (
    OTHER,
    CategoricalProfile,
    FeatureProfile,
    Kind,
    NumericProfile,
    Profile,
    as_columns,
    category_key,
)

__all__ = ["PSI_EPSILON", "CategoryEncoder", "DriftMonitor", "DriftReport", "FeatureDrift", "benjamini_hochberg", "psi"]

Array = np.ndarray[Any, Any]
Verdict = Literal["drift", "no drift", "not enough data"]

PSI_EPSILON = 1e-4
MISSING = 255
#: Cochran's rule: a chi-squared approximation wants expected counts of at least 5.
MIN_EXPECTED = 5.0


@dataclass(frozen=True, slots=True)
class FeatureDrift:
    """One feature (or prediction column) in the current window against the reference.

    ``test`` is ``"ks"`` or ``"chi2"``; it and the numbers are None when the column was not tested
    (``note`` says why). ``drifted`` is the statistical decision; ``psi_exceeded`` says the PSI is at
    or above the monitor's ``psi_threshold``.
    """

    name: str
    kind: Kind
    rows: int
    missing_rate: float | None
    reference_missing_rate: float
    test: str | None = None
    statistic: float | None = None
    p_value: float | None = None
    p_adjusted: float | None = None
    psi: float | None = None
    drifted: bool = False
    psi_exceeded: bool = False
    note: str | None = None


@dataclass(frozen=True, slots=True)
class DriftReport:
    """The verdict on the current window, with every feature's and prediction column's result."""

    verdict: Verdict
    score: float | None
    rows: int
    rows_observed: int
    window_rows: int
    min_rows: int
    significance: float
    psi_threshold: float
    correction: str
    source: str
    features: tuple[FeatureDrift, ...]
    predictions: tuple[FeatureDrift, ...]
    quality: Mapping[str, Any] | None = None

    @property
    def drifted(self) -> tuple[str, ...]:
        """Names of the drifted features, then of the drifted prediction columns."""
        return tuple(f.name for f in (*self.features, *self.predictions) if f.drifted)

    def to_dict(self) -> dict[str, Any]:
        """The report as JSON-ready data: no NaN or infinity anywhere (None instead)."""
        out: dict[str, Any] = {
            key: _clean(getattr(self, key))
            for key in ("verdict", "score", "rows", "rows_observed", "window_rows", "min_rows", "significance")
        }
        out |= {"psi_threshold": self.psi_threshold, "correction": self.correction, "source": self.source}
        out["drifted_features"] = [f.name for f in self.features if f.drifted]
        out["drifted_predictions"] = [f.name for f in self.predictions if f.drifted]
        for side in ("features", "predictions"):
            results = getattr(self, side)
            out[side] = {f.name: {k: _clean(v) for k, v in asdict(f).items() if k != "name"} for f in results}
        out["quality"] = dict(self.quality) if self.quality is not None else None
        return out


class DriftMonitor:
    """Sliding-window drift detection for one version against its reference profile.

    ``observe`` is cheap and bounded (a fixed ring of one-byte codes per tensor); ``report`` runs the
    tests. Both may be called from different threads.
    """

    def __init__(
        self,
        profile: Profile,
        *,
        window_rows: int = 1000,
        significance: float = 0.01,
        psi_threshold: float = 0.2,
        min_rows: int = 100,
    ) -> None:
        if window_rows < 1 or not 1 <= min_rows <= window_rows:
            raise InvalidInput("window_rows must be at least 1, and min_rows between 1 and window_rows")
        if not 0 < significance < 1:
            raise InvalidInput("significance must be between 0 and 1 (exclusive)")
        if not psi_threshold > 0:
            raise InvalidInput("psi_threshold must be positive")
        self.profile = profile
        self.window_rows = window_rows
        self.significance = significance
        self.psi_threshold = psi_threshold
        self.min_rows = min_rows
        self._lock = threading.Lock()
        self._inputs = [_Window(t, n, profile.features, window_rows) for t, n in profile.inputs.items()]
        self._outputs = [_Window(t, n, profile.predictions, window_rows) for t, n in profile.outputs.items()]
        self._observed = 0

    @property
    def rows_observed(self) -> int:
        """Rows seen since the monitor started."""
        return self._observed

    @property
    def nbytes(self) -> int:
        """Bytes held by the window rings (fixed at construction)."""
        return sum(w.ring.nbytes for w in (*self._inputs, *self._outputs))

    def observe(self, features: Mapping[str, Array], predictions: Mapping[str, Array] | None = None) -> None:
        """Add a batch of rows (inputs, and the outputs for them) to the window; tensors not profiled are ignored."""
        encoded: list[tuple[_Window, Array]] = []
        rows = 0
        for windows, tensors in ((self._inputs, features), (self._outputs, predictions or {})):
            for window in windows:
                array = tensors.get(window.tensor)
                if array is None:
                    continue
                codes = window.encode(as_columns(np.asarray(array)))
                if codes is not None:
                    encoded.append((window, codes))
                    rows = max(rows, codes.shape[0])
        with self._lock:
            for window, codes in encoded:
                window.push(codes)
            self._observed += rows

    def report(self, *, quality: Mapping[str, Any] | None = None) -> DriftReport:
        """Test the current window; ``quality`` (a ``QualityCounters.snapshot()``) is passed through."""
        with self._lock:
            taken = [(w, w.ring[: w.filled].copy()) for w in (*self._inputs, *self._outputs)]
            observed = self._observed
        rows = max((codes.shape[0] for _, codes in taken), default=0)
        results = [w.test(i, codes[:, i], self.min_rows) for w, codes in taken for i in range(len(w.names))]
        tested = [i for i, r in enumerate(results) if r.p_value is not None]
        adjusted = benjamini_hochberg([results[i].p_value or 0.0 for i in tested])
        for i, p in zip(tested, adjusted, strict=True):
            r = results[i]
            drifted = p <= self.significance
            exceeded = r.psi is not None and r.psi >= self.psi_threshold
            results[i] = replace(r, p_adjusted=p, drifted=drifted, psi_exceeded=exceeded)
        if rows < self.min_rows or not tested:
            verdict: Verdict = "not enough data"
        else:
            verdict = "drift" if any(r.drifted for r in results) else "no drift"
        scores = [r.psi for r in results if r.psi is not None]
        n_inputs = sum(len(w.names) for w in self._inputs)
        return DriftReport(
            verdict=verdict,
            score=max(scores) if scores else None,
            rows=rows,
            rows_observed=observed,
            window_rows=self.window_rows,
            min_rows=self.min_rows,
            significance=self.significance,
            psi_threshold=self.psi_threshold,
            correction="benjamini-hochberg",
            source=self.profile.source,
            features=tuple(results[:n_inputs]),
            predictions=tuple(results[n_inputs:]),
            quality=quality,
        )


def benjamini_hochberg(p_values: Sequence[float]) -> list[float]:
    """Benjamini-Hochberg adjusted p-values (step-up, capped at 1), in the input order."""
    m = len(p_values)
    if m == 0:
        return []
    order = np.argsort(p_values)
    ranked = np.asarray(p_values, dtype=np.float64)[order] * m / np.arange(1, m + 1)
    ranked = np.minimum.accumulate(ranked[::-1])[::-1]
    adjusted = np.empty(m)
    adjusted[order] = np.minimum(ranked, 1.0)
    return [float(p) for p in adjusted]


def psi(reference: Array, current: Array) -> float:
    """Population stability index of two share vectors over the same bins, each share clipped at ``PSI_EPSILON``."""
    r = np.maximum(np.asarray(reference, dtype=np.float64), PSI_EPSILON)
    c = np.maximum(np.asarray(current, dtype=np.float64), PSI_EPSILON)
    return float(np.sum((c - r) * np.log(c / r)))


class CategoryEncoder:
    """Maps categorical values to one-byte codes: the vocabulary's categories to 0…n-1, others to n, missing to 255.

    Integer and boolean arrays take a vectorised path (``np.searchsorted``); text and object arrays
    one dict lookup per value, which for request-sized batches costs less than ``np.unique``.
    """

    MISSING = MISSING

    def __init__(self, vocabulary: Sequence[str]) -> None:
        if len(vocabulary) >= self.MISSING:
            raise InvalidInput(f"at most {self.MISSING - 1} categories can be encoded")
        self.rest = len(vocabulary)
        self._table: dict[object, int] = {}
        integers: dict[int, int] = {}
        for code, key in enumerate(vocabulary):
            self._table[key] = self._table[key.encode()] = code
            if key.isascii() and key.lstrip("-").isdigit() and str(int(key)) == key:
                integers[int(key)] = code
        booleans = {0: vocabulary.index("false") if "false" in vocabulary else self.rest}
        booleans[1] = vocabulary.index("true") if "true" in vocabulary else self.rest
        self._integers = (np.array(sorted(integers), dtype=np.int64), np.array([integers[k] for k in sorted(integers)]))
        self._booleans = np.array([booleans[0], booleans[1]], dtype=np.uint8)
        self._lookup = np.frompyfunc(self._code, 1, 1)

    def encode(self, values: Array) -> Array:
        """Codes (uint8) of a 1-D array of values."""
        kind = values.dtype.kind
        if kind == "b":
            result: Array = self._booleans[values.astype(np.intp)]
            return result
        if kind in "iu":
            keys, codes = self._integers
            if keys.size == 0:
                return np.full(values.shape, self.rest, dtype=np.uint8)
            at = np.minimum(np.searchsorted(keys, values), keys.size - 1)
            return np.where(keys[at] == values, codes[at], self.rest).astype(np.uint8)
        with np.errstate(invalid="ignore"):  # NaN != NaN raises the FPU's invalid flag, which numpy reports
            return np.asarray(self._lookup(values), dtype=np.uint8)

    def _code(self, value: object) -> int:
        try:
            found = self._table.get(value)
        except TypeError:  # unhashable
            found = None
        if found is not None:
            return found
        if value is None or (isinstance(value, float) and value != value):
            return self.MISSING
        return self._table.get(category_key(value), self.rest)


class _Window:
    """The ring of codes of one tensor's profiled columns, and how to encode and test them."""

    def __init__(self, tensor: str, names: Sequence[str], profiles: Mapping[str, FeatureProfile], size: int) -> None:
        self.tensor = tensor
        self.names = tuple(names)
        self.profiles = [profiles[n] for n in names]
        self.kind: Kind = self.profiles[0].kind if self.profiles else "numeric"
        self.ring = np.full((size, len(names)), MISSING, dtype=np.uint8)
        self.position = 0
        self.filled = 0
        if self.kind == "numeric":
            widest = max((len(_edges(p)) for p in self.profiles), default=0)
            # Edge-major [edges, columns], padded with +inf (never exceeded): one broadcast compare bins a batch.
            self.edges = np.full((max(widest, 1), len(names)), np.inf)
            for i, p in enumerate(self.profiles):
                self.edges[: len(_edges(p)), i] = _edges(p)
        else:
            self.encoders = [CategoryEncoder(_vocabulary(p)) for p in self.profiles]

    def encode(self, matrix: Array) -> Array | None:
        """Codes of a ``[rows, columns]`` batch; None when it does not fit the profile (the validator's concern)."""
        if matrix.shape[1] < len(self.names):
            return None
        matrix = matrix[:, : len(self.names)]
        if self.kind == "numeric":
            try:
                values = matrix.astype(np.float64, copy=False)
            except (TypeError, ValueError):
                return None
            bins: Array = (values[None, :, :] > self.edges[:, None, :]).sum(axis=0, dtype=np.uint8)
            bins[np.isnan(values)] = MISSING
            return bins
        codes = np.empty(matrix.shape, dtype=np.uint8)
        for i, encoder in enumerate(self.encoders):
            codes[:, i] = encoder.encode(matrix[:, i])
        return codes

    def push(self, codes: Array) -> None:
        """Write a batch's codes over the oldest rows."""
        size = self.ring.shape[0]
        rows = codes.shape[0]
        if rows >= size:
            self.ring[:] = codes[-size:]
            self.position, self.filled = 0, size
            return
        end = self.position + rows
        if end <= size:
            self.ring[self.position : end] = codes
        else:
            split = size - self.position
            self.ring[self.position :] = codes[:split]
            self.ring[: end - size] = codes[split:]
        self.position = end % size
        self.filled = min(size, self.filled + rows)

    def test(self, column: int, codes: Array, min_rows: int) -> FeatureDrift:
        """The raw (unadjusted) result of one column of the window."""
        profile = self.profiles[column]
        counts = np.bincount(codes, minlength=MISSING + 1)
        n = int(codes.size - counts[MISSING])
        base = FeatureDrift(
            name=self.names[column],
            kind=profile.kind,
            rows=n,
            missing_rate=float(counts[MISSING] / codes.size) if codes.size else None,
            reference_missing_rate=profile.missing,
        )
        if profile.valid == 0 or (isinstance(profile, NumericProfile) and not profile.proportions):
            return replace(base, note="no reference values")
        if n < min_rows:
            return replace(base, note="not enough data")
        if isinstance(profile, NumericProfile):
            test, (statistic, p, index) = "ks", _ks(profile, counts, n)
        else:
            test, (statistic, p, index) = "chi2", _chi2(profile, counts)
        return replace(base, test=test, statistic=statistic, p_value=p, psi=index)


def _edges(profile: FeatureProfile) -> tuple[float, ...]:
    return profile.edges if isinstance(profile, NumericProfile) else ()


def _vocabulary(profile: FeatureProfile) -> list[str]:
    names = profile.counts if isinstance(profile, CategoricalProfile) else {}
    return [k for k in names if k != OTHER]


def _ks(profile: NumericProfile, counts: Array, n: int) -> tuple[float, float, float]:
    from scipy import stats

    reference = np.asarray(profile.proportions, dtype=np.float64)
    reference /= reference.sum()
    window = counts[: reference.size] / n
    distance = float(np.max(np.abs(np.cumsum(window)[:-1] - np.cumsum(reference)[:-1]), initial=0.0))
    m = profile.valid
    effective = max(1, round(n * m / (n + m)))
    p = float(stats.kstwo.sf(distance, effective)) if distance > 0 else 1.0
    return distance, min(max(p, 0.0), 1.0), psi(reference, window)


def _chi2(profile: CategoricalProfile, counts: Array) -> tuple[float, float, float]:
    from scipy import stats

    vocabulary = [k for k in profile.counts if k != OTHER]
    reference = np.array([profile.counts[k] for k in vocabulary] + [profile.counts.get(OTHER, 0)], float)
    window = counts[: reference.size].astype(np.float64)
    index = psi(reference / reference.sum(), window / window.sum())
    table = np.vstack([reference, window])
    table = table[:, table.sum(axis=0) > 0]
    small = _expected(table).min(axis=0) < MIN_EXPECTED
    if small.any():
        table = np.column_stack([table[:, ~small], table[:, small].sum(axis=1)])
        # The pooled column may itself be too small: fold it into the smallest remaining column.
        if table.shape[1] > 2 and _expected(table)[:, -1].min() < MIN_EXPECTED:
            smallest = int(np.argmin(table[:, :-1].sum(axis=0)))
            table[:, smallest] += table[:, -1]
            table = table[:, :-1]
    if table.shape[1] < 2:
        return 0.0, 1.0, index
    expected = _expected(table)
    statistic = float(np.sum((table - expected) ** 2 / expected))
    return statistic, float(stats.chi2.sf(statistic, table.shape[1] - 1)), index


def _expected(table: Array) -> Array:
    result: Array = np.outer(table.sum(axis=1), table.sum(axis=0)) / table.sum()
    return result


def _clean(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value
