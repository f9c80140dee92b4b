"""Rendering of release-management results: traffic policies, version policies, rollouts.

Imported only when a command runs (it pulls in rich through ``cli/output.py``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from rich.table import Table

from ferryman.cli.output import format_time, print_json, stdout

if TYPE_CHECKING:
    from rich.console import RenderableType

__all__ = [
    "describe_interval",
    "report",
    "rollout_table",
    "rollouts_table",
    "traffic_history_table",
    "traffic_table",
    "version_policy_text",
]


def report(json_output: bool, value: Any, render: Callable[[], Iterable[RenderableType]]) -> None:
    """Print ``value`` as JSON with --json; otherwise print what ``render`` builds, in order."""
    if json_output:
        print_json(value)
        return
    console = stdout()
    for item in render():
        console.print(item)


def _table(*columns: str, title: str | None = None) -> Table:
    table = Table(title=title, title_justify="left", header_style="bold")
    for column in columns:
        table.add_column(column)
    return table


def _number(value: Any) -> str:
    return f"{value:g}" if isinstance(value, int | float) and not isinstance(value, bool) else str(value)


def _percent(fraction: Any) -> str:
    return f"{fraction * 100:g}%" if isinstance(fraction, int | float) else "-"


def describe_interval(seconds: Any) -> str:
    """600 → ``10m``, 5400 → ``1h30m``, 45 → ``45s``."""
    if not isinstance(seconds, int | float):
        return "-"
    remaining = float(seconds)
    parts = []
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if remaining >= size:
            count = int(remaining // size)
            parts.append(f"{count}{unit}")
            remaining -= count * size
    if remaining or not parts:
        parts.append(f"{remaining:g}s")
    return "".join(parts)


def _describe_policy(policy: Mapping[str, Any]) -> list[tuple[str, str]]:
    rows = []
    split = policy.get("split")
    if split:
        rows.append(("split", ", ".join(f"{e.get('target')} {_number(e.get('weight'))}%" for e in split)))
    sticky = policy.get("sticky")
    if sticky is not None:
        parts = [f"header {sticky.get('header', 'x-ferryman-route-key')}"]
        if sticky.get("input"):
            parts.append(f"else input {sticky['input']}")
        rows.append(("sticky", ", ".join(parts)))
    shadow = policy.get("shadow")
    if shadow:
        rows.append(("shadow", f"{shadow.get('target')} ({_percent(shadow.get('fraction', 1))} of requests)"))
    bandit = policy.get("bandit")
    if bandit:
        arms = ", ".join(str(arm) for arm in bandit.get("arms") or [])
        rows.append(("bandit", f"{bandit.get('algorithm')} over {arms} ({bandit.get('reward', 'binary')} rewards)"))
    return rows


def traffic_table(result: Mapping[str, Any]) -> RenderableType:
    """A model's traffic policy, one row per part, with its revision in the title."""
    policy = result.get("policy")
    if not policy:
        return f"{result.get('model')} has no traffic policy (revision {result.get('revision', 0)})"
    table = _table(
        "SETTING", "VALUE", title=f"Traffic policy of {result.get('model')} (revision {result.get('revision')})"
    )
    for key, value in _describe_policy(policy):
        table.add_row(key, value)
    return table


def traffic_history_table(history: Sequence[Mapping[str, Any]]) -> Table:
    """Changes of a traffic policy, newest first."""
    table = _table("REVISION", "CHANGED AT", "BY", "POLICY")
    for change in history:
        new = change.get("new_policy")
        text = "; ".join(f"{key}: {value}" for key, value in _describe_policy(new)) if new else "(cleared)"
        table.add_row(
            str(change.get("revision")), format_time(change.get("changed_at")), str(change.get("changed_by")), text
        )
    return table


def version_policy_text(name: str, policy: Mapping[str, Any]) -> str:
    """One line saying which versions of ``name`` stay loaded."""
    if policy.get("keep") == "explicit":
        listed = ", ".join(str(v) for v in policy.get("versions") or [])
        return f"{name} keeps exactly versions {listed} loaded"
    latest = policy.get("latest", 1)
    newest = "the newest version" if latest == 1 else f"the {latest} newest versions"
    return f"{name} keeps aliased versions and {newest} loaded"


