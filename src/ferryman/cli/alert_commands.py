"""``ferryman alerts ...`` (rules, webhooks, current state) and ``ferryman accuracy NAME`` (live accuracy)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Annotated, Any

import typer

from ferryman.cli.connection import DEFAULT_URL, ApiKeyOption, JsonOption, UrlOption, connect, model_ref

if TYPE_CHECKING:
    from rich.console import RenderableType
    from rich.table import Table

__all__ = ["register"]

alerts_app = typer.Typer(help="Alert rules, webhooks and what is firing now.", no_args_is_help=True)
rules_app = typer.Typer(help="Alert rules: list, create, delete.", no_args_is_help=True)
webhooks_app = typer.Typer(help="Webhooks that receive firing and resolved events.", no_args_is_help=True)
alerts_app.add_typer(rules_app, name="rules")
alerts_app.add_typer(webhooks_app, name="webhooks")

RuleName = Annotated[str, typer.Argument(metavar="NAME", help="Rule name.", show_default=False)]
HookName = Annotated[str, typer.Argument(metavar="NAME", help="Webhook name.", show_default=False)]


def register(app: typer.Typer) -> None:
    """Add ``alerts`` and ``accuracy`` to ``app``."""
    app.add_typer(alerts_app, name="alerts")
    app.command("accuracy")(accuracy)


@alerts_app.command("list")
def list_alerts(
    limit: Annotated[int, typer.Option(min=1, max=1000, help="Recent events to show.")] = 20,
    url: UrlOption = DEFAULT_URL,
    api_key: ApiKeyOption = None,
    json_output: JsonOption = False,
) -> None:
    """Each rule's state per target (ok, pending, firing) and the recent firing/resolved events."""
    from ferryman.cli.release_output import report

    with connect(url, api_key) as client:
        result = client.alerts(limit=limit)
    report(json_output, result, lambda: _alert_tables(result))


@rules_app.command("list")
def list_rules(url: UrlOption = DEFAULT_URL, api_key: ApiKeyOption = None, json_output: JsonOption = False) -> None:
    """Every alert rule."""
    from ferryman.cli.release_output import report

    with connect(url, api_key) as client:
        rules = client.alert_rules()
    report(json_output, rules, lambda: [_rules_table(rules)])


@rules_app.command("create")
def create_rule(
    name: RuleName,
    model: Annotated[str, typer.Option(help="Model name or pattern (fraud-*).", show_default=False)],
    signal: Annotated[
        str, typer.Option(help="error_rate, p99_latency_ms, drift_score, quality_*, live_*.", show_default=False)
    ],
    threshold: Annotated[float, typer.Option(help="Value compared with the signal.", show_default=False)],
    comparison: Annotated[str, typer.Option(help="One of > >= < <=.")] = ">",
    window: Annotated[str, typer.Option(help="Window the signal is measured over.")] = "5m",
    for_: Annotated[str, typer.Option("--for", help="How long the condition must hold before firing.")] = "0s",
    severity: Annotated[str, typer.Option(help="info, warning or critical.")] = "warning",
    version: Annotated[int | None, typer.Option(min=1, help="Only this version.", show_default="all")] = None,
    feature: Annotated[
        str | None, typer.Option(help="One feature (drift_score and quality_* only).", show_default="all")
    ] = None,
    min_samples: Annotated[int, typer.Option(min=1, help="Requests or labels the window needs.")] = 1,
    description: Annotated[str, typer.Option(help="Free text sent with events.")] = "",
    url: UrlOption = DEFAULT_URL,
    api_key: ApiKeyOption = None,
    json_output: JsonOption = False,
) -> None:
    """Create a rule: fire when SIGNAL COMPARISON THRESHOLD has held for --for over --window."""
    from ferryman.cli.release_output import report

    body: dict[str, Any] = {
        "name": name,
        "model": model,
        "signal": signal,
        "comparison": comparison,
        "threshold": threshold,
        "window": window,
        "for": for_,
        "severity": severity,
        "min_samples": min_samples,
        "description": description,
    }
    if version is not None:
        body["version"] = version
    if feature is not None:
        body["feature"] = feature
    with connect(url, api_key) as client:
        rule = client.create_alert_rule(body)
    report(json_output, rule, lambda: [_rules_table([rule])])


@rules_app.command("delete")
def delete_rule(name: RuleName, url: UrlOption = DEFAULT_URL, api_key: ApiKeyOption = None) -> None:
    """Delete a rule (its past events stay)."""
    from ferryman.cli.output import stdout

    with connect(url, api_key) as client:
        client.delete_alert_rule(name)
    stdout().print(f"Deleted alert rule '{name}'.")


@webhooks_app.command("list")
def list_webhooks(url: UrlOption = DEFAULT_URL, api_key: ApiKeyOption = None, json_output: JsonOption = False) -> None:
    """Every webhook with its delivery counts."""
    from ferryman.cli.release_output import report

    with connect(url, api_key) as client:
        hooks = client.webhooks()
    report(json_output, hooks, lambda: [_webhooks_table(hooks)])


