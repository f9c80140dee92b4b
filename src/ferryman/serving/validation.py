"""Checking a decoded request against a version's signature, before it reaches the model."""

from __future__ import annotations

from typing import Any

import numpy as np

from ferryman.errors import InvalidInput, ModelFailed
from ferryman.tensors import DATATYPES, InferenceRequest, Signature, datatype_of

__all__ = ["check_outputs", "validate_inputs"]

_INTEGER = frozenset({"INT8", "INT16", "INT32", "INT64", "UINT8", "UINT16", "UINT32", "UINT64"})
_FLOAT = frozenset({"FP16", "FP32", "FP64", "BF16"})


def _compatible(given: str, wanted: str) -> bool:
    """Coercions we allow: any integer to an integer or float type, any float to a float type."""
    if given == wanted:
        return True
    if wanted in _FLOAT:
        return given in _FLOAT or given in _INTEGER
    if wanted in _INTEGER:
        return given in _INTEGER
    return False


def validate_inputs(signature: Signature, request: InferenceRequest, label: str) -> dict[str, np.ndarray[Any, Any]]:
    """Return the request's inputs cast to the signature's dtypes, or raise InvalidInput naming the field.

    ``label`` names the model and version in messages (e.g. ``model 'iris' version 2``).
    """
    inputs = request.inputs
    if signature.open_inputs and not signature.inputs:
        return inputs
    for name in inputs:
        if signature.input(name) is None:
            expected = ", ".join(spec.name for spec in signature.inputs)
            raise InvalidInput(f"unknown input '{name}': {label} expects {expected}")
    checked: dict[str, np.ndarray[Any, Any]] = {}
    for spec in signature.inputs:
        array = inputs.get(spec.name)
        if array is None:
            raise InvalidInput(f"missing input '{spec.name}': {label} expects {spec.datatype} {list(spec.shape)}")
        given = request.declared_datatypes.get(spec.name) or datatype_of(array)
        if not _compatible(given, spec.datatype):
            raise InvalidInput(f"input '{spec.name}': datatype {given} does not match {label}'s {spec.datatype}")
        if not spec.shape_matches(array.shape):
            raise InvalidInput(
                f"input '{spec.name}': shape {list(array.shape)} does not match {label}'s "
                f"{list(spec.shape)} (-1 = any size)"
            )
        if given != spec.datatype:
            target = DATATYPES[spec.datatype]
            if target.kind in "iu" and array.size:
                limits = np.iinfo(target)
                if array.min() < limits.min or array.max() > limits.max:
                    raise InvalidInput(f"input '{spec.name}': a value is out of range for {spec.datatype}")
            array = array.astype(target, copy=False)
        if not spec.allow_nan and array.dtype.kind == "f" and np.isnan(array).any():
            raise InvalidInput(f"input '{spec.name}' contains NaN, which {label} does not accept")
        checked[spec.name] = array
    return checked


def check_outputs(
    signature: Signature,
    results: dict[str, np.ndarray[Any, Any]],
    wanted: list[str] | None,
    batch: int | None,
    label: str,
) -> tuple[dict[str, np.ndarray[Any, Any]], dict[str, str]]:
    """Pick the wanted outputs from a model's results and give each its V2 datatype.

    A model that returns too few outputs, or outputs whose first dimension disagrees with the
    input batch, fails loudly here instead of sending a caller someone else's rows.
    """
    declared = {spec.name: spec for spec in signature.outputs}
    names = wanted if wanted is not None else list(declared or results)
    outputs: dict[str, np.ndarray[Any, Any]] = {}
    datatypes: dict[str, str] = {}
    for name in names:
        if name not in results:
            if declared and name not in declared:
                raise InvalidInput(f"unknown output '{name}': {label} has outputs {', '.join(declared)}")
            raise ModelFailed(f"{label} returned no output '{name}'")
        array = np.asarray(results[name])
        spec = declared.get(name)
        if spec is not None and spec.datatype in DATATYPES and spec.datatype != "BF16":
            datatype = spec.datatype
            if array.dtype != DATATYPES[datatype]:
                array = array.astype(DATATYPES[datatype], copy=False)
        else:
            datatype = datatype_of(array)
        if (
            batch is not None
            and array.ndim
            and spec is not None
            and spec.shape
            and spec.shape[0] == -1
            and array.shape[0] != batch
        ):
            raise ModelFailed(f"{label} returned {array.shape[0]} rows for output '{name}' but got {batch} input rows")
        outputs[name] = array
        datatypes[name] = datatype
    return outputs, datatypes
