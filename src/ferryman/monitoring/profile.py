"""Reference profile of a version's data: the per-feature statistics drift and quality checks compare against.

A profile is built from the sample pushed with a version (``source="sample"``) or learned from the
first rows of live traffic (:class:`ProfileLearner`, ``source="traffic"``). Each column of each
input tensor is a *feature* (``input[0]``, ``input[1]``… or the caller's names; a 1-D tensor is one
feature named after it); outputs are profiled the same way as *predictions*.

- numeric features (float inputs, integer inputs, float outputs): row count, NaN share, min/max,
  mean/std and quantiles of the finite values, and 10 decile bins (right-closed, open at both
  ends, equal edges merged) with the reference's share of values in each bin;
- categorical features (BYTES/string/object/bool tensors, integer outputs = classes): the counts
  of the 100 most frequent categories, the rest summed under ``__other__``, and the missing share.

Values are stored in steps of 1/1,000 to 1/10,000 of the feature's interdecile range (min rounded
down and max up, so the stored range holds every reference value); bin shares are computed against
the *rounded* edges, so a profile read back from JSON bins data as the profile says, and are stored
to 5 decimals. ``docs/monitoring.md`` shows the JSON.
"""

from __future__ import annotations

import itertools
import math
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from ferryman.errors import InvalidInput

__all__ = [
    "BIN_LEVELS",
    "MAX_FEATURES",
    "OTHER",
    "QUANTILE_LEVELS",
    "TOP_CATEGORIES",
    "CategoricalProfile",
    "FeatureProfile",
    "NumericProfile",
    "Profile",
    "ProfileLearner",
    "as_columns",
    "build_profile",
    "category_key",
    "feature_names_of",
    "tensor_kind",
]

Array = np.ndarray[Any, Any]
Kind = Literal["numeric", "categorical"]
Source = Literal["sample", "traffic"]

QUANTILE_LEVELS = (0.0, 0.01, 0.05, 0.1, 0.25, 0.5, 0.75, 0.9, 0.95, 0.99, 1.0)
#: Interior bin edges are the reference's deciles.
BIN_LEVELS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)
TOP_CATEGORIES = 100
OTHER = "__other__"
#: Columns profiled per side (inputs, predictions); an image's pixels are not features worth profiling one by one.
MAX_FEATURES = 256
FORMAT = 1


@dataclass(frozen=True, slots=True)
class NumericProfile:
    """A numeric feature: ``count`` rows, ``missing`` = NaN share; the rest describes the finite values.

    ``edges`` are the interior bin edges; bin ``i`` holds values in ``(edges[i-1], edges[i]]`` (the
    first and last bins are open), and ``proportions[i]`` is the reference's share of non-NaN values
    there (±inf fall in the end bins).
    """

    count: int
    missing: float
    minimum: float | None
    maximum: float | None
    mean: float | None
    std: float | None
    quantiles: tuple[float, ...]
    edges: tuple[float, ...]
    proportions: tuple[float, ...]

    @property
    def kind(self) -> Kind:
        """Always ``"numeric"``."""
        return "numeric"

    @property
    def valid(self) -> int:
        """Reference rows with a value (not NaN)."""
        return round(self.count * (1 - self.missing))

    def to_dict(self) -> dict[str, Any]:
        """The feature as JSON-ready data."""
        return {
            "kind": "numeric",
            "count": self.count,
            "missing": self.missing,
            "min": self.minimum,
            "max": self.maximum,
            "mean": self.mean,
            "std": self.std,
            "quantiles": list(self.quantiles),
            "edges": list(self.edges),
            "proportions": list(self.proportions),
        }


@dataclass(frozen=True, slots=True)
class CategoricalProfile:
    """A categorical feature: ``count`` rows, ``missing`` share, ``counts`` of the top categories (+ ``__other__``)."""

    count: int
    missing: float
    counts: dict[str, int]

    @property
    def kind(self) -> Kind:
        """Always ``"categorical"``."""
        return "categorical"

    @property
    def valid(self) -> int:
        """Reference rows with a value."""
        return sum(self.counts.values())

    @property
    def complete(self) -> bool:
        """Whether every category of the reference is named (nothing was pooled under ``__other__``)."""
        return OTHER not in self.counts

    def to_dict(self) -> dict[str, Any]:
        """The feature as JSON-ready data."""
        return {"kind": "categorical", "count": self.count, "missing": self.missing, "counts": dict(self.counts)}


FeatureProfile = NumericProfile | CategoricalProfile


