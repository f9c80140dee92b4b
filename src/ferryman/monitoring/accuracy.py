"""Live accuracy: labelled feedback joined to what each version predicted, per time bucket.

Input is the model's labelled feedback rows (label, the version that served the request and what
it predicted, when the server could join them; ``registry/feedback_windows.py``). A version is a
*regressor* when a joined prediction is a float and its label a number — it gets MAE and RMSE (in
the label's units); otherwise a *classifier* — accuracy and macro-F1 (fractions, 0-1), labels and
predictions compared as JSON values (``1`` equals ``1.0``). Rows that cannot be judged are counted,
never dropped silently: ``unmatched`` (no version or no prediction known: the request id was not
one this server answered recently, or it was answered outside a traffic policy or rollout), and
for regressors ``unusable`` (a non-numeric label or prediction).

Buckets end at ``now``: bucket ``i`` of ``n`` covers ``[now - (n - i) * window, now - (n - i - 1) * window)``.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from prometheus_client.core import GaugeMetricFamily, Metric

from ferryman.registry.feedback_windows import LabelledRow

__all__ = ["MAX_BUCKETS", "Figures", "accuracy_document", "accuracy_families", "figures_of"]

MAX_BUCKETS = 1000


@dataclass(slots=True)
class Figures:
    """What one version's labelled feedback in one span says."""

    kind: str = "classification"
    n: int = 0
    correct: int = 0
    pairs: list[tuple[str, str]] = field(default_factory=list)
    absolute: float = 0.0
    squared: float = 0.0
    unmatched: int = 0
    unusable: int = 0

    @property
    def accuracy(self) -> float | None:
        """Correct over judged (classification), None without judged rows."""
        return self.correct / self.n if self.n and self.kind == "classification" else None

    @property
    def macro_f1(self) -> float | None:
        """Unweighted mean of per-class F1 over every class seen as a label or a prediction."""
        if not self.n or self.kind != "classification":
            return None
        classes = {label for label, _ in self.pairs} | {prediction for _, prediction in self.pairs}
        scores = []
        for cls in classes:
            tp = sum(1 for label, prediction in self.pairs if label == cls and prediction == cls)
            fp = sum(1 for label, prediction in self.pairs if label != cls and prediction == cls)
            fn = sum(1 for label, prediction in self.pairs if label == cls and prediction != cls)
            scores.append(2 * tp / (2 * tp + fp + fn))
        return sum(scores) / len(scores)

    @property
    def mae(self) -> float | None:
        """Mean absolute error (regression)."""
        return self.absolute / self.n if self.n and self.kind == "regression" else None

    @property
    def rmse(self) -> float | None:
        """Root mean squared error (regression)."""
        return math.sqrt(self.squared / self.n) if self.n and self.kind == "regression" else None

    def value(self, signal: str) -> float | None:
        """One of live_accuracy, live_macro_f1, live_mae, live_rmse."""
        return {
            "live_accuracy": self.accuracy,
            "live_macro_f1": self.macro_f1,
            "live_mae": self.mae,
            "live_rmse": self.rmse,
        }[signal]

    def to_dict(self) -> dict[str, Any]:
        """JSON: n and the kind's figures, with the unmatched and unusable counts."""
        document: dict[str, Any] = {"n": self.n}
        if self.kind == "regression":
            document |= {"mae": self.mae, "rmse": self.rmse, "unusable": self.unusable}
        else:
            document |= {"accuracy": self.accuracy, "macro_f1": self.macro_f1}
        document["unmatched"] = self.unmatched
        return document


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        return None
    return float(value)


def _key(value: Any) -> str:
    """A class label as comparable text (whole floats as integers, so ``1.0`` matches ``1``)."""
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    return json.dumps(value, sort_keys=True)


def _is_regression(row: LabelledRow) -> bool:
    return isinstance(row.prediction, float) and _number(row.label) is not None


