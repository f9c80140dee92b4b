"""Traffic policies: how a model's requests spread over its versions in production.

A policy is a JSON object stored per model::

    {"split":  [{"target": "production", "weight": 90}, {"target": "candidate", "weight": 10}],
     "sticky": {"header": "x-ferryman-route-key", "input": "user_id"},
     "shadow": {"target": "5", "fraction": 0.25},
     "bandit": {"algorithm": "thompson", "arms": ["4", "5"], "reward": "binary"}}

- ``split`` (canary, A/B): targets with weights. A target is an alias name or a version number
  (string or integer); weights are numbers >= 0 that sum to 100; no target appears twice.
- ``sticky`` (needs ``split``): where a request's route key comes from — the HTTP ``header``
  (default ``x-ferryman-route-key``, matched case-insensitively) and optionally a request
  ``input`` whose value is the key when the header is absent. A key always reaches the same
  version while the weights stay the same (weighted rendezvous hashing: every version scores
  ``weight / -ln(h)`` with ``h`` uniform in (0, 1) from blake2b of the key and the version
  number, the highest score wins). Keys spread over versions as the weights do, and changing
  weights moves a key from A to B only when B's weight grew relative to A's (so shifting weight
  from one version to another moves only keys into the one that grew).
- ``shadow``: a ``target`` that also receives a copy of a sampled ``fraction`` (in (0, 1],
  default 1) of the requests after they are answered; its outputs are only compared and recorded.
- ``bandit`` (not with ``split``): ``algorithm`` ``"thompson"`` or ``"epsilon_greedy"``
  (``epsilon`` in [0, 1], default 0.1, for epsilon-greedy only), at least two ``arms``, and
  ``reward`` ``"binary"`` (default; rewards in [0, 1]) or ``"continuous"``. See ``bandits.py``.

Every key is optional, but a policy has ``split``, ``bandit`` or ``shadow``; with only ``shadow``
requests keep going to the model's serving default. Unknown keys are refused, naming them.

:func:`parse_traffic_policy` validates (it knows nothing about versions): the registry stores only
policies it accepts, and ``serving/traffic.py`` compiles them for the request path.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

from ferryman.errors import InvalidInput

__all__ = [
    "ALGORITHMS",
    "DEFAULT_ROUTE_HEADER",
    "REWARDS",
    "Algorithm",
    "BanditSpec",
    "RewardKind",
    "ShadowSpec",
    "SplitTarget",
    "StickySpec",
    "TrafficPolicy",
    "parse_traffic_policy",
]

Algorithm = Literal["thompson", "epsilon_greedy"]
RewardKind = Literal["binary", "continuous"]
ALGORITHMS: tuple[Algorithm, ...] = ("thompson", "epsilon_greedy")
REWARDS: tuple[RewardKind, ...] = ("binary", "continuous")
DEFAULT_ROUTE_HEADER = "x-ferryman-route-key"
_WEIGHT_TOLERANCE = 1e-6


@dataclass(frozen=True, slots=True)
class SplitTarget:
    """One entry of a split: an alias name or version number and its weight (percent)."""

    target: str
    weight: float


@dataclass(frozen=True, slots=True)
class StickySpec:
    """Where a request's route key comes from: a header, else optionally a request input."""

    header: str = DEFAULT_ROUTE_HEADER
    input: str | None = None


@dataclass(frozen=True, slots=True)
class ShadowSpec:
    """A version or alias that receives a copy of a sampled fraction of the requests."""

    target: str
    fraction: float = 1.0


@dataclass(frozen=True, slots=True)
class BanditSpec:
    """A bandit choosing among ``arms`` with ``algorithm``, learning from rewards of kind ``reward``."""

    algorithm: Algorithm
    arms: tuple[str, ...]
    reward: RewardKind = "binary"
    epsilon: float = 0.1


@dataclass(frozen=True, slots=True)
class TrafficPolicy:
    """A validated traffic policy (see the module docstring for its JSON form)."""

    split: tuple[SplitTarget, ...] | None = None
    sticky: StickySpec | None = None
    shadow: ShadowSpec | None = None
    bandit: BanditSpec | None = None

    def targets(self) -> set[str]:
        """Every alias name and version number (as a string) the policy names."""
        names = {entry.target for entry in self.split or ()}
        if self.shadow is not None:
            names.add(self.shadow.target)
        if self.bandit is not None:
            names.update(self.bandit.arms)
        return names

    def to_dict(self) -> dict[str, object]:
        """The policy's canonical JSON form (what :func:`parse_traffic_policy` reads back)."""
        out: dict[str, object] = {}
        if self.split is not None:
            out["split"] = [{"target": e.target, "weight": e.weight} for e in self.split]
        if self.sticky is not None:
            sticky: dict[str, object] = {"header": self.sticky.header}
            if self.sticky.input is not None:
                sticky["input"] = self.sticky.input
            out["sticky"] = sticky
        if self.shadow is not None:
            out["shadow"] = {"target": self.shadow.target, "fraction": self.shadow.fraction}
        if self.bandit is not None:
            bandit: dict[str, object] = {
                "algorithm": self.bandit.algorithm,
                "arms": list(self.bandit.arms),
                "reward": self.bandit.reward,
            }
            if self.bandit.algorithm == "epsilon_greedy":
                bandit["epsilon"] = self.bandit.epsilon
            out["bandit"] = bandit
        return out


