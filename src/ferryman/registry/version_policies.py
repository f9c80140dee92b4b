"""Version policies: which versions of a model stay loaded.

``{"keep": "aliased_and_latest", "latest": N}`` (the default, with N = 1) keeps every version an
alias points at plus the N newest; ``{"keep": "explicit", "versions": [3, 4]}`` keeps exactly
those. The registry stores and validates the policy; the model manager obeys it.
"""

from __future__ import annotations

import json
from typing import Any

from sqlalchemy import insert, select, update

from ferryman.errors import InvalidInput, NotFound
from ferryman.registry import queries, store
from ferryman.registry.core import RegistryCore, Unchanged, to_json, utc_now
from ferryman.registry.records import ChangeEvent, VersionPolicy
from ferryman.registry.store import models, version_policies, versions

__all__ = ["DEFAULT_VERSION_POLICY", "MAX_LATEST", "VersionPolicies", "parse_version_policy"]

#: What a model without a stored policy gets: aliased versions plus the newest one.
DEFAULT_VERSION_POLICY = VersionPolicy()

#: Upper bound on ``latest``, so a typo cannot ask to keep every version of a large model loaded.
MAX_LATEST = 1000

_KEEPS = ("aliased_and_latest", "explicit")


def parse_version_policy(raw: Any) -> VersionPolicy:
    """Validate a version policy document; InvalidInput naming the field that is wrong."""
    if not isinstance(raw, dict):
        raise InvalidInput("the version policy must be a JSON object")
    keep = raw.get("keep")
    if keep not in _KEEPS:
        raise InvalidInput(f"keep: expected 'aliased_and_latest' or 'explicit', got {keep!r}")
    allowed = {"keep", "latest"} if keep == "aliased_and_latest" else {"keep", "versions"}
    unknown = sorted(set(raw) - allowed)
    if unknown:
        raise InvalidInput(
            f"{unknown[0]}: not a field of a '{keep}' version policy (fields: {', '.join(sorted(allowed))})"
        )
    if keep == "aliased_and_latest":
        latest = raw.get("latest", 1)
        if not _is_int(latest) or not 0 <= latest <= MAX_LATEST:
            raise InvalidInput(f"latest: expected a whole number from 0 to {MAX_LATEST}, got {latest!r}")
        return VersionPolicy(keep=keep, latest=latest)
    listed = raw.get("versions")
    if not isinstance(listed, list) or not listed:
        raise InvalidInput(f"versions: expected a non-empty list of version numbers, got {listed!r}")
    for index, number in enumerate(listed):
        if not _is_int(number) or number < 1:
            raise InvalidInput(f"versions[{index}]: expected a positive version number, got {number!r}")
    return VersionPolicy(keep=keep, latest=0, versions=tuple(sorted(set(listed))))


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


class VersionPolicies(RegistryCore):
    """Version policy reads and writes, part of RegistryService."""

    def get_version_policy(self, name: str) -> VersionPolicy:
        """The model's version policy (the default when none was set); NotFound if unknown."""
        with self._engine.connect() as conn:
            model = queries.model_row(conn, name)
            stored = conn.execute(
                select(version_policies.c.policy).where(version_policies.c.model_id == model.id)
            ).scalar_one_or_none()
        return DEFAULT_VERSION_POLICY if stored is None else parse_version_policy(json.loads(stored))

    def version_policies(self) -> dict[str, VersionPolicy]:
        """Every stored (non-default) version policy, by model name (for building the catalog)."""
        with self._engine.connect() as conn:
            rows = conn.execute(
                select(models.c.name, version_policies.c.policy).join(
                    models, models.c.id == version_policies.c.model_id
                )
            )
            return {row.name: parse_version_policy(json.loads(row.policy)) for row in rows}

    def set_version_policy(self, name: str, policy: dict[str, Any], *, changed_by: str = "local") -> VersionPolicy:
        """Validate and store the model's version policy; NotFound naming a listed version that does not exist."""
        parsed = parse_version_policy(policy)
        encoded = to_json(parsed.to_dict(), "the version policy")
        try:
            with store.write_transaction(self._engine) as conn:
                model = queries.model_row(conn, name)
                existing = set(
                    conn.execute(select(versions.c.number).where(versions.c.model_id == model.id)).scalars().all()
                )
                for index, number in enumerate(policy.get("versions") or []):
                    if number not in existing:
                        raise NotFound(f"versions[{index}]: model '{name}' has no version {number}")
                stored = conn.execute(
                    select(version_policies.c.policy).where(version_policies.c.model_id == model.id)
                ).scalar_one_or_none()
                if stored == encoded:
                    raise Unchanged(parsed)
                fields = {"policy": encoded, "updated_at": utc_now(), "updated_by": changed_by}
                if stored is None:
                    conn.execute(insert(version_policies).values(model_id=model.id, **fields))
                else:
                    conn.execute(
                        update(version_policies).where(version_policies.c.model_id == model.id).values(**fields)
                    )
        except Unchanged:
            return parsed
        self._notify([ChangeEvent("version_policy_set", name)])
        return parsed