def _guards(guards: Mapping[str, Any]) -> str:
    parts = []
    if "max_error_rate" in guards:
        parts.append(f"error rate ≤ {_percent(guards['max_error_rate'])}")
    if "max_p99_ms" in guards:
        parts.append(f"p99 ≤ {_number(guards['max_p99_ms'])} ms")
    if "min_agreement" in guards:
        parts.append(f"agreement ≥ {_percent(guards['min_agreement'])}")
    return ", ".join(parts) or "-"


def rollout_table(rollout: Mapping[str, Any]) -> Table:
    """One rollout, field by field."""
    steps = rollout.get("steps") or []
    index = int(rollout.get("step_index") or 0)
    table = _table("FIELD", "VALUE", title=f"Rollout #{rollout.get('id')} of {rollout.get('model')}")
    table.add_row("state", str(rollout.get("state")) + (f" ({rollout['reason']})" if rollout.get("reason") else ""))
    table.add_row("alias", f"{rollout.get('alias')}: {rollout.get('from_version')} → {rollout.get('to_version')}")
    table.add_row(
        "step",
        f"{index + 1} of {len(steps)}: {_number(rollout.get('weight'))}% to version {rollout.get('to_version')}",
    )
    table.add_row("steps", ", ".join(f"{_number(step)}%" for step in steps))
    table.add_row("interval", describe_interval(rollout.get("interval_s")))
    table.add_row("guards", _guards(rollout.get("guards") or {}))
    table.add_row("step started", format_time(rollout.get("step_started_at")))
    table.add_row("created", f"{format_time(rollout.get('created_at'))} by {rollout.get('created_by')}")
    table.add_row("revision", str(rollout.get("revision")))
    return table


def rollouts_table(rollouts: Sequence[Mapping[str, Any]]) -> Table:
    """Rollouts, newest first."""
    table = _table("ID", "ALIAS", "FROM", "TO", "STATE", "STEP", "CREATED", "REASON")
    for rollout in rollouts:
        steps = rollout.get("steps") or []
        table.add_row(
            str(rollout.get("id")),
            str(rollout.get("alias")),
            str(rollout.get("from_version")),
            str(rollout.get("to_version")),
            str(rollout.get("state")),
            f"{int(rollout.get('step_index') or 0) + 1}/{len(steps)} ({_number(rollout.get('weight'))}%)",
            format_time(rollout.get("created_at")),
            str(rollout.get("reason") or "-"),
        )
    return table


def experiment_tables(result: Mapping[str, Any]) -> list[RenderableType]:
    """The experiment report: one row per version, then one verdict per comparison."""
    table = _table(
        "version",
        "requests",
        "error rate",
        "p50/p95/p99 ms",
        "predictions",
        "shadow agreement",
        "accuracy / MAE",
        title=f"Experiment: {result.get('model')} (baseline v{result.get('baseline')})",
    )
    for row in result.get("versions", []):
        latency = row.get("latency")
        timing = "-" if not latency else "/".join(f"{latency[q] * 1000:.1f}" for q in ("p50", "p95", "p99"))
        distribution = row.get("prediction_distribution") or {}
        shares = ", ".join(f"{label} {share:.0%}" for label, share in list(distribution.items())[:4]) or "-"
        quality = "-"
        if row.get("accuracy") is not None:
            quality = f"{row['accuracy']:.3f} acc ({row.get('labelled')} labelled)"
        elif row.get("mae") is not None:
            quality = f"{row['mae']:.4g} MAE"
        aliases = ", ".join(row.get("aliases") or [])
        table.add_row(
            f"v{row.get('version')}" + (f" ({aliases})" if aliases else ""),
            _number(row.get("requests")),
            _percent(row.get("error_rate")),
            timing,
            shares,
            _percent(row.get("shadow_agreement")),
            quality,
        )
    verdicts = [
        f"v{c.get('version')} vs v{c.get('baseline')}: {c.get('verdict')}" for c in result.get("comparisons", [])
    ]
    return [table, *verdicts]
