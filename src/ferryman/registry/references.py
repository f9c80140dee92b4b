"""What still refers to a version or an alias, so that nothing is deleted from under it.

An alias, the traffic policy, an active rollout or an explicit version policy may name a
version; the traffic policy or an active rollout may name an alias. Deleting or moving what
they name is refused with a Conflict that says which, and what to do first.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from sqlalchemy import Connection, Row, select

from ferryman.errors import Conflict, FerrymanError
from ferryman.registry.core import quoted
from ferryman.registry.records import ACTIVE_ROLLOUT_STATES
from ferryman.registry.store import aliases, rollouts, traffic_policies, version_policies
from ferryman.registry.traffic_spec import parse_traffic_policy

__all__ = [
    "active_rollout_row",
    "policy_targets",
    "refuse_alias_delete",
    "refuse_alias_under_rollout",
    "refuse_version_delete",
]

logger = logging.getLogger(__name__)


def policy_targets(policy: dict[str, Any]) -> set[str]:
    """The aliases and version numbers (as strings) a traffic policy names."""
    try:
        return {str(target) for target in parse_traffic_policy(policy).targets()}
    except FerrymanError:
        # A policy stored under an older format: still protect everything it seems to name.
        logger.warning("stored traffic policy no longer parses; scanning it for targets instead")
        return _scan_targets(policy)


def _scan_targets(value: Any) -> set[str]:
    found: set[str] = set()
    if isinstance(value, dict):
        for key, item in value.items():
            if key == "target" and isinstance(item, str | int):
                found.add(str(item))
            elif key == "arms" and isinstance(item, list):
                found.update(str(arm) for arm in item if isinstance(arm, str | int))
            else:
                found |= _scan_targets(item)
    elif isinstance(value, list):
        for item in value:
            found |= _scan_targets(item)
    return found


def _stored_policy_targets(conn: Connection, model_id: int) -> set[str]:
    stored = conn.execute(
        select(traffic_policies.c.policy).where(traffic_policies.c.model_id == model_id)
    ).scalar_one_or_none()
    return set() if stored is None else policy_targets(json.loads(stored))


def active_rollout_row(conn: Connection, model_id: int) -> Row[Any] | None:
    """The model's running or paused rollout, if any (there is at most one)."""
    return conn.execute(
        select(rollouts)
        .where(rollouts.c.model_id == model_id, rollouts.c.state.in_(ACTIVE_ROLLOUT_STATES))
        .order_by(rollouts.c.id.desc())
    ).first()


def refuse_version_delete(conn: Connection, model: Row[Any], version: int) -> None:
    """Conflict naming every alias, policy and rollout that still refers to ``version``."""
    what: list[str] = []
    advice: list[str] = []
    pointing = (
        conn.execute(
            select(aliases.c.name)
            .where(aliases.c.model_id == model.id, aliases.c.version_number == version)
            .order_by(aliases.c.name)
        )
        .scalars()
        .all()
    )
    if pointing:
        noun = "alias" if len(pointing) == 1 else "aliases"
        what.append(f"the target of {noun} {quoted(pointing)}")
        advice.append(f"move or delete the {noun}")
    if str(version) in _stored_policy_targets(conn, model.id):
        what.append("named by the traffic policy")
        advice.append("change or clear the traffic policy")
    rollout = active_rollout_row(conn, model.id)
    if rollout is not None and version in (rollout.from_version, rollout.to_version):
        what.append(f"part of rollout #{rollout.id} ({rollout.state})")
        advice.append("abort the rollout or let it finish")
    kept = conn.execute(
        select(version_policies.c.policy).where(version_policies.c.model_id == model.id)
    ).scalar_one_or_none()
    if kept is not None and version in json.loads(kept).get("versions", []):
        what.append("kept by the explicit version policy")
        advice.append("change the version policy")
    if what:
        raise Conflict(f"version {version} of '{model.name}' is {' and '.join(what)}; {', and '.join(advice)} first")


def refuse_alias_under_rollout(conn: Connection, model: Row[Any], alias: str) -> None:
    """Conflict while a running or paused rollout moves ``alias``: only the rollout may move it."""
    rollout = active_rollout_row(conn, model.id)
    if rollout is not None and rollout.alias == alias:
        raise Conflict(
            f"alias '{alias}' of '{model.name}' is being rolled out from version {rollout.from_version} "
            f"to {rollout.to_version} (rollout #{rollout.id}, {rollout.state}); abort the rollout first"
        )


def refuse_alias_delete(conn: Connection, model: Row[Any], alias: str) -> None:
    """Conflict while the traffic policy or an active rollout names ``alias``."""
    refuse_alias_under_rollout(conn, model, alias)
    if alias in _stored_policy_targets(conn, model.id):
        raise Conflict(
            f"alias '{alias}' of '{model.name}' is named by the traffic policy; change or clear the policy first"
        )
