"""Alert rules: what a rule says, and its validation (pure: shared by the server and the CLI).

A rule watches one *signal* of the versions of the models it names (a model name or an fnmatch
pattern, optionally one version), compares it with a threshold over a time window, and fires when
the comparison has held for ``for`` seconds. Every error is an InvalidInput naming the field.

Signals and their units:

- ``error_rate``: model failures and missed deadlines over requests in the window (fraction, 0-1);
- ``p99_latency_ms``: 99th percentile request latency in the window (milliseconds);
- ``drift_score``: the latest drift report's largest PSI, or one ``feature``'s PSI (dimensionless);
- ``quality_nan``, ``quality_out_of_range``, ``quality_unseen``, ``quality_rejected``: data-quality
  issues counted in the window (values; rejected requests for ``quality_rejected``), over every
  feature or one ``feature``;
- ``live_accuracy``, ``live_macro_f1`` (fractions), ``live_mae``, ``live_rmse`` (the label's units):
  from labelled feedback received in the window.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any

from ferryman.errors import InvalidInput
from ferryman.registry.rollout_spec import parse_duration

__all__ = [
    "COMPARISONS",
    "FEATURE_SIGNALS",
    "SEVERITIES",
    "SIGNALS",
    "AlertRule",
    "parse_rule",
    "validate_rule_name",
    "validate_severity",
]

#: Every signal a rule may watch, with its unit (docs/monitoring.md).
SIGNALS: dict[str, str] = {
    "error_rate": "fraction",
    "p99_latency_ms": "milliseconds",
    "drift_score": "PSI",
    "quality_nan": "count",
    "quality_out_of_range": "count",
    "quality_unseen": "count",
    "quality_rejected": "count",
    "live_accuracy": "fraction",
    "live_macro_f1": "fraction",
    "live_mae": "label units",
    "live_rmse": "label units",
}
#: Signals that may name one ``feature``.
FEATURE_SIGNALS = frozenset(
    {"drift_score", "quality_nan", "quality_out_of_range", "quality_unseen", "quality_rejected"}
)
COMPARISONS = (">", ">=", "<", "<=")
#: Severities, lowest first (a webhook's ``min_severity`` filters by this order).
SEVERITIES = ("info", "warning", "critical")

_FIELDS = (
    "name",
    "model",
    "version",
    "signal",
    "feature",
    "comparison",
    "threshold",
    "window",
    "for",
    "severity",
    "min_samples",
    "description",
)
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}", re.ASCII)
_MODEL_PATTERN = re.compile(r"[A-Za-z0-9._*?\[\]!-]{1,128}", re.ASCII)
_MAX_FEATURE = 256
_MAX_DESCRIPTION = 1000
_MAX_FOR_S = 86400.0


@dataclass(frozen=True, slots=True)
class AlertRule:
    """One validated rule; ``window_s`` and ``for_s`` in seconds."""

    name: str
    model: str
    signal: str
    comparison: str
    threshold: float
    window_s: float
    for_s: float = 0.0
    severity: str = "warning"
    version: int | None = None
    feature: str | None = None
    min_samples: int = 1
    description: str = ""

    def breached(self, value: float) -> bool:
        """Whether ``value`` satisfies the rule's comparison (the alerting condition)."""
        if self.comparison == ">":
            return value > self.threshold
        if self.comparison == ">=":
            return value >= self.threshold
        if self.comparison == "<":
            return value < self.threshold
        return value <= self.threshold

    def to_dict(self) -> dict[str, Any]:
        """The rule as JSON (what the API returns and the registry stores)."""
        return {
            "name": self.name,
            "model": self.model,
            "version": self.version,
            "signal": self.signal,
            "feature": self.feature,
            "comparison": self.comparison,
            "threshold": self.threshold,
            "window": self.window_s,
            "for": self.for_s,
            "severity": self.severity,
            "min_samples": self.min_samples,
            "description": self.description,
        }


