"""``ferryman predict``: one inference request from the command line."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from ferryman.cli.arguments import parse_input_option, parse_json_data, read_data_file
from ferryman.cli.connection import DEFAULT_URL, ApiKeyOption, JsonOption, UrlOption, connect, model_ref

if TYPE_CHECKING:
    import numpy as np

    from ferryman.client import Client

    Array = np.ndarray[Any, Any]

__all__ = ["predict", "register"]


def register(app: typer.Typer) -> None:
    """Add the predict command to ``app``."""
    app.command()(predict)


def predict(
    ref: Annotated[
        str,
        typer.Argument(metavar="NAME[:VERSION]", help="Model, optionally with a version or alias.", show_default=False),
    ],
    data: Annotated[
        str | None, typer.Option("--data", "-d", help="JSON (nested list) for the model's single input.")
    ] = None,
    inputs: Annotated[
        list[str] | None,
        typer.Option("--input", "-i", help="NAME=JSON for one input of a multi-input model (repeatable)."),
    ] = None,
    file: Annotated[
        Path | None, typer.Option("--file", "-f", help="A .npy or .csv file for the model's single input.")
    ] = None,
    outputs: Annotated[
        list[str] | None, typer.Option("--output", "-o", help="Only return this output (repeatable).")
    ] = None,
    binary: Annotated[bool, typer.Option("--binary", help="Use the V2 binary tensor extension.")] = False,
    url: UrlOption = DEFAULT_URL,
    api_key: ApiKeyOption = None,
    json_output: JsonOption = False,
) -> None:
    """Run inference and print the outputs, one row per example."""
    target = model_ref(ref, allow_alias=True)
    given = [flag for flag, value in (("--data", data), ("--input", inputs), ("--file", file)) if value]
    if len(given) != 1:
        raise typer.BadParameter(
            "give exactly one of --data, --input or --file" + (f" (got {', '.join(given)})" if given else ""),
            param_hint="inputs",
        )
    try:
        if data is not None:
            payload: Array | dict[str, Array] = parse_json_data(data)
        elif file is not None:
            payload = read_data_file(file)
        else:
            payload = dict(parse_input_option(item) for item in inputs or [])
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint=given[0]) from None
    with connect(url, api_key) as client:
        if isinstance(payload, dict):
            payload = _cast_to_signature(client, target.name, target.version, payload)
        result = client.infer(target.name, payload, version=target.version, outputs=outputs, binary=binary)
    from ferryman.cli.output import outputs_table, print_json, stdout

    if json_output:
        print_json(
            {
                "model_name": result.model_name,
                "model_version": result.model_version,
                "id": result.id,
                "parameters": result.parameters,
                "outputs": result.outputs,
            }
        )
        return
    title = result.model_name + (f":{result.model_version}" if result.model_version else "")
    stdout().print(outputs_table(result.outputs, title=title))


def _cast_to_signature(
    client: Client, name: str, version: int | str | None, inputs: dict[str, Array]
) -> dict[str, Array]:
    """Cast JSON-parsed inputs to the datatypes the model declares (JSON has only int and float)."""
    import numpy as np

    from ferryman.tensors import DATATYPES

    declared = {
        str(spec["name"]): str(spec["datatype"]) for spec in client.model_metadata(name, version).get("inputs") or []
    }
    cast: dict[str, Array] = {}
    for input_name, array in inputs.items():
        dtype = DATATYPES.get(declared.get(input_name, ""))
        if dtype is not None and dtype != np.dtype(object) and np.can_cast(array.dtype, dtype, "same_kind"):
            array = array.astype(dtype)
        cast[input_name] = array
    return cast