@webhooks_app.command("create")
def create_webhook(
    name: HookName,
    target: Annotated[str, typer.Option("--target", help="http(s) address to POST events to.", show_default=False)],
    secret: Annotated[
        str | None,
        typer.Option(envvar="FERRYMAN_WEBHOOK_SECRET", help="Signing secret.", show_default="generated, shown once"),
    ] = None,
    min_severity: Annotated[str, typer.Option(help="Lowest severity sent: info, warning, critical.")] = "info",
    url: UrlOption = DEFAULT_URL,
    api_key: ApiKeyOption = None,
    json_output: JsonOption = False,
) -> None:
    """Create a webhook; a generated secret is printed this once."""
    from ferryman.cli.output import stdout
    from ferryman.cli.release_output import report

    with connect(url, api_key) as client:
        hook = client.create_webhook(name, target, secret=secret, min_severity=min_severity)
    if json_output:
        report(True, hook, list)
        return
    stdout().print(_webhooks_table([hook]))
    if "secret" in hook:
        stdout().print(f"Signing secret (shown once): {hook['secret']}")


@webhooks_app.command("delete")
def delete_webhook(name: HookName, url: UrlOption = DEFAULT_URL, api_key: ApiKeyOption = None) -> None:
    """Delete a webhook and its pending deliveries."""
    from ferryman.cli.output import stdout

    with connect(url, api_key) as client:
        client.delete_webhook(name)
    stdout().print(f"Deleted webhook '{name}'.")


def accuracy(
    name: Annotated[str, typer.Argument(metavar="NAME", help="Model name.", show_default=False)],
    window: Annotated[str, typer.Option(help="Bucket length, like 10m or 1h.")] = "1h",
    buckets: Annotated[int, typer.Option(min=1, max=1000, help="Buckets, ending now.")] = 24,
    version: Annotated[int | None, typer.Option("--version", "-v", min=1, help="Only this version.")] = None,
    url: UrlOption = DEFAULT_URL,
    api_key: ApiKeyOption = None,
    json_output: JsonOption = False,
) -> None:
    """Live accuracy (or MAE/RMSE) per version and time bucket, from labelled feedback."""
    from ferryman.cli.release_output import report

    model_ref(name, version="forbidden")
    with connect(url, api_key) as client:
        result = client.accuracy(name, window=window, buckets=buckets, version=version)
    report(json_output, result, lambda: _accuracy_tables(result))


def _fmt(value: Any) -> str:
    if value is None:
        return "-"
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def _table(*columns: str, title: str | None = None) -> Table:
    from rich.table import Table

    table = Table(title=title, title_justify="left", header_style="bold")
    for column in columns:
        table.add_column(column)
    return table


def _alert_tables(result: Mapping[str, Any]) -> list[RenderableType]:
    states = _table("rule", "target", "severity", "signal", "state", "value", "since", title="Alerts")
    style = {"firing": "bold red", "pending": "yellow", "ok": "green"}
    for alert in result.get("alerts", []):
        state = str(alert.get("state"))
        states.add_row(
            str(alert.get("rule")),
            str(alert.get("target")),
            str(alert.get("severity")),
            str(alert.get("signal")),
            f"[{style.get(state, '')}]{state}[/]" if state in style else state,
            _fmt(alert.get("value")),
            str(alert.get("fired_at") or alert.get("since") or "-"),
        )
    events = _table("id", "at", "event", "rule", "target", "severity", "value", title="Recent events")
    for event in result.get("events", []):
        events.add_row(
            str(event.get("id")),
            str(event.get("at")),
            str(event.get("kind")),
            str(event.get("rule")),
            str(event.get("target")),
            str(event.get("severity")),
            _fmt(event.get("value")),
        )
    return [states, events]


def _rules_table(rules: Sequence[Mapping[str, Any]]) -> RenderableType:
    table = _table("name", "model", "version", "condition", "window", "for", "severity", title="Alert rules")
    for rule in rules:
        signal = str(rule.get("signal")) + (f"[{rule['feature']}]" if rule.get("feature") else "")
        table.add_row(
            str(rule.get("name")),
            str(rule.get("model")),
            str(rule.get("version") or "all"),
            f"{signal} {rule.get('comparison')} {_fmt(rule.get('threshold'))}",
            f"{_fmt(rule.get('window'))}s",
            f"{_fmt(rule.get('for'))}s",
            str(rule.get("severity")),
        )
    return table


def _webhooks_table(hooks: Sequence[Mapping[str, Any]]) -> RenderableType:
    table = _table("name", "url", "min severity", "pending", "delivered", "failed", title="Webhooks")
    for hook in hooks:
        counts = hook.get("deliveries") or {}
        table.add_row(
            str(hook.get("name")),
            str(hook.get("url")),
            str(hook.get("min_severity")),
            *(str(counts.get(state, 0)) for state in ("pending", "delivered", "failed")),
        )
    return table


def _accuracy_tables(result: Mapping[str, Any]) -> list[RenderableType]:
    out: list[RenderableType] = []
    for entry in result.get("versions", []):
        regression = entry.get("kind") == "regression"
        figures = ("mae", "rmse") if regression else ("accuracy", "macro_f1")
        table = _table("bucket end", "n", *figures, "unmatched", title=f"Version {entry.get('version')}")
        for bucket in entry.get("buckets", []):
            if bucket.get("n") or bucket.get("unmatched"):
                table.add_row(
                    str(bucket.get("end")),
                    str(bucket.get("n")),
                    *(_fmt(bucket.get(key)) for key in figures),
                    str(bucket.get("unmatched")),
                )
        total = entry.get("total") or {}
        table.add_row(
            "[bold]total[/]", str(total.get("n")), *(_fmt(total.get(k)) for k in figures), str(total.get("unmatched"))
        )
        out.append(table)
    unmatched = (result.get("unmatched") or {}).get("total", 0)
    from rich.text import Text

    out.append(Text(f"{unmatched} labels named a request id this server could not match to a version (unmatched)."))
    return out