def validate_rule_name(value: Any, field: str = "name") -> str:
    """A rule or webhook name: letters, digits, ``.``, ``_``, ``-``, at most 128 characters."""
    if not isinstance(value, str) or not _NAME.fullmatch(value):
        raise InvalidInput(f"{field}: expected a name matching [A-Za-z0-9][A-Za-z0-9._-]{{0,127}}, got {value!r}")
    return value


def validate_severity(value: Any, field: str = "severity") -> str:
    """One of :data:`SEVERITIES`."""
    if value not in SEVERITIES:
        raise InvalidInput(f"{field}: expected one of {', '.join(SEVERITIES)}, got {value!r}")
    return str(value)


def parse_rule(body: Any) -> AlertRule:
    """Validate a rule document (the API body; ``window`` and ``for`` like ``5m``); InvalidInput names the field."""
    if not isinstance(body, dict):
        raise InvalidInput("body: expected a JSON object describing the rule")
    unknown = sorted(set(body) - set(_FIELDS))
    if unknown:
        raise InvalidInput(f"{unknown[0]}: unknown field (fields: {', '.join(_FIELDS)})")
    for required in ("name", "model", "signal", "comparison", "threshold"):
        if body.get(required) is None:
            raise InvalidInput(f"{required}: required")
    name = validate_rule_name(body["name"])
    model = body["model"]
    if not isinstance(model, str) or not _MODEL_PATTERN.fullmatch(model):
        raise InvalidInput(f"model: expected a model name or a pattern such as 'fraud-*', got {model!r}")
    signal = body["signal"]
    if signal not in SIGNALS:
        raise InvalidInput(f"signal: expected one of {', '.join(SIGNALS)}, got {signal!r}")
    comparison = body["comparison"]
    if comparison not in COMPARISONS:
        raise InvalidInput(f"comparison: expected one of {', '.join(COMPARISONS)}, got {comparison!r}")
    threshold = body["threshold"]
    if isinstance(threshold, bool) or not isinstance(threshold, int | float) or not math.isfinite(threshold):
        raise InvalidInput(f"threshold: expected a finite number, got {threshold!r}")
    version = body.get("version")
    if version is not None and (isinstance(version, bool) or not isinstance(version, int) or version < 1):
        raise InvalidInput(f"version: expected a positive version number, got {version!r}")
    feature = body.get("feature")
    if feature is not None:
        if signal not in FEATURE_SIGNALS:
            raise InvalidInput(f"feature: only {', '.join(sorted(FEATURE_SIGNALS))} can name a feature")
        if not isinstance(feature, str) or not 0 < len(feature) <= _MAX_FEATURE:
            raise InvalidInput(f"feature: expected a feature name of 1 to {_MAX_FEATURE} characters, got {feature!r}")
    window_s = parse_duration(body.get("window", "5m"), "window")
    for_s = _for_duration(body.get("for", 0))
    severity = validate_severity(body.get("severity", "warning"))
    min_samples = body.get("min_samples", 1)
    if isinstance(min_samples, bool) or not isinstance(min_samples, int) or min_samples < 1:
        raise InvalidInput(f"min_samples: expected a positive integer, got {min_samples!r}")
    description = body.get("description", "")
    if not isinstance(description, str) or len(description) > _MAX_DESCRIPTION:
        raise InvalidInput(f"description: expected text of at most {_MAX_DESCRIPTION} characters")
    return AlertRule(
        name=name,
        model=model,
        signal=signal,
        comparison=comparison,
        threshold=float(threshold),
        window_s=window_s,
        for_s=for_s,
        severity=severity,
        version=version,
        feature=feature,
        min_samples=min_samples,
        description=description,
    )


def _for_duration(value: Any) -> float:
    if value in (0, "0", "0s"):
        return 0.0
    seconds = parse_duration(value, "for")
    if seconds > _MAX_FOR_S:
        raise InvalidInput(f"for: at most 1d, got {value!r}")
    return seconds
