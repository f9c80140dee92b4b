"""Parsing a rollout's plan: steps, step interval and guards, from the API body or the command line.

Pure functions (no database, no heavy imports) so the CLI checks its options with the same rules
the server applies. Every error is an InvalidInput naming the field (``steps[2]``,
``guards.max_error_rate``) or the option it was given as.
"""

from __future__ import annotations

import math
import re
from typing import Any

from ferryman.errors import InvalidInput

__all__ = [
    "GUARDS",
    "MAX_INTERVAL_S",
    "MAX_STEPS",
    "MIN_INTERVAL_S",
    "parse_duration",
    "parse_fraction",
    "parse_guards",
    "parse_milliseconds",
    "parse_steps",
]

MIN_INTERVAL_S = 1.0
MAX_INTERVAL_S = 30 * 86400.0
MAX_STEPS = 100

#: The guards a rollout may carry; the controller checks them before every step.
GUARDS = ("max_error_rate", "max_p99_ms", "min_agreement")

_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d)")


def _number(value: Any) -> float | None:
    """``value`` as a finite float, or None when it is not a JSON number (booleans are not)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    number = float(value)
    return number if math.isfinite(number) else None


def _compact(number: float) -> float:
    """5.0 → 5, so whole numbers read back as they were written."""
    return int(number) if number.is_integer() else number


def parse_duration(value: Any, field: str = "interval") -> float:
    """Seconds from a number of seconds or a text like ``30s``, ``10m``, ``1h``, ``1h30m``, ``2d``."""
    seconds = _number(value)
    if seconds is None and isinstance(value, str):
        text = value.strip().lower().replace(" ", "")
        try:
            seconds = float(text)
        except ValueError:
            parts = _DURATION_PART.findall(text)
            if parts and "".join(number + unit for number, unit in parts) == text:
                seconds = sum(float(number) * _UNITS[unit] for number, unit in parts)
        if seconds is not None and not math.isfinite(seconds):
            seconds = None
    if seconds is None:
        raise InvalidInput(f"{field}: expected a duration like 30s, 10m or 1h (or a number of seconds), got {value!r}")
    if not MIN_INTERVAL_S <= seconds <= MAX_INTERVAL_S:
        raise InvalidInput(f"{field}: must be from 1s to 30d, got {value!r}")
    return seconds


def parse_fraction(value: Any, field: str) -> float:
    """A fraction from 0 to 1, given as a number (``0.01``) or a percentage (``"1%"``, ``"0.5%"``)."""
    fraction = _number(value)
    percent = False
    if fraction is None and isinstance(value, str):
        text = value.strip()
        percent = text.endswith("%")
        try:
            fraction = float(text[:-1] if percent else text)
        except ValueError:
            fraction = None
        if fraction is not None and not math.isfinite(fraction):
            fraction = None
        if fraction is not None and percent:
            fraction /= 100.0
    if fraction is None:
        raise InvalidInput(f"{field}: expected a fraction from 0 to 1 or a percentage like 1%, got {value!r}")
    if not 0.0 <= fraction <= 1.0:
        hint = f" (did you mean {value}%?)" if not percent and 1.0 < fraction <= 100.0 else ""
        raise InvalidInput(f"{field}: must be from 0 to 1 (0% to 100%), got {value!r}{hint}")
    return fraction


def parse_milliseconds(value: Any, field: str) -> float:
    """A positive number of milliseconds, given as a number or a text (``50``, ``"50ms"``)."""
    number = _number(value)
    if number is None and isinstance(value, str):
        try:
            number = float(value.strip().removesuffix("ms").strip())
        except ValueError:
            number = None
        if number is not None and not math.isfinite(number):
            number = None
    if number is None or number <= 0:
        raise InvalidInput(f"{field}: expected a positive number of milliseconds, like 50, got {value!r}")
    return _compact(number)


def parse_steps(value: Any, field: str = "steps") -> tuple[float, ...]:
    """Percentages of traffic for the new version, strictly increasing and ending at 100.

    Accepts a list of numbers or a comma-separated text (``"5,25,50,100"``).
    """
    items: Any = value
    if isinstance(value, str):
        items = []
        for part in value.split(","):
            text = part.strip().rstrip("%").strip()
            try:
                items.append(float(text))
            except ValueError:
                items.append(part.strip())
    if not isinstance(items, list | tuple) or not items:
        raise InvalidInput(f"{field}: expected a list of percentages ending at 100, like [5, 25, 50, 100]")
    if len(items) > MAX_STEPS:
        raise InvalidInput(f"{field}: at most {MAX_STEPS} steps, got {len(items)}")
    steps: list[float] = []
    for index, item in enumerate(items):
        number = _number(item)
        if number is None or not 0.0 < number <= 100.0:
            raise InvalidInput(f"{field}[{index}]: expected a percentage above 0 and at most 100, got {item!r}")
        if steps and number <= steps[-1]:
            raise InvalidInput(f"{field}[{index}]: steps must increase, but {item!r} follows {steps[-1]!r}")
        steps.append(_compact(number))
    if steps[-1] != 100:
        raise InvalidInput(f"{field}: the last step must be 100 (all traffic on the new version), got {steps[-1]!r}")
    return tuple(steps)


def parse_guards(value: Any, field: str = "guards") -> dict[str, float]:
    """``{max_error_rate: fraction, max_p99_ms: milliseconds, min_agreement: fraction}``, each optional."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise InvalidInput(f"{field}: expected an object with any of {', '.join(GUARDS)}")
    guards: dict[str, float] = {}
    for key, item in value.items():
        if item is None:
            continue
        if key in ("max_error_rate", "min_agreement"):
            guards[key] = parse_fraction(item, f"{field}.{key}")
        elif key == "max_p99_ms":
            guards[key] = parse_milliseconds(item, f"{field}.{key}")
        else:
            raise InvalidInput(f"{field}.{key}: unknown guard (known: {', '.join(GUARDS)})")
    return guards
