"""``ferryman rollout start|status|list|pause|resume|abort``: progressive rollouts of an alias."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from ferryman.cli.connection import DEFAULT_URL, ApiKeyOption, JsonOption, UrlOption, connect, model_ref

__all__ = ["parse_rollout_options", "register"]

rollout_app = typer.Typer(
    help="Move an alias to a new version step by step, watching error rate, latency and agreement.",
    no_args_is_help=True,
)

NameArgument = Annotated[str, typer.Argument(metavar="NAME", help="Model name.", show_default=False)]
ReasonOption = Annotated[str, typer.Option(help="Why (kept with the rollout).")]


def register(app: typer.Typer) -> None:
    """Add the ``rollout`` command group to ``app``."""
    app.add_typer(rollout_app, name="rollout")


def parse_rollout_options(
    steps: str,
    interval: str,
    max_error_rate: str | None,
    max_p99_ms: str | None,
    min_agreement: str | None,
) -> dict[str, Any]:
    """Check the options with the server's rules; a usage error names the option that is wrong."""
    from ferryman.errors import InvalidInput
    from ferryman.registry.rollout_spec import parse_duration, parse_fraction, parse_milliseconds, parse_steps

    def checked(option: str, parse: Any, value: Any) -> Any:
        try:
            return parse(value, option)
        except InvalidInput as exc:
            raise typer.BadParameter(exc.message.removeprefix(f"{option}: "), param_hint=option) from None

    guards: dict[str, Any] = {}
    if max_error_rate is not None:
        guards["max_error_rate"] = checked("--max-error-rate", parse_fraction, max_error_rate)
    if max_p99_ms is not None:
        guards["max_p99_ms"] = checked("--max-p99-ms", parse_milliseconds, max_p99_ms)
    if min_agreement is not None:
        guards["min_agreement"] = checked("--min-agreement", parse_fraction, min_agreement)
    return {
        "steps": list(checked("--steps", parse_steps, steps)),
        "interval": checked("--interval", parse_duration, interval),
        "guards": guards,
    }


@rollout_app.command("start")
def rollout_start(
    name: NameArgument,
    to: Annotated[int, typer.Option("--to", min=1, help="The version to roll out.", show_default=False)],
    steps: Annotated[str, typer.Option(help="Percent of traffic at each step, ending at 100.")] = "5,25,50,100",
    interval: Annotated[str, typer.Option(help="Time per step: 30s, 10m, 1h (or seconds).")] = "10m",
    max_error_rate: Annotated[
        str | None, typer.Option(help="Roll back above this error rate: 1% or 0.01.", show_default=False)
    ] = None,
    max_p99_ms: Annotated[
        str | None, typer.Option(help="Roll back above this p99 latency, in milliseconds.", show_default=False)
    ] = None,
    min_agreement: Annotated[
        str | None,
        typer.Option(help="Roll back below this agreement with the old version: 0.95 or 95%.", show_default=False),
    ] = None,
    alias: Annotated[str, typer.Option(help="The alias to move.")] = "production",
    url: UrlOption = DEFAULT_URL,
    api_key: ApiKeyOption = None,
    json_output: JsonOption = False,
) -> None:
    """Start moving an alias (production) to a new version, step by step."""
    from ferryman.cli.release_output import describe_interval, report, rollout_table

    model_ref(name, version="forbidden")
    plan = parse_rollout_options(steps, interval, max_error_rate, max_p99_ms, min_agreement)
    with connect(url, api_key) as client:
        result = client.start_rollout(name, to, alias=alias, **plan)

    def render() -> list[Any]:
        first = (result.get("steps") or [0])[0]
        return [
            f"Rolling out {name}@{result.get('alias')}: {result.get('from_version')} → {result.get('to_version')}, "
            f"starting at {first:g}% for {describe_interval(result.get('interval_s'))}",
            rollout_table(result),
        ]

    report(json_output, result, render)


@rollout_app.command("status")
def rollout_status(
    name: NameArgument,
    url: UrlOption = DEFAULT_URL,
    api_key: ApiKeyOption = None,
    json_output: JsonOption = False,
) -> None:
    """Show a model's latest rollout."""
    from ferryman.cli.release_output import report, rollout_table

    model_ref(name, version="forbidden")
    with connect(url, api_key) as client:
        result = client.rollout(name)
    report(json_output, result, lambda: [rollout_table(result)])


@rollout_app.command("list")
def rollout_list(
    name: NameArgument,
    url: UrlOption = DEFAULT_URL,
    api_key: ApiKeyOption = None,
    json_output: JsonOption = False,
) -> None:
    """List a model's rollouts, newest first."""
    from ferryman.cli.release_output import report, rollouts_table

    model_ref(name, version="forbidden")
    with connect(url, api_key) as client:
        result = client.rollouts(name)
    report(json_output, {"rollouts": result}, lambda: [rollouts_table(result)])


def _act(action: str, name: str, reason: str, url: str, api_key: str | None, json_output: bool) -> None:
    from ferryman.cli.release_output import report

    model_ref(name, version="forbidden")
    with connect(url, api_key) as client:
        call = {"pause": client.pause_rollout, "resume": client.resume_rollout, "abort": client.abort_rollout}
        result = call[action](name, reason)
    done = {"pause": "Paused", "resume": "Resumed", "abort": "Aborted"}[action]
    where = (
        f"{result.get('alias')} stays on version {result.get('from_version')}"
        if action == "abort"
        else (f"at {result.get('weight'):g}% to version {result.get('to_version')}")
    )
    report(json_output, result, lambda: [f"{done} rollout #{result.get('id')} of {name}; {where}"])


@rollout_app.command("pause")
def rollout_pause(
    name: NameArgument,
    reason: ReasonOption = "",
    url: UrlOption = DEFAULT_URL,
    api_key: ApiKeyOption = None,
    json_output: JsonOption = False,
) -> None:
    """Hold a running rollout at its current step."""
    _act("pause", name, reason, url, api_key, json_output)


@rollout_app.command("resume")
def rollout_resume(
    name: NameArgument,
    reason: ReasonOption = "",
    url: UrlOption = DEFAULT_URL,
    api_key: ApiKeyOption = None,
    json_output: JsonOption = False,
) -> None:
    """Continue a paused rollout; its current step starts over."""
    _act("resume", name, reason, url, api_key, json_output)


@rollout_app.command("abort")
def rollout_abort(
    name: NameArgument,
    reason: ReasonOption = "",
    url: UrlOption = DEFAULT_URL,
    api_key: ApiKeyOption = None,
    json_output: JsonOption = False,
) -> None:
    """Stop a rollout: all of the alias's traffic goes back to the version it points at."""
    _act("abort", name, reason, url, api_key, json_output)
