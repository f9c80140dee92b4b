"""``ferryman traffic show|set|clear|history``: a model's traffic policy (split, sticky, shadow, bandit)."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from ferryman.cli.connection import DEFAULT_URL, ApiKeyOption, JsonOption, UrlOption, connect, model_ref

if TYPE_CHECKING:
    from rich.console import RenderableType

__all__ = ["build_policy", "parse_split", "register"]

traffic_app = typer.Typer(
    help="Split, pin, shadow or bandit a model's traffic over its versions and aliases.", no_args_is_help=True
)

NameArgument = Annotated[str, typer.Argument(metavar="NAME", help="Model name.", show_default=False)]
ExpectedRevisionOption = Annotated[
    int | None,
    typer.Option(
        "--expected-revision",
        min=0,
        help="Only if the policy is still at this revision (see `traffic show`); else the command fails.",
    ),
]


def register(app: typer.Typer) -> None:
    """Add the ``traffic`` command group to ``app``."""
    app.add_typer(traffic_app, name="traffic")


def parse_split(text: str) -> list[dict[str, Any]]:
    """``production=90,candidate=10`` → split entries; a usage error names --split."""
    entries: list[dict[str, Any]] = []
    for part in text.split(","):
        target, sep, weight = part.strip().partition("=")
        target, weight = target.strip(), weight.strip().rstrip("%").strip()
        try:
            number = float(weight)
        except ValueError:
            number = None
        if not sep or not target or number is None:
            raise typer.BadParameter(
                f"expected TARGET=WEIGHT pairs like production=90,candidate=10, got {part.strip()!r}",
                param_hint="--split",
            )
        entries.append({"target": target, "weight": int(number) if number.is_integer() else number})
    return entries


def _fraction(text: str, option: str) -> float:
    from ferryman.errors import InvalidInput
    from ferryman.registry.rollout_spec import parse_fraction

    try:
        return parse_fraction(text, option)
    except InvalidInput as exc:
        raise typer.BadParameter(exc.message.removeprefix(f"{option}: "), param_hint=option) from None


def _policy_file(path: Path) -> dict[str, Any]:
    try:
        text = sys.stdin.read() if str(path) == "-" else path.read_text()
        value = json.loads(text)
    except OSError as exc:
        raise typer.BadParameter(f"cannot read {path}: {exc.strerror}", param_hint="--file") from None
    except json.JSONDecodeError as exc:
        raise typer.BadParameter(
            f"{path} is not valid JSON: {exc.msg} (line {exc.lineno})", param_hint="--file"
        ) from None
    if not isinstance(value, dict):
        raise typer.BadParameter(f"{path} must hold a JSON object", param_hint="--file")
    return value


def build_policy(
    *,
    split: str | None = None,
    sticky_header: str | None = None,
    sticky_input: str | None = None,
    shadow: str | None = None,
    shadow_fraction: str | None = None,
    bandit: str | None = None,
    arms: str | None = None,
    reward: str | None = None,
    epsilon: float | None = None,
) -> dict[str, Any]:
    """The policy document the options describe; options that need another one are usage errors."""
    if (sticky_header or sticky_input) and not split:
        raise typer.BadParameter(
            "needs --split (stickiness keeps a caller on one side of a split)",
            param_hint="--sticky-header/--sticky-input",
        )
    if shadow_fraction is not None and not shadow:
        raise typer.BadParameter("needs --shadow TARGET", param_hint="--shadow-fraction")
    if bool(bandit) != bool(arms):
        raise typer.BadParameter("--bandit ALGORITHM and --arms A,B go together", param_hint="--bandit/--arms")
    if (reward is not None or epsilon is not None) and not bandit:
        raise typer.BadParameter("needs --bandit", param_hint="--reward/--epsilon")
    policy: dict[str, Any] = {}
    if split:
        policy["split"] = parse_split(split)
    if sticky_header or sticky_input:
        sticky: dict[str, Any] = {}
        if sticky_header:
            sticky["header"] = sticky_header
        if sticky_input:
            sticky["input"] = sticky_input
        policy["sticky"] = sticky
    if shadow:
        policy["shadow"] = {"target": shadow}
        if shadow_fraction is not None:
            policy["shadow"]["fraction"] = _fraction(shadow_fraction, "--shadow-fraction")
    if bandit and arms:
        spec: dict[str, Any] = {"algorithm": bandit, "arms": [arm.strip() for arm in arms.split(",") if arm.strip()]}
        if reward is not None:
            spec["reward"] = reward
        if epsilon is not None:
            spec["epsilon"] = epsilon
        policy["bandit"] = spec
    if not policy:
        raise typer.BadParameter("give --split, --shadow, --bandit or --file", param_hint="policy")
    return policy


@traffic_app.command("show")
def traffic_show(
    name: NameArgument,
    url: UrlOption = DEFAULT_URL,
    api_key: ApiKeyOption = None,
    json_output: JsonOption = False,
) -> None:
    """Show a model's traffic policy and its revision."""
    from ferryman.cli.release_output import report, traffic_table

    model_ref(name, version="forbidden")
    with connect(url, api_key) as client:
        result = client.traffic_policy(name)
    report(json_output, result, lambda: [traffic_table(result)])