def figures_of(rows: Iterable[LabelledRow], kind: str | None = None) -> Figures:
    """The figures of one version's rows (``kind`` decided from the rows unless given)."""
    rows = list(rows)
    joined = [row for row in rows if row.prediction is not None]
    if kind is None:
        kind = "regression" if any(_is_regression(row) for row in joined) else "classification"
    figures = Figures(kind=kind, unmatched=len(rows) - len(joined))
    for row in joined:
        if kind == "regression":
            label, prediction = _number(row.label), _number(row.prediction)
            if label is None or prediction is None:
                figures.unusable += 1
                continue
            figures.n += 1
            figures.absolute += abs(label - prediction)
            figures.squared += (label - prediction) ** 2
        else:
            pair = (_key(row.label), _key(row.prediction))
            figures.n += 1
            figures.correct += pair[0] == pair[1]
            figures.pairs.append(pair)
    return figures


def accuracy_document(
    name: str,
    rows: list[LabelledRow],
    *,
    now: datetime,
    window_s: float,
    buckets: int,
    version: int | None = None,
) -> dict[str, Any]:
    """The accuracy endpoint's JSON: per version, per bucket and in total; unmatched rows per bucket."""
    start = now - timedelta(seconds=window_s * buckets)
    edges = [start + timedelta(seconds=window_s * index) for index in range(buckets + 1)]
    by_version: dict[int, list[list[LabelledRow]]] = {}
    unknown: list[int] = [0] * buckets
    for row in rows:
        if not start <= row.received_at <= now:
            continue
        index = min(int((row.received_at - start).total_seconds() // window_s), buckets - 1)
        if row.version is None:
            unknown[index] += 1
            continue
        if version is not None and row.version != version:
            continue
        by_version.setdefault(row.version, [[] for _ in range(buckets)])[index].append(row)
    versions = []
    for number in sorted(by_version):
        spans = by_version[number]
        total = figures_of(row for span in spans for row in span)
        versions.append(
            {
                "version": number,
                "kind": total.kind,
                "total": total.to_dict(),
                "buckets": [
                    {
                        "start": edges[index].isoformat(),
                        "end": edges[index + 1].isoformat(),
                        **figures_of(span, total.kind).to_dict(),
                    }
                    for index, span in enumerate(spans)
                ],
            }
        )
    return {
        "model": name,
        "window": window_s,
        "buckets": buckets,
        "start": start.isoformat(),
        "end": now.isoformat(),
        "versions": versions,
        # Labels that named no version the server could find: unknown or expired request ids.
        "unmatched": {
            "total": sum(unknown),
            "buckets": [
                {"start": edges[index].isoformat(), "end": edges[index + 1].isoformat(), "count": count}
                for index, count in enumerate(unknown)
            ],
        },
    }


def accuracy_families(snapshot: dict[tuple[str, int], Figures], window_s: float) -> Iterator[Metric]:
    """``ferryman_live_*`` gauges over the last window, from the latest refresh."""
    labels = ["model", "version"]
    span = f"over the last {window_s:g} s"
    accuracy = GaugeMetricFamily(
        "ferryman_live_accuracy", f"Share of labelled predictions that were right {span} (0-1).", labels=labels
    )
    f1 = GaugeMetricFamily(
        "ferryman_live_macro_f1", f"Macro-averaged F1 of labelled predictions {span} (0-1).", labels=labels
    )
    mae = GaugeMetricFamily("ferryman_live_mae", f"Mean absolute error {span}, in the label's units.", labels=labels)
    rmse = GaugeMetricFamily(
        "ferryman_live_rmse", f"Root mean squared error {span}, in the label's units.", labels=labels
    )
    labelled = GaugeMetricFamily("ferryman_live_labelled", f"Labelled predictions judged {span}.", labels=labels)
    for (model, version), figures in sorted(snapshot.items()):
        key = [model, str(version)]
        labelled.add_metric(key, figures.n)
        for family, value in (
            (accuracy, figures.accuracy),
            (f1, figures.macro_f1),
            (mae, figures.mae),
            (rmse, figures.rmse),
        ):
            if value is not None:
                family.add_metric(key, value)
    yield from (accuracy, f1, mae, rmse, labelled)
