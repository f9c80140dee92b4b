"""How far a shadow version's outputs agree with the primary's, for the same request.

Classes, strings and booleans agree element by element (the share that is equal); numbers agree
when ``allclose(rtol=1e-3, atol=1e-6)``, with mean/max absolute and mean relative differences
recorded. A missing output, or a shape or datatype mismatch, disagrees and says why.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = ["Agreement", "OutputAgreement", "compare_outputs"]


@dataclass(frozen=True, slots=True)
class OutputAgreement:
    """How one output of a shadow compares with the primary's.

    Integer, boolean, string and bytes outputs carry ``equal_rate`` (the share of equal elements);
    float outputs carry the absolute and relative differences over their finite elements.
    ``reason`` says why outputs could not be compared (missing, shape, datatype).
    """

    name: str
    agree: bool
    reason: str | None = None
    equal_rate: float | None = None
    mean_abs_diff: float | None = None
    max_abs_diff: float | None = None
    mean_rel_diff: float | None = None

    def to_dict(self) -> dict[str, object]:
        """A JSON-serialisable dict of the fields that are set."""
        fields = ("reason", "equal_rate", "mean_abs_diff", "max_abs_diff", "mean_rel_diff")
        out: dict[str, object] = {"name": self.name, "agree": self.agree}
        out.update({key: getattr(self, key) for key in fields if getattr(self, key) is not None})
        return out


@dataclass(frozen=True, slots=True)
class Agreement:
    """A shadow's outputs against the primary's: each output, and ``agree`` when all of them do."""

    agree: bool
    outputs: tuple[OutputAgreement, ...]

    @property
    def decision_agrees(self) -> bool:
        """Agreement on the *decision*: the label-like outputs (classes, strings) when there are any.

        A classifier's shadow that predicts the same class with slightly different probabilities
        agrees here; a regressor (only float outputs) agrees when its numbers are close.
        """
        decisions = [output for output in self.outputs if output.mean_abs_diff is None]
        return all(output.agree for output in decisions) if decisions else self.agree

    def to_dict(self) -> dict[str, object]:
        """A JSON-serialisable dict."""
        return {"agree": self.agree, "outputs": [output.to_dict() for output in self.outputs]}


_RTOL, _ATOL, _REL_EPS = 1e-3, 1e-6, 1e-12
_NUMERIC_KINDS = "biuf"
_TEXT_KINDS = "SUO"


def compare_outputs(primary: Mapping[str, np.ndarray], shadow: Mapping[str, np.ndarray]) -> Agreement:
    """Compare a shadow version's outputs with the primary's, output by output.

    Floats agree when ``allclose(shadow, primary, rtol=1e-3, atol=1e-6)`` (NaN equals NaN); every
    other datatype must be equal element for element. An output the primary returned that the
    shadow lacks, or one with another shape, disagrees; outputs only the shadow has are ignored.
    """
    results = tuple(_compare_output(name, array, shadow.get(name)) for name, array in primary.items())
    return Agreement(all(result.agree for result in results), results)


def _compare_output(name: str, a: np.ndarray, b: np.ndarray | None) -> OutputAgreement:
    if b is None:
        return OutputAgreement(name, False, reason="missing from the shadow's outputs")
    if a.shape != b.shape:
        return OutputAgreement(name, False, reason=f"shape {list(b.shape)} differs from the primary's {list(a.shape)}")
    ka, kb = a.dtype.kind, b.dtype.kind
    if ka in _NUMERIC_KINDS and kb in _NUMERIC_KINDS and "f" in (ka, kb):
        return _compare_floats(name, a.astype(np.float64, copy=False), b.astype(np.float64, copy=False))
    comparable = (
        (ka in _NUMERIC_KINDS and kb in _NUMERIC_KINDS) or (ka == kb) or (ka in _TEXT_KINDS and "O" in (ka, kb))
    )
    if not comparable:
        return OutputAgreement(name, False, reason=f"datatype {b.dtype} differs from the primary's {a.dtype}")
    equal = np.asarray(a == b, dtype=bool)
    rate = float(np.count_nonzero(equal)) / equal.size if equal.size else 1.0
    return OutputAgreement(name, rate == 1.0, equal_rate=rate)


def _compare_floats(name: str, a: np.ndarray, b: np.ndarray) -> OutputAgreement:
    agree = bool(np.allclose(b, a, rtol=_RTOL, atol=_ATOL, equal_nan=True))
    with np.errstate(invalid="ignore"):  # inf - inf is NaN, and then skipped as non-finite
        diff = np.abs(a - b)
    finite = np.isfinite(diff)
    reference = np.abs(a)
    if not finite.all():
        diff, reference = diff[finite], reference[finite]
    if diff.size == 0:
        return OutputAgreement(name, agree, mean_abs_diff=0.0, max_abs_diff=0.0, mean_rel_diff=0.0)
    relative = diff / np.maximum(reference, _REL_EPS)
    return OutputAgreement(
        name,
        agree,
        mean_abs_diff=float(diff.mean()),
        max_abs_diff=float(diff.max()),
        mean_rel_diff=float(relative.mean()),
    )


def row_agreement(
    primary: Mapping[str, np.ndarray], shadow: Mapping[str, np.ndarray], rows: int
) -> np.ndarray[Any, np.dtype[np.bool_]]:
    """Per row, whether the shadow's *decision* agrees with the primary's (vectorised over a batch).

    The label-like outputs (integers, booleans, strings) decide when there are any: a row agrees
    when all of them are equal in that row. Otherwise the float outputs decide: a row agrees when
    they are close (``rtol=1e-3, atol=1e-6``). A missing output or a shape mismatch disagrees in
    every row.
    """
    labels: list[tuple[np.ndarray, np.ndarray]] = []
    floats: list[tuple[np.ndarray, np.ndarray]] = []
    for name, a in primary.items():
        b = shadow.get(name)
        if b is None or a.shape != b.shape or a.ndim == 0 or a.shape[0] != rows:
            return np.zeros(rows, dtype=bool)
        ka, kb = a.dtype.kind, b.dtype.kind
        (floats if ka in _NUMERIC_KINDS and kb in _NUMERIC_KINDS and "f" in (ka, kb) else labels).append((a, b))
    agree = np.ones(rows, dtype=bool)
    for a, b in labels or floats:
        if labels:
            same = np.asarray(a == b, dtype=bool)
        else:
            same = np.isclose(b.astype(np.float64), a.astype(np.float64), rtol=_RTOL, atol=_ATOL, equal_nan=True)
        agree &= same.reshape(rows, -1).all(axis=1)
    return agree