@traffic_app.command("set")
def traffic_set(
    name: NameArgument,
    split: Annotated[
        str | None, typer.Option(help="Weights in percent, e.g. production=90,candidate=10.", show_default=False)
    ] = None,
    sticky_header: Annotated[
        str | None, typer.Option(help="Header whose value pins a caller to one side of the split.")
    ] = None,
    sticky_input: Annotated[
        str | None, typer.Option(help="Request input whose value pins a caller when the header is absent.")
    ] = None,
    shadow: Annotated[str | None, typer.Option(help="Version or alias that gets a copy of the requests.")] = None,
    shadow_fraction: Annotated[
        str | None, typer.Option(help="Share of requests copied to --shadow: 0.25 or 25%.", show_default="1")
    ] = None,
    bandit: Annotated[str | None, typer.Option(help="Bandit algorithm: thompson or epsilon_greedy.")] = None,
    arms: Annotated[str | None, typer.Option(help="Versions or aliases the bandit chooses from, e.g. 4,5.")] = None,
    reward: Annotated[str | None, typer.Option(help="Bandit reward kind: binary or continuous.")] = None,
    epsilon: Annotated[float | None, typer.Option(help="Exploration rate of epsilon_greedy.")] = None,
    file: Annotated[
        Path | None, typer.Option("--file", "-f", help="The whole policy as a JSON file ('-' reads stdin).")
    ] = None,
    expected_revision: ExpectedRevisionOption = None,
    url: UrlOption = DEFAULT_URL,
    api_key: ApiKeyOption = None,
    json_output: JsonOption = False,
) -> None:
    """Replace a model's traffic policy, from options or a JSON file."""
    from ferryman.cli.release_output import report, traffic_table

    model_ref(name, version="forbidden")
    options: dict[str, Any] = {
        "split": split,
        "sticky_header": sticky_header,
        "sticky_input": sticky_input,
        "shadow": shadow,
        "shadow_fraction": shadow_fraction,
        "bandit": bandit,
        "arms": arms,
        "reward": reward,
        "epsilon": epsilon,
    }
    if file is not None:
        given = [f"--{key.replace('_', '-')}" for key, value in options.items() if value is not None]
        if given:
            raise typer.BadParameter(f"cannot be combined with {', '.join(given)}", param_hint="--file")
        policy = _policy_file(file)
    else:
        policy = build_policy(**options)
    with connect(url, api_key) as client:
        result = client.set_traffic_policy(name, policy, expected_revision=expected_revision)

    def render() -> list[RenderableType]:
        return [traffic_table(result)]

    report(json_output, result, render)


@traffic_app.command("clear")
def traffic_clear(
    name: NameArgument,
    expected_revision: ExpectedRevisionOption = None,
    url: UrlOption = DEFAULT_URL,
    api_key: ApiKeyOption = None,
    json_output: JsonOption = False,
) -> None:
    """Remove a model's traffic policy: requests go to its serving default again."""
    from ferryman.cli.release_output import report

    model_ref(name, version="forbidden")
    with connect(url, api_key) as client:
        client.clear_traffic_policy(name, expected_revision=expected_revision)
    report(json_output, {"cleared": name}, lambda: [f"Cleared the traffic policy of {name}"])


@traffic_app.command("history")
def traffic_history(
    name: NameArgument,
    url: UrlOption = DEFAULT_URL,
    api_key: ApiKeyOption = None,
    json_output: JsonOption = False,
) -> None:
    """Show every change of a model's traffic policy."""
    from ferryman.cli.release_output import report, traffic_history_table

    model_ref(name, version="forbidden")
    with connect(url, api_key) as client:
        result = client.traffic_history(name)
    report(json_output, {"history": result}, lambda: [traffic_history_table(result)])