@dataclass(frozen=True, slots=True)
class Profile:
    """Reference statistics of a version's inputs (``features``) and outputs (``predictions``).

    ``inputs``/``outputs`` map each tensor to the feature names of its columns, in column order;
    ``skipped`` counts columns left out beyond ``MAX_FEATURES``.
    """

    source: Source
    rows: int
    inputs: dict[str, tuple[str, ...]]
    outputs: dict[str, tuple[str, ...]]
    features: dict[str, FeatureProfile]
    predictions: dict[str, FeatureProfile]
    skipped: int = 0

    def to_dict(self) -> dict[str, Any]:
        """The profile as JSON-ready data (see ``docs/monitoring.md``)."""
        return {
            "format": FORMAT,
            "source": self.source,
            "rows": self.rows,
            "quantile_levels": list(QUANTILE_LEVELS),
            "inputs": {name: list(names) for name, names in self.inputs.items()},
            "outputs": {name: list(names) for name, names in self.outputs.items()},
            "features": {name: p.to_dict() for name, p in self.features.items()},
            "predictions": {name: p.to_dict() for name, p in self.predictions.items()},
            "skipped": self.skipped,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Profile:
        """Read a profile written by :meth:`to_dict`; raises ``InvalidInput`` naming what is malformed."""
        try:
            if data.get("format") != FORMAT:
                raise ValueError(f"format must be {FORMAT}")
            source = data["source"]
            if source not in ("sample", "traffic"):
                raise ValueError("source must be 'sample' or 'traffic'")
            inputs = {str(k): tuple(str(n) for n in v) for k, v in data["inputs"].items()}
            outputs = {str(k): tuple(str(n) for n in v) for k, v in data["outputs"].items()}
            features = {str(k): _feature_from_dict(v) for k, v in data["features"].items()}
            predictions = {str(k): _feature_from_dict(v) for k, v in data["predictions"].items()}
            for layout, profiles, side in ((inputs, features, "features"), (outputs, predictions, "predictions")):
                absent = [n for names in layout.values() for n in names if n not in profiles]
                if absent:
                    raise ValueError(f"{side} lacks {absent[0]!r}")
            return cls(source, int(data["rows"]), inputs, outputs, features, predictions, int(data.get("skipped", 0)))
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise InvalidInput(f"malformed profile: {type(exc).__name__}: {exc}") from None


def build_profile(
    features: Mapping[str, Array],
    predictions: Mapping[str, Array] | None = None,
    *,
    source: Source,
    feature_names: Mapping[str, Sequence[str]] | None = None,
) -> Profile:
    """Profile a batch of input tensors (and the model's outputs for them); all share the first dimension."""
    if source not in ("sample", "traffic"):
        raise InvalidInput("source must be 'sample' or 'traffic'")
    outputs = dict(predictions or {})
    arrays = [np.asarray(a) for a in [*features.values(), *outputs.values()]]
    if not features or not arrays:
        raise InvalidInput("a profile needs at least one input tensor")
    rows = {as_columns(a).shape[0] for a in arrays}
    if len(rows) != 1:
        raise InvalidInput(f"all tensors of a profile must have the same number of rows, not {sorted(rows)}")
    n_rows = rows.pop()
    if n_rows == 0:
        raise InvalidInput("a profile needs at least one row")
    inputs, in_profiles, in_skipped = _profile_side(features, feature_names or {}, prediction=False)
    out_layout, out_profiles, out_skipped = _profile_side(outputs, {}, prediction=True)
    return Profile(source, n_rows, inputs, out_layout, in_profiles, out_profiles, in_skipped + out_skipped)


class ProfileLearner:
    """Learns a profile from the first ``n_rows`` rows of live traffic (memory: at most ``n_rows`` rows).

    Batches whose tensors differ in name or trailing shape from the first batch are ignored. If the
    rows cannot be profiled (feature names that do not fit), ``failure`` says why and learning stops.
    """

    def __init__(self, n_rows: int = 1000, *, feature_names: Mapping[str, Sequence[str]] | None = None) -> None:
        if n_rows < 1:
            raise InvalidInput("n_rows must be at least 1")
        self.n_rows = n_rows
        self._names = dict(feature_names or {})
        self._lock = threading.Lock()
        self._inputs: dict[str, list[Array]] = {}
        self._outputs: dict[str, list[Array]] = {}
        self._shapes: dict[tuple[bool, str], tuple[int, ...]] | None = None
        self._rows = 0
        self._profile: Profile | None = None
        self.failure: str | None = None

    @property
    def rows(self) -> int:
        """Rows kept so far (at most ``n_rows``)."""
        return self._rows

    def observe(self, features: Mapping[str, Array], predictions: Mapping[str, Array] | None = None) -> None:
        """Keep rows of this batch until ``n_rows`` are held; then build the profile and drop the rows."""
        if self._profile is not None or self.failure is not None:
            return
        tensors = {(False, k): np.atleast_1d(np.asarray(v)) for k, v in features.items()}
        tensors |= {(True, k): np.atleast_1d(np.asarray(v)) for k, v in (predictions or {}).items()}
        shapes = {key: a.shape for key, a in tensors.items()}
        if not tensors or len({s[0] for s in shapes.values()}) != 1:
            return
        with self._lock:
            if self._profile is not None or self.failure is not None:
                return
            if self._shapes is None:
                self._shapes = {key: s[1:] for key, s in shapes.items()}
            elif self._shapes != {key: s[1:] for key, s in shapes.items()}:
                return
            take = min(next(iter(shapes.values()))[0], self.n_rows - self._rows)
            for (is_output, name), array in tensors.items():
                side = self._outputs if is_output else self._inputs
                side.setdefault(name, []).append(np.array(array[:take], copy=True))
            self._rows += take
            if self._rows >= self.n_rows:
                try:
                    self._profile = build_profile(
                        {k: np.concatenate(v) for k, v in self._inputs.items()},
                        {k: np.concatenate(v) for k, v in self._outputs.items()},
                        source="traffic",
                        feature_names=self._names,
                    )
                except InvalidInput as exc:
                    self.failure = exc.message
                self._inputs.clear()
                self._outputs.clear()

    def profile(self) -> Profile | None:
        """The learned profile once ``n_rows`` rows were seen; None before."""
        return self._profile


def as_columns(array: Array) -> Array:
    """A tensor as a 2-D ``[rows, columns]`` view: 1-D is one column, higher ranks are flattened per row."""
    if array.ndim == 0:
        return array.reshape(1, 1)
    return array.reshape(array.shape[0], math.prod(array.shape[1:]))


def tensor_kind(array: Array, *, prediction: bool) -> Kind:
    """Numeric for float (and, for inputs, integer) tensors; categorical otherwise (integer outputs are classes)."""
    kind = array.dtype.kind
    if kind == "f" or (kind in "iu" and not prediction):
        return "numeric"
    return "categorical"


def feature_names_of(tensor: str, columns: int, one_dimensional: bool) -> tuple[str, ...]:
    """Default feature names: the tensor's name for a 1-D tensor, else ``tensor[i]`` per column."""
    if one_dimensional:
        return (tensor,)
    return tuple(f"{tensor}[{i}]" for i in range(columns))


def category_key(value: object) -> str:
    """The text a category is stored under: bytes decoded as UTF-8, booleans as ``true``/``false``."""
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _profile_side(
    tensors: Mapping[str, Array], names: Mapping[str, Sequence[str]], *, prediction: bool
) -> tuple[dict[str, tuple[str, ...]], dict[str, FeatureProfile], int]:
    layout: dict[str, tuple[str, ...]] = {}
    profiles: dict[str, FeatureProfile] = {}
    skipped = 0
    for tensor, raw in tensors.items():
        array = np.asarray(raw)
        matrix = as_columns(array)
        default = feature_names_of(tensor, matrix.shape[1], array.ndim == 1)
        columns = tuple(names[tensor]) if tensor in names else default
        if len(columns) != matrix.shape[1]:
            raise InvalidInput(f"{len(columns)} feature names for {tensor!r}, which has {matrix.shape[1]} columns")
        room = max(0, MAX_FEATURES - len(profiles))
        skipped += max(0, len(columns) - room)
        columns = columns[:room]
        if not columns:
            continue
        kind = tensor_kind(array, prediction=prediction)
        for i, name in enumerate(columns):
            if name in profiles:
                raise InvalidInput(f"feature name {name!r} appears twice")
            profiles[name] = _numeric(matrix[:, i]) if kind == "numeric" else _categorical(matrix[:, i])
        layout[tensor] = columns
    return layout, profiles, skipped


def _numeric(column: Array) -> NumericProfile:
    values = column.astype(np.float64, copy=False)
    nan = np.isnan(values)
    valid = values[~nan]
    finite = valid[np.isfinite(valid)]
    missing = _round(float(nan.mean()))
    if finite.size == 0:
        return NumericProfile(values.size, missing, None, None, None, None, (), (), ())
    raw = np.quantile(finite, QUANTILE_LEVELS)
    exponent = _exponent(float(raw[7] - raw[3]) or float(raw[-1] - raw[0]))
    quantiles = [_fixed(float(q), exponent) for q in raw]
    quantiles[0], quantiles[-1] = _fixed(float(raw[0]), exponent, -1), _fixed(float(raw[-1]), exponent, 1)
    edges = np.unique([_fixed(float(q), exponent) for q in np.quantile(finite, BIN_LEVELS)])
    codes = np.searchsorted(edges, valid, side="left")  # bin i holds (edges[i-1], edges[i]]
    shares = np.bincount(codes, minlength=edges.size + 1) / valid.size
    std = float(finite.std(ddof=1)) if finite.size > 1 else 0.0
    return NumericProfile(
        count=values.size,
        missing=missing,
        minimum=quantiles[0],
        maximum=quantiles[-1],
        mean=_fixed(float(finite.mean()), exponent),
        std=_round(std),
        quantiles=tuple(quantiles),
        edges=tuple(float(e) for e in edges),
        proportions=tuple(round(float(s), 5) for s in shares),
    )


def _categorical(column: Array) -> CategoricalProfile:
    if column.dtype.kind == "O":
        missing = np.equal(column, np.array(None, dtype=object)) | (column != column)
    else:
        missing = np.isnan(column) if column.dtype.kind == "f" else np.zeros(column.shape, dtype=bool)
    keys, counts = np.unique(np.frompyfunc(category_key, 1, 1)(column[~missing]).astype(str), return_counts=True)
    order = sorted(range(len(keys)), key=lambda i: (-counts[i], keys[i]))
    top = {str(keys[i]): int(counts[i]) for i in order[:TOP_CATEGORIES] if keys[i] != OTHER}
    rest = int(counts.sum()) - sum(top.values())
    if rest:
        top[OTHER] = rest
    return CategoricalProfile(column.size, _round(float(missing.mean())), top)


def _feature_from_dict(data: Mapping[str, Any]) -> FeatureProfile:
    if data["kind"] == "categorical":
        counts = {str(k): int(v) for k, v in data["counts"].items()}
        if len(counts) > TOP_CATEGORIES + 1 or any(v < 0 for v in counts.values()):
            raise ValueError(f"a categorical feature holds at most {TOP_CATEGORIES} categories and {OTHER}, counted")
        return CategoricalProfile(int(data["count"]), float(data["missing"]), counts)
    if data["kind"] != "numeric":
        raise ValueError(f"unknown feature kind {data['kind']!r}")
    edges = tuple(float(e) for e in data["edges"])
    proportions = tuple(float(p) for p in data["proportions"])
    if len(edges) > len(BIN_LEVELS) or (edges and len(proportions) != len(edges) + 1):
        raise ValueError(f"a numeric feature needs at most {len(BIN_LEVELS)} edges and one proportion more")
    if any(b <= a for a, b in itertools.pairwise(edges)):
        raise ValueError("bin edges must increase")
    low, high, mean, std = (None if data[k] is None else float(data[k]) for k in ("min", "max", "mean", "std"))
    quantiles = tuple(float(q) for q in data["quantiles"])
    count, missing = int(data["count"]), float(data["missing"])
    return NumericProfile(count, missing, low, high, mean, std, quantiles, edges, proportions)


def _round(value: float) -> float:
    return float(f"{value:.6g}")


def _exponent(spread: float) -> int | None:
    """Values are stored in steps of 10**exponent, 1/1,000 to 1/10,000 of the spread (None: no spread)."""
    return math.floor(math.log10(spread)) - 3 if spread > 0 and math.isfinite(spread) else None


def _fixed(value: float, exponent: int | None, direction: int = 0) -> float:
    """``value`` in steps of 10**exponent (6 significant digits without one): nearest, or below/above (-1/+1).

    Steps relative to the spread, not to the value, keep a feature like 1,000,000 + N(0, 1) resolved.
    """
    if exponent is None:
        exponent = math.floor(math.log10(abs(value))) - 5 if value else 0
    scaled = value / 10.0**exponent
    step = round(scaled) if direction == 0 else math.floor(scaled) if direction < 0 else math.ceil(scaled)
    result = float(f"{step}e{exponent}")
    if direction * (value - result) > 0:  # the division rounded the wrong way
        result = float(f"{step + direction}e{exponent}")
    return result