def parse_traffic_policy(raw: object) -> TrafficPolicy:
    """Validate a policy's JSON form; errors are ``InvalidInput`` naming the field (``traffic.split[1].weight``)."""
    body = _object(raw, "traffic")
    _refuse_unknown(body, "traffic", ("split", "sticky", "shadow", "bandit"))
    if not any(key in body for key in ("split", "bandit", "shadow")):
        raise InvalidInput("traffic needs 'split', 'bandit' or 'shadow'")
    if "split" in body and "bandit" in body:
        raise InvalidInput("traffic.split and traffic.bandit cannot be used together")
    if "sticky" in body and "split" not in body:
        raise InvalidInput("traffic.sticky needs traffic.split")
    return TrafficPolicy(
        split=_split(body["split"]) if "split" in body else None,
        sticky=_sticky(body["sticky"]) if "sticky" in body else None,
        shadow=_shadow(body["shadow"]) if "shadow" in body else None,
        bandit=_bandit(body["bandit"]) if "bandit" in body else None,
    )


def _object(raw: object, field: str) -> Mapping[str, object]:
    if not isinstance(raw, Mapping) or not all(isinstance(key, str) for key in raw):
        raise InvalidInput(f"{field} must be an object")
    return raw


def _refuse_unknown(body: Mapping[str, object], field: str, known: tuple[str, ...]) -> None:
    unknown = [key for key in body if key not in known]
    if unknown:
        names = ", ".join(f"'{key}'" for key in unknown)
        raise InvalidInput(f"{field} has unknown key{'s' if len(unknown) > 1 else ''} {names}")


def _number(value: object) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        return None
    return float(value)


def _target(value: object, field: str) -> str:
    if isinstance(value, int) and not isinstance(value, bool) and value >= 1:
        return str(value)
    if isinstance(value, str) and value.strip() == value and 0 < len(value) <= 128:
        return str(int(value)) if value.isdecimal() and int(value) >= 1 else value
    raise InvalidInput(f"{field} must be a version number or an alias name")


def _split(raw: object) -> tuple[SplitTarget, ...]:
    if not isinstance(raw, list) or not raw:
        raise InvalidInput("traffic.split must be a non-empty list")
    entries: list[SplitTarget] = []
    for i, item in enumerate(raw):
        field = f"traffic.split[{i}]"
        body = _object(item, field)
        _refuse_unknown(body, field, ("target", "weight"))
        if "target" not in body:
            raise InvalidInput(f"{field}.target is required")
        target = _target(body["target"], f"{field}.target")
        weight = _number(body.get("weight"))
        if weight is None or not 0 <= weight <= 100:
            raise InvalidInput(f"{field}.weight must be a number between 0 and 100")
        if any(entry.target == target for entry in entries):
            raise InvalidInput(f"{field}.target '{target}' appears twice in traffic.split")
        entries.append(SplitTarget(target, weight))
    total = math.fsum(entry.weight for entry in entries)
    if abs(total - 100) > _WEIGHT_TOLERANCE:
        raise InvalidInput(f"traffic.split weights must sum to 100 (they sum to {total:g})")
    return tuple(entries)


def _sticky(raw: object) -> StickySpec:
    body = _object(raw, "traffic.sticky")
    _refuse_unknown(body, "traffic.sticky", ("header", "input"))
    header = body.get("header", DEFAULT_ROUTE_HEADER)
    if not isinstance(header, str) or not header or not all(c.isascii() and (c.isalnum() or c in "-_") for c in header):
        raise InvalidInput("traffic.sticky.header must be an HTTP header name (letters, digits, '-', '_')")
    name = body.get("input")
    if name is not None and (not isinstance(name, str) or not name):
        raise InvalidInput("traffic.sticky.input must be the name of a request input")
    return StickySpec(header=header.lower(), input=name)


def _shadow(raw: object) -> ShadowSpec:
    body = _object(raw, "traffic.shadow")
    _refuse_unknown(body, "traffic.shadow", ("target", "fraction"))
    if "target" not in body:
        raise InvalidInput("traffic.shadow.target is required")
    target = _target(body["target"], "traffic.shadow.target")
    fraction = _number(body.get("fraction", 1.0))
    if fraction is None or not 0 < fraction <= 1:
        raise InvalidInput("traffic.shadow.fraction must be a number greater than 0 and at most 1")
    return ShadowSpec(target, fraction)


def _bandit(raw: object) -> BanditSpec:
    body = _object(raw, "traffic.bandit")
    _refuse_unknown(body, "traffic.bandit", ("algorithm", "arms", "reward", "epsilon"))
    algorithm: Algorithm
    match body.get("algorithm"):
        case "thompson":
            algorithm = "thompson"
        case "epsilon_greedy":
            algorithm = "epsilon_greedy"
        case _:
            raise InvalidInput("traffic.bandit.algorithm must be 'thompson' or 'epsilon_greedy'")
    arms_raw = body.get("arms")
    if not isinstance(arms_raw, list) or len(arms_raw) < 2:
        raise InvalidInput("traffic.bandit.arms must be a list of at least two versions or aliases")
    arms: list[str] = []
    for i, item in enumerate(arms_raw):
        arm = _target(item, f"traffic.bandit.arms[{i}]")
        if arm in arms:
            raise InvalidInput(f"traffic.bandit.arms[{i}] '{arm}' appears twice in traffic.bandit.arms")
        arms.append(arm)
    reward: RewardKind
    match body.get("reward", "binary"):
        case "binary":
            reward = "binary"
        case "continuous":
            reward = "continuous"
        case _:
            raise InvalidInput("traffic.bandit.reward must be 'binary' or 'continuous'")
    epsilon = 0.1
    if "epsilon" in body:
        if algorithm != "epsilon_greedy":
            raise InvalidInput("traffic.bandit.epsilon applies only to algorithm 'epsilon_greedy'")
        value = _number(body["epsilon"])
        if value is None or not 0 <= value <= 1:
            raise InvalidInput("traffic.bandit.epsilon must be a number between 0 and 1")
        epsilon = value
    return BanditSpec(algorithm=algorithm, arms=tuple(arms), reward=reward, epsilon=epsilon)
