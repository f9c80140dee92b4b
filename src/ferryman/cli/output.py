"""Rendering of API results for people (rich tables) and machines (``--json``)."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import datetime
from typing import Any

import numpy as np
from rich.console import Console
from rich.table import Table

from ferryman.cli.arguments import is_number

__all__ = [
    "alias_history_table",
    "aliases_table",
    "format_time",
    "format_value",
    "human_size",
    "jsonable",
    "model_table",
    "models_table",
    "output_rows",
    "outputs_table",
    "print_json",
    "short_sha",
    "signature_table",
    "stdout",
    "upload_progress",
    "version_table",
    "versions_table",
]

Array = np.ndarray[Any, Any]

#: Columns of a 2-D output shown one per value; wider outputs are shown as one cell per row.
_MAX_SPREAD_COLUMNS = 8


def stdout() -> Console:
    """A console on the current stdout (looked up on each call so test runners can capture it)."""
    return Console(file=sys.stdout, highlight=False, soft_wrap=False)


def jsonable(value: Any) -> Any:
    """Convert arrays, numpy scalars and bytes into plain JSON values."""
    if isinstance(value, np.ndarray):
        return jsonable(value.tolist())
    if isinstance(value, np.generic):
        return jsonable(value.item())
    if isinstance(value, bytes):
        return value.decode(errors="replace")
    if isinstance(value, Mapping):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    if isinstance(value, float) and value != value:  # NaN has no JSON form
        return None
    return value


def print_json(value: Any) -> None:
    """Print ``value`` as indented JSON on stdout (plain text, no colour, so it can be piped)."""
    sys.stdout.write(json.dumps(jsonable(value), indent=2, ensure_ascii=False) + "\n")
    sys.stdout.flush()


@contextmanager
def upload_progress(filename: str) -> Iterator[Callable[[int, int], None]]:
    """A transient progress bar on stderr; yields the (bytes sent, total) callback an upload reports to."""
    from rich.progress import (
        BarColumn,
        DownloadColumn,
        Progress,
        TextColumn,
        TimeRemainingColumn,
        TransferSpeedColumn,
    )

    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        TimeRemainingColumn(),
        console=Console(stderr=True),
        transient=True,
    ) as progress:
        task = progress.add_task(f"Uploading {filename}", total=None)

        def report(sent: int, total: int) -> None:
            # Once every byte is sent the server still hashes and inspects the artifact.
            label = f"Uploading {filename}" if sent < total else "Registering"
            progress.update(task, completed=sent, total=total, description=label)

        yield report


def short_sha(sha256: str | None, length: int = 12) -> str:
    """The first ``length`` hex digits of a digest, with an ellipsis."""
    if not sha256:
        return "-"
    return sha256[:length] + "…" if len(sha256) > length else sha256


def human_size(size: int | None) -> str:
    """Bytes as B, KiB, MiB or GiB."""
    if size is None:
        return "-"
    value = float(size)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{int(value)} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")


def format_time(value: str | None) -> str:
    """An ISO-8601 timestamp as local ``YYYY-MM-DD HH:MM:SS`` (unparseable text is shown as is)."""
    if not value:
        return "-"
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        return value
    if moment.tzinfo is not None:
        moment = moment.astimezone()
    return moment.strftime("%Y-%m-%d %H:%M:%S")


def format_value(value: Any) -> str:
    """One table cell: compact floats, decoded bytes, nested lists kept short."""
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, bool) or value is None:
        return str(value).lower() if isinstance(value, bool) else "-"
    if isinstance(value, float):
        return f"{value:.6g}"
    if isinstance(value, bytes):
        try:
            return value.decode()
        except UnicodeDecodeError:
            return repr(value)
    if isinstance(value, np.ndarray):
        return format_value(value.tolist())
    if isinstance(value, list):
        text = "[" + ", ".join(format_value(v) for v in value[:6]) + (", …" if len(value) > 6 else "") + "]"
        return text
    return str(value)


def _cell(value: Any) -> str:
    text = format_value(value)
    return text if text != "" else "-"


def _table(*columns: str, title: str | None = None) -> Table:
    table = Table(title=title, title_justify="left", header_style="bold")
    for column in columns:
        table.add_column(column)
    return table


def models_table(models: Sequence[Mapping[str, Any]]) -> Table:
    """Models: name, source, latest and default version, version count, aliases."""
    table = _table("NAME", "SOURCE", "LATEST", "DEFAULT", "VERSIONS", "ALIASES", "DESCRIPTION")
    for model in models:
        aliases = model.get("aliases") or {}
        table.add_row(
            str(model.get("name")),
            _cell(model.get("source")),
            _cell(model.get("latest_version")),
            _cell(model.get("default_version")),
            _cell(model.get("version_count")),
            ", ".join(f"{alias}→{version}" for alias, version in sorted(aliases.items())) or "-",
            _cell(model.get("description")),
        )
    return table


def versions_table(versions: Sequence[Mapping[str, Any]], *, title: str | None = None) -> Table:
    """Versions: number, framework, digest, size, aliases, state, creation."""
    table = _table("VERSION", "FRAMEWORK", "SHA256", "SIZE", "ALIASES", "STATE", "CREATED", title=title)
    for version in versions:
        state = str(version.get("state") or "-")
        if version.get("state_reason"):
            state += f" ({version['state_reason']})"
        table.add_row(
            _cell(version.get("version")),
            _cell(version.get("framework")),
            short_sha(version.get("sha256")),
            human_size(version.get("size")),
            ", ".join(version.get("aliases") or []) or "-",
            state,
            format_time(version.get("created_at")),
        )
    return table


def signature_table(signature: Mapping[str, Any] | None) -> Table:
    """A version's signature: one row per input and output."""
    table = _table("", "NAME", "DATATYPE", "SHAPE")
    signature = signature or {}
    for kind in ("inputs", "outputs"):
        for spec in signature.get(kind) or []:
            shape = "[" + ", ".join(str(d) for d in spec.get("shape", [])) + "]"
            table.add_row(kind[:-1], str(spec.get("name")), str(spec.get("datatype")), shape)
    if signature.get("open_inputs"):
        table.add_row("input", "*", "any", "any")
    return table


