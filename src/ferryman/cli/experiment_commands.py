"""``ferryman experiment report`` and ``ferryman feedback``: how the versions of an experiment compare."""

from __future__ import annotations

import csv
import json
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from ferryman.cli.connection import DEFAULT_URL, ApiKeyOption, JsonOption, UrlOption, connect, model_ref

__all__ = ["read_feedback_csv", "register"]

experiment_app = typer.Typer(help="Compare the versions a traffic policy or rollout serves.", no_args_is_help=True)

NameArgument = Annotated[str, typer.Argument(metavar="NAME", help="Model name.", show_default=False)]
_BATCH = 10_000


def register(app: typer.Typer) -> None:
    """Add ``experiment`` and ``feedback`` to ``app``."""
    app.add_typer(experiment_app, name="experiment")
    app.command("feedback")(feedback)


@experiment_app.command("report")
def experiment_report(
    name: NameArgument,
    confidence: Annotated[float, typer.Option(help="Confidence level of the comparisons.")] = 0.95,
    baseline: Annotated[int | None, typer.Option(help="Version to compare the others with.")] = None,
    url: UrlOption = DEFAULT_URL,
    api_key: ApiKeyOption = None,
    json_output: JsonOption = False,
) -> None:
    """Requests, errors, latency, predictions, shadow agreement and accuracy per version, with verdicts."""
    from ferryman.cli.release_output import experiment_tables, report

    model_ref(name, version="forbidden")
    if not 0.5 <= confidence < 1:
        raise typer.BadParameter("must be at least 0.5 and below 1", param_hint="--confidence")
    with connect(url, api_key) as client:
        result = client.experiment_report(name, confidence=confidence, baseline=baseline)
    report(json_output, result, lambda: experiment_tables(result))


def feedback(
    name: NameArgument,
    file: Annotated[
        Path,
        typer.Option(
            "--file",
            help="CSV with a header: request_id and label and/or reward, optionally version ('-' = stdin).",
            show_default=False,
        ),
    ],
    url: UrlOption = DEFAULT_URL,
    api_key: ApiKeyOption = None,
    json_output: JsonOption = False,
) -> None:
    """Send true labels or rewards for earlier predictions, from a CSV file."""
    from ferryman.cli.release_output import report

    model_ref(name, version="forbidden")
    items = read_feedback_csv(sys.stdin.read() if str(file) == "-" else _read(file))
    totals = {"count": 0, "matched": 0, "unmatched": 0}
    with connect(url, api_key) as client:
        for start in range(0, len(items), _BATCH):
            result = client.send_feedback_counts(name, items[start : start + _BATCH])
            for key in totals:
                totals[key] += int(result.get(key, 0))
    message = f"Recorded {totals['count']} feedback items for {name}"
    if totals["unmatched"]:
        message += f" ({totals['unmatched']} name request ids the server no longer remembers: stored without a version)"
    report(json_output, {"model": name, **totals}, lambda: [message])


def _read(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except OSError as exc:
        raise typer.BadParameter(f"cannot read {path}: {exc.strerror}", param_hint="--file") from None


def read_feedback_csv(text: str) -> list[dict[str, Any]]:
    """Feedback items from CSV text; errors name the line and the column."""
    reader = csv.DictReader(text.splitlines())
    columns = set(reader.fieldnames or ())
    if "request_id" not in columns or not columns & {"label", "reward"}:
        raise typer.BadParameter("the CSV needs a request_id column and a label or reward column", param_hint="--file")
    unknown = columns - {"request_id", "label", "reward", "version"}
    if unknown:
        raise typer.BadParameter(f"unknown column {sorted(unknown)[0]!r}", param_hint="--file")
    items: list[dict[str, Any]] = []
    for line, row in enumerate(reader, start=2):
        item: dict[str, Any] = {"request_id": row["request_id"]}
        if row.get("label") not in (None, ""):
            item["label"] = _label(row["label"])
        if row.get("reward") not in (None, ""):
            item["reward"] = _number(row["reward"], line, "reward")
        if row.get("version") not in (None, ""):
            item["version"] = int(_number(row["version"], line, "version"))
        items.append(item)
    if not items:
        raise typer.BadParameter("the CSV has no rows", param_hint="--file")
    return items


def _label(text: str) -> Any:
    """A label as the model would predict it: a number when it reads as one, else the text."""
    try:
        value = json.loads(text)
    except ValueError:
        return text
    return value if isinstance(value, int | float) and not isinstance(value, bool) else text


def _number(text: str, line: int, column: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise typer.BadParameter(f"line {line}: {column} {text!r} is not a number", param_hint="--file") from None
