"""Sample inputs pushed with a version: reading them, and completing a signature from them.

A sample shows what the model is really fed and what it really returns, which fills in what
the runtime cannot declare by itself (a custom model's open inputs, a multi-output
regressor's output shape, a classifier's label type).
"""

from __future__ import annotations

import csv
import io
import math
from pathlib import Path
from typing import Any

import numpy as np

from ferryman.errors import InvalidInput
from ferryman.runtimes.base import Runtime
from ferryman.tensors import Signature, TensorSpec, datatype_of, numpy_dtype

__all__ = ["infer_signature", "read_sample"]


def read_sample(path: Path) -> np.ndarray[Any, Any]:
    """Read a ``.npy`` or ``.csv`` sample (CSV: optional header row; numbers → float64, else str)."""
    suffix = path.suffix.lower()
    if suffix == ".npy":
        try:
            return np.asarray(np.load(path, allow_pickle=False))
        except (OSError, ValueError) as exc:
            raise InvalidInput(f"cannot read sample {path.name}: {exc}") from None
    if suffix == ".csv":
        return _read_csv(path)
    raise InvalidInput(f"sample {path.name} must be a .npy or .csv file")


def infer_signature(runtime: Runtime, sample: np.ndarray[Any, Any] | None) -> Signature:
    """Return the runtime's signature, completed by running ``sample`` through the model.

    The sample fills the one input (or names an open-input model's input ``input``): its
    datatype where the model declares none or a different kind, its shape where the model
    declares none or another rank. Outputs take the datatype and shape of what the model
    returned for the sample.
    """
    declared = runtime.signature()
    if sample is None:
        return declared
    if sample.ndim == 0:
        raise InvalidInput("the sample needs a batch dimension (one row per example)")
    if len(declared.inputs) == 1:
        base: TensorSpec | None = declared.inputs[0]
    elif not declared.inputs and declared.open_inputs:
        base = None
    else:
        names = ", ".join(spec.name for spec in declared.inputs) or "none"
        raise InvalidInput(f"a sample fills one input, but the model declares these: {names}")
    spec = _input_spec(base, sample)
    try:
        results = runtime.predict({spec.name: sample.astype(numpy_dtype(spec.datatype), copy=False)})
    except Exception as exc:
        raise InvalidInput(f"the sample does not run through the model: {type(exc).__name__}: {exc}") from exc
    return Signature(
        inputs=(spec,),
        outputs=_output_specs(declared.outputs, results),
        open_inputs=declared.open_inputs and base is not None,
    )


def _input_spec(base: TensorSpec | None, sample: np.ndarray[Any, Any]) -> TensorSpec:
    sampled = datatype_of(sample)
    has_nan = sample.dtype.kind == "f" and bool(np.isnan(sample).any())
    if base is None:
        return TensorSpec("input", sampled, _batched(sample.shape), allow_nan=has_nan)
    # A model's own numeric type wins over the sample's (a CSV is always float64); a sample of
    # another kind (text for a declared number) shows what the model really takes.
    datatype = base.datatype if _kind(base.datatype) == _kind(sampled) else sampled
    return TensorSpec(base.name, datatype, _merge(base, sample.shape), allow_nan=base.allow_nan or has_nan)


def _output_specs(declared: tuple[TensorSpec, ...], results: dict[str, np.ndarray[Any, Any]]) -> tuple[TensorSpec, ...]:
    if not declared:
        return tuple(_from_result(name, np.asarray(value)) for name, value in results.items())
    specs = []
    for spec in declared:
        if spec.name not in results:
            raise InvalidInput(f"the model did not return its declared output {spec.name!r} for the sample")
        actual = _from_result(spec.name, np.asarray(results[spec.name]))
        specs.append(TensorSpec(spec.name, actual.datatype, _merge(spec, actual.shape), spec.allow_nan))
    return tuple(specs)


def _from_result(name: str, value: np.ndarray[Any, Any]) -> TensorSpec:
    return TensorSpec(name, datatype_of(value), _batched(value.shape))


def _merge(declared: TensorSpec, shape: tuple[int, ...]) -> tuple[int, ...]:
    """Keep a declared shape of the same rank (its -1s may be dynamic); check its fixed sizes."""
    if len(declared.shape) != len(shape):
        return _batched(shape)
    if not declared.shape_matches(shape):
        raise InvalidInput(
            f"the sample's {declared.name!r} has shape {list(shape)}, but the model declares {list(declared.shape)}"
        )
    return declared.shape


def _batched(shape: tuple[int, ...]) -> tuple[int, ...]:
    return (-1, *shape[1:]) if shape else ()


def _kind(datatype: str) -> str:
    return "text" if datatype == "BYTES" else "number"


def _read_csv(path: Path) -> np.ndarray[Any, Any]:
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise InvalidInput(f"cannot read sample {path.name}: {exc}") from None
    rows = [row for row in csv.reader(io.StringIO(text)) if any(cell.strip() for cell in row)]
    if rows and not all(_is_number(cell) for cell in rows[0]):
        rows = rows[1:]  # a header row names the columns
    if not rows:
        raise InvalidInput(f"sample {path.name} has no data rows")
    if len({len(row) for row in rows}) != 1:
        raise InvalidInput(f"sample {path.name} has rows of different lengths")
    if all(_is_number(cell) for row in rows for cell in row):
        return np.array([[_number(cell) for cell in row] for row in rows], dtype=np.float64)
    return np.array(rows, dtype=object)


def _is_number(cell: str) -> bool:
    try:
        _number(cell)
    except ValueError:
        return False
    return True


def _number(cell: str) -> float:
    """A CSV cell as a float; an empty cell is a missing value (NaN)."""
    return math.nan if not cell.strip() else float(cell)
