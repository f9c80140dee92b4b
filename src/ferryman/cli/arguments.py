"""Parsing of CLI arguments: ``NAME[:VERSION]`` references and inference data (JSON, CSV, .npy).

Every function raises :class:`ValueError` with a message fit for the user; the commands turn
it into a usage error (exit 2).
"""

from __future__ import annotations

import csv
import io
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import numpy as np

    Array = np.ndarray[Any, Any]

__all__ = [
    "ModelRef",
    "is_number",
    "parse_csv",
    "parse_input_option",
    "parse_json_data",
    "parse_ref",
    "read_data_file",
]

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
_ALIAS = re.compile(r"[A-Za-z][A-Za-z0-9._-]{0,63}")


@dataclass(frozen=True, slots=True)
class ModelRef:
    """A model name with an optional version number or alias, as written on the command line."""

    name: str
    version: int | str | None = None

    def __str__(self) -> str:
        return self.name if self.version is None else f"{self.name}:{self.version}"


def parse_ref(text: str, *, version: str = "optional", allow_alias: bool = False) -> ModelRef:
    """Parse ``NAME`` or ``NAME:VERSION``.

    ``version`` is ``"optional"``, ``"required"`` or ``"forbidden"``. The version is a positive
    integer, or with ``allow_alias`` also an alias name such as ``production``.
    """
    name, sep, tail = text.partition(":")
    if not _NAME.fullmatch(name):
        raise ValueError(
            f"invalid model name {name!r} in {text!r}: use letters, digits, '.', '_' or '-' "
            "(starting with a letter or digit)"
        )
    if not sep:
        if version == "required":
            raise ValueError(f"expected NAME:VERSION, got {text!r} (for example {name}:1)")
        return ModelRef(name)
    if version == "forbidden":
        raise ValueError(f"expected a model NAME without a version, got {text!r}")
    if tail.isdigit() and int(tail) > 0:
        return ModelRef(name, int(tail))
    if allow_alias and _ALIAS.fullmatch(tail):
        return ModelRef(name, tail)
    wanted = "a positive version number or an alias" if allow_alias else "a positive version number"
    raise ValueError(f"invalid version {tail!r} in {text!r}: expected {wanted}")


def parse_json_data(text: str) -> Array:
    """Parse a JSON number, string or (nested) list into an array."""
    import json

    import numpy as np

    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"not valid JSON ({exc.msg} at position {exc.pos}): {_clip(text)}") from None
    if isinstance(value, dict):
        raise ValueError("expected a (nested) list of values, got a JSON object")
    try:
        array = np.asarray(value)
    except ValueError as exc:
        raise ValueError(f"the nested lists are ragged: {exc}") from None
    if array.dtype == object:
        raise ValueError("the nested lists are ragged or mix types")
    return array


def parse_input_option(text: str) -> tuple[str, Array]:
    """Parse ``--input NAME=JSON``."""
    name, sep, data = text.partition("=")
    name = name.strip()
    if not sep or not name:
        raise ValueError(f"expected NAME=JSON for --input, got {_clip(text)!r}")
    return name, parse_json_data(data)


def parse_csv(text: str) -> Array:
    """Parse numeric CSV rows into a 2-D float array; a first row that is not numeric is a header."""
    import numpy as np

    rows = [row for row in csv.reader(io.StringIO(text)) if row and any(cell.strip() for cell in row)]
    if rows and not all(is_number(cell) for cell in rows[0]):
        rows = rows[1:]
    if not rows:
        raise ValueError("the CSV has no data rows")
    width = len(rows[0])
    values: list[list[float]] = []
    for number, row in enumerate(rows, start=1):
        if len(row) != width:
            raise ValueError(f"CSV data row {number} has {len(row)} values, expected {width}")
        try:
            values.append([float(cell) for cell in row])
        except ValueError:
            raise ValueError(f"CSV data row {number} is not numeric: {_clip(','.join(row))}") from None
    array = np.asarray(values, dtype=np.float64)
    if np.array_equal(array, np.trunc(array)) and all(
        "." not in cell and "e" not in cell.lower() for row in rows for cell in row
    ):
        return array.astype(np.int64)
    return array


def read_data_file(path: Path) -> Array:
    """Read inference data from a ``.npy`` or ``.csv`` file."""
    suffix = path.suffix.lower()
    if not path.is_file():
        raise ValueError(f"{path} is not a file")
    if suffix == ".npy":
        from ferryman.errors import InvalidInput
        from ferryman.runtimes.samples import read_sample

        try:
            return read_sample(path)
        except InvalidInput as exc:
            raise ValueError(f"{path}: not a readable .npy file ({exc})") from None
    if suffix == ".csv":
        # Not read_sample's CSV reading: a pushed sample may hold text and empty cells, but data to
        # predict on is numbers only, and whole-number columns stay integers for integer inputs.
        try:
            return parse_csv(path.read_text())
        except ValueError as exc:
            raise ValueError(f"{path}: {exc}") from None
    raise ValueError(f"{path}: expected a .npy or .csv file")


def is_number(text: str) -> bool:
    """True when ``text`` reads as a number (what a CSV data row and a numeric column hold)."""
    try:
        float(text)
    except ValueError:
        return False
    return True


def _clip(text: str, limit: int = 60) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"