def version_table(version: Mapping[str, Any]) -> Table:
    """One version as field/value rows (the signature is rendered separately)."""
    table = _table("FIELD", "VALUE")
    label = f"{version.get('model')}:{version.get('version')}"
    table.add_row("version", label)
    for key in ("framework", "sha256", "filename", "source", "state", "state_reason"):
        if version.get(key) is not None:
            table.add_row(key, str(version[key]))
    table.add_row("size", human_size(version.get("size")))
    table.add_row("aliases", ", ".join(version.get("aliases") or []) or "-")
    for key in ("description", "created_by", "created_at"):
        if version.get(key):
            table.add_row(key, str(version[key]))
    if version.get("runtime_config"):
        table.add_row("runtime_config", json.dumps(version["runtime_config"]))
    return table


def model_table(model: Mapping[str, Any]) -> Table:
    """One model as field/value rows (its versions are rendered separately)."""
    table = _table("FIELD", "VALUE")
    table.add_row("name", str(model.get("name")))
    for key in ("source", "latest_version", "default_version", "version_count", "created_at", "description"):
        if model.get(key) not in (None, ""):
            table.add_row(key, str(model[key]))
    aliases = model.get("aliases") or {}
    table.add_row("aliases", ", ".join(f"{a}→{v}" for a, v in sorted(aliases.items())) or "-")
    return table


def aliases_table(aliases: Mapping[str, int]) -> Table:
    """Aliases and the versions they point at."""
    table = _table("ALIAS", "VERSION")
    for alias, version in sorted(aliases.items()):
        table.add_row(alias, str(version))
    return table


def alias_history_table(history: Sequence[Mapping[str, Any]]) -> Table:
    """Changes of one alias, in the order the server returns them."""
    table = _table("CHANGED AT", "FROM", "TO", "BY")
    for change in history:
        table.add_row(
            format_time(change.get("changed_at")),
            _cell(change.get("from_version")),
            _cell(change.get("to_version")),
            _cell(change.get("changed_by")),
        )
    return table


def output_rows(outputs: Mapping[str, Array]) -> tuple[list[str], list[list[str]]]:
    """Headers and rows for inference outputs, one row per example (the first dimension).

    A 1-D output is one column; a 2-D output with up to 8 columns is spread as ``name[i]``;
    anything wider or deeper is one cell per example. Scalars repeat on every row.
    """
    headers = ["#"]
    columns: list[list[str]] = []
    batch = max((array.shape[0] for array in outputs.values() if array.ndim > 0), default=1)
    for name, array in outputs.items():
        if array.ndim == 0:
            headers.append(name)
            columns.append([format_value(array.item())] * batch)
        elif array.ndim == 2 and array.shape[1] <= _MAX_SPREAD_COLUMNS:
            for j in range(array.shape[1]):
                headers.append(f"{name}[{j}]")
                columns.append([format_value(array[i, j]) for i in range(array.shape[0])])
        else:
            headers.append(name)
            columns.append([format_value(array[i]) for i in range(array.shape[0])])
    rows = [[str(i), *(column[i] if i < len(column) else "" for column in columns)] for i in range(batch)]
    return headers, rows


def outputs_table(outputs: Mapping[str, Array], *, title: str | None = None) -> Table:
    """Inference outputs as a table, one row per example."""
    headers, rows = output_rows(outputs)
    table = _table(*headers, title=title)
    for index, column in enumerate(table.columns):
        if all(is_number(row[index]) for row in rows if row[index]):
            column.justify = "right"
    for row in rows:
        table.add_row(*row)
    return table
