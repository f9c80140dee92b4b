"""``ferryman drift NAME``: has a version's traffic drifted from its reference, and how clean is it."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Annotated, Any

import typer

from ferryman.cli.connection import DEFAULT_URL, ApiKeyOption, JsonOption, UrlOption, connect, fail, model_ref

if TYPE_CHECKING:
    from rich.console import RenderableType

__all__ = ["drift_tables", "register"]

_ISSUES = ("nan", "inf", "below_range", "above_range", "unseen_category", "rejected")


def register(app: typer.Typer) -> None:
    """Add ``drift`` to ``app``."""
    app.command("drift")(drift)


def drift(
    name: Annotated[str, typer.Argument(metavar="NAME", help="Model name.", show_default=False)],
    version: Annotated[
        int | None,
        typer.Option("--version", "-v", min=1, help="Version number.", show_default="the version serving by default"),
    ] = None,
    url: UrlOption = DEFAULT_URL,
    api_key: ApiKeyOption = None,
    json_output: JsonOption = False,
) -> None:
    """Drift of a version's inputs and predictions against its reference profile, with data-quality counts."""
    from ferryman.cli.release_output import report

    model_ref(name, version="forbidden")
    with connect(url, api_key) as client:
        if version is None:
            serving = client.model(name).get("default_version")
            if serving is None:
                fail(f"model '{name}' has no version serving; name one with --version")
            version = int(serving)
        result = client.drift_report(name, version)
    report(json_output, result, lambda: drift_tables(result))


def drift_tables(result: Mapping[str, Any]) -> list[RenderableType]:
    """The verdict line, the feature and prediction tables, and the data-quality table."""
    from rich.text import Text

    out: list[RenderableType] = [Text.from_markup(_headline(result))]
    if result.get("note"):
        out.append(Text(str(result["note"]), style="dim"))
    for title, side in (("Features", "features"), ("Predictions", "predictions")):
        columns = result.get(side) or {}
        if columns:
            out.append(_column_table(title, columns))
    out.extend(_quality(result.get("quality")))
    return out


def _headline(result: Mapping[str, Any]) -> str:
    verdict = str(result.get("verdict"))
    style = {"drift": "bold red", "no drift": "bold green"}.get(verdict, "bold yellow")
    line = f"{result.get('model')} version {result.get('version')}: [{style}]{verdict}[/]"
    drifted = [*result.get("drifted_features", []), *result.get("drifted_predictions", [])]
    if drifted:
        line += f" in {', '.join(drifted)}"
    profile = result.get("profile") or {}
    source = profile.get("source")
    if source is not None:
        line += f"; reference from {source} ({profile.get('rows')} rows)"
    line += (
        f"; window {result.get('rows', 0)} of {result.get('window_rows')} rows"
        f" ({result.get('rows_observed', 0)} seen), significance {result.get('significance')}"
    )
    if result.get("score") is not None:
        line += f", max PSI {result['score']:.3g}"
    return line


def _column_table(title: str, columns: Mapping[str, Mapping[str, Any]]) -> RenderableType:
    from rich.table import Table

    table = Table(title=title, title_justify="left", header_style="bold")
    for header in ("column", "kind", "rows", "missing", "test", "statistic", "p (BH)", "PSI", "drifted", "note"):
        table.add_column(header)
    for name, column in columns.items():
        drifted = column.get("drifted")
        table.add_row(
            name,
            str(column.get("kind")),
            str(column.get("rows")),
            _share(column.get("missing_rate")),
            column.get("test") or "-",
            _number(column.get("statistic")),
            _number(column.get("p_adjusted")),
            _number(column.get("psi")) + (" !" if column.get("psi_exceeded") else ""),
            "[bold red]yes[/]" if drifted else "no",
            column.get("note") or "",
        )
    return table


def _quality(quality: Mapping[str, Any] | None) -> Iterable[RenderableType]:
    from rich.table import Table
    from rich.text import Text

    if not quality:
        return []
    features: Mapping[str, Mapping[str, int]] = quality.get("features") or {}
    troubled = {name: issues for name, issues in features.items() if any(issues.values())}
    if not troubled:
        return [Text(f"Data quality: no issues in {quality.get('rows', 0)} rows checked.")]
    table = Table(title=f"Data quality ({quality.get('rows', 0)} rows checked)", title_justify="left")
    table.add_column("feature")
    for issue in _ISSUES:
        table.add_column(issue, justify="right")
    for name, issues in troubled.items():
        table.add_row(name, *(str(issues.get(issue, 0)) for issue in _ISSUES))
    totals = quality.get("totals") or {}
    table.add_row("[bold]total[/]", *(f"[bold]{totals.get(issue, 0)}[/]" for issue in _ISSUES))
    return [table]


def _number(value: Any) -> str:
    return f"{value:.3g}" if isinstance(value, int | float) and not isinstance(value, bool) else "-"


def _share(value: Any) -> str:
    return f"{value:.1%}" if isinstance(value, int | float) else "-"
