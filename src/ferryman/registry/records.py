"""Immutable records the registry hands out, the change events it emits, and name rules."""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from ferryman.errors import InvalidInput
from ferryman.tensors import Signature

__all__ = [
    "ACTIVE_ROLLOUT_STATES",
    "CHANGE_KINDS",
    "ROLLOUT_STATES",
    "AliasChange",
    "ChangeEvent",
    "FeedbackRecord",
    "ModelRecord",
    "RolloutRecord",
    "TrafficPolicyChange",
    "VersionPolicy",
    "VersionRecord",
    "validate_alias_name",
    "validate_model_name",
]

_MODEL_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}", re.ASCII)
_ALIAS_NAME = re.compile(r"[a-z][a-z0-9_-]{0,63}", re.ASCII)

#: Every ``ChangeEvent.kind`` the registry emits.
CHANGE_KINDS = frozenset(
    {
        "version_added",
        "version_deleted",
        "alias_set",
        "alias_deleted",
        "traffic_policy_set",
        "traffic_policy_cleared",
        "version_policy_set",
        "rollout_started",
        "rollout_changed",
        "feedback_recorded",
    }
)

#: Every state a rollout can be in; only the active ones can still change.
ROLLOUT_STATES = ("running", "paused", "completed", "rolled_back", "aborted", "failed")
ACTIVE_ROLLOUT_STATES = frozenset({"running", "paused"})


def validate_model_name(name: str) -> str:
    """Return ``name`` if it is a valid model name, else raise InvalidInput saying why."""
    if not isinstance(name, str) or not _MODEL_NAME.fullmatch(name):
        raise InvalidInput(f"invalid model name {name!r}: must match [A-Za-z0-9][A-Za-z0-9._-]{{0,127}}")
    if ".." in name:
        raise InvalidInput(f"invalid model name {name!r}: must not contain '..'")
    return name


def validate_alias_name(alias: str) -> str:
    """Return ``alias`` if it is a valid alias name, else raise InvalidInput saying why.

    Aliases start with a lowercase letter, so one can never be mistaken for a version number.
    """
    if not isinstance(alias, str) or not _ALIAS_NAME.fullmatch(alias):
        raise InvalidInput(f"invalid alias name {alias!r}: must match [a-z][a-z0-9_-]{{0,63}}")
    return alias


@dataclass(frozen=True, slots=True)
class VersionRecord:
    """One immutable version of a registered model."""

    model: str
    version: int
    framework: str
    sha256: str
    size: int
    filename: str
    signature: Signature
    runtime_config: dict[str, Any]
    description: str
    created_by: str
    created_at: datetime
    #: ``ed25519:<key id>:<base64>`` over ``sha256`` (security/signing.py), None when unsigned.
    artifact_signature: str | None = None

    @property
    def is_folder(self) -> bool:
        """True when the artifact is a packed folder (a ``.tar``) rather than a single file."""
        return self.filename.endswith(".tar")

    def to_dict(self) -> dict[str, Any]:
        """Serialise as the JSON-safe core of the management API's version object."""
        return {
            "model": self.model,
            "version": self.version,
            "framework": self.framework,
            "sha256": self.sha256,
            "size": self.size,
            "filename": self.filename,
            "signature": self.signature.to_dict(),
            "runtime_config": dict(self.runtime_config),
            "description": self.description,
            "created_by": self.created_by,
            "created_at": self.created_at.isoformat(),
            "artifact_signature": self.artifact_signature,
        }


@dataclass(frozen=True, slots=True)
class ModelRecord:
    """A registered model: its versions summarised and its aliases."""

    name: str
    description: str
    created_at: datetime
    latest_version: int | None
    version_count: int
    aliases: dict[str, int]

    def to_dict(self) -> dict[str, Any]:
        """Serialise as the JSON-safe core of the management API's model object."""
        return {
            "name": self.name,
            "description": self.description,
            "created_at": self.created_at.isoformat(),
            "latest_version": self.latest_version,
            "version_count": self.version_count,
            "aliases": dict(self.aliases),
        }


@dataclass(frozen=True, slots=True)
class AliasChange:
    """One entry of an alias's history; ``None`` means unset (before creation, after deletion)."""

    model: str
    alias: str
    from_version: int | None
    to_version: int | None
    changed_by: str
    changed_at: datetime

    def to_dict(self) -> dict[str, Any]:
        """Serialise as an entry of the management API's alias history."""
        return {
            "model": self.model,
            "alias": self.alias,
            "from_version": self.from_version,
            "to_version": self.to_version,
            "changed_by": self.changed_by,
            "changed_at": self.changed_at.isoformat(),
        }


@dataclass(frozen=True, slots=True)
class TrafficPolicyChange:
    """One change of a model's traffic policy; ``None`` means no policy (before, or cleared)."""

    model: str
    revision: int
    old_policy: dict[str, Any] | None
    new_policy: dict[str, Any] | None
    changed_by: str
    changed_at: datetime

    def to_dict(self) -> dict[str, Any]:
        """Serialise as an entry of the management API's traffic policy history."""
        return {
            "model": self.model,
            "revision": self.revision,
            "old_policy": self.old_policy,
            "new_policy": self.new_policy,
            "changed_by": self.changed_by,
            "changed_at": self.changed_at.isoformat(),
        }


@dataclass(frozen=True, slots=True)
class VersionPolicy:
    """Which versions of a model stay loaded.

    ``aliased_and_latest``: every version an alias points at, plus the ``latest`` newest ones.
    ``explicit``: exactly ``versions``.
    """

    keep: str = "aliased_and_latest"
    latest: int = 1
    versions: tuple[int, ...] = ()

    def versions_to_keep(self, versions: Iterable[int], aliased: Iterable[int]) -> set[int]:
        """The subset of ``versions`` (existing numbers) this policy keeps loaded."""
        existing = set(versions)
        if self.keep == "explicit":
            return existing & set(self.versions)
        newest = sorted(existing, reverse=True)[: self.latest]
        return (existing & set(aliased)) | set(newest)

    def to_dict(self) -> dict[str, Any]:
        """The policy as the management API shows and accepts it."""
        if self.keep == "explicit":
            return {"keep": "explicit", "versions": list(self.versions)}
        return {"keep": self.keep, "latest": self.latest}


@dataclass(frozen=True, slots=True)
class RolloutRecord:
    """A progressive rollout of ``alias`` from one version to another, step by step.

    While active, the step's share (``weight``, percent) of the alias's traffic goes to
    ``to_version``; the alias itself moves only when the rollout completes.
    """

    id: int
    model: str
    alias: str
    from_version: int
    to_version: int
    steps: tuple[float, ...]
    step_index: int
    interval_s: float
    guards: dict[str, float]
    state: str
    reason: str
    step_started_at: datetime
    created_by: str
    created_at: datetime
    updated_at: datetime
    revision: int

    @property
    def active(self) -> bool:
        """True while running or paused (it can still change, and it routes traffic)."""
        return self.state in ACTIVE_ROLLOUT_STATES

    @property
    def weight(self) -> float:
        """Percent of the alias's traffic that goes to ``to_version`` now."""
        if self.active:
            return self.steps[self.step_index]
        return 100.0 if self.state == "completed" else 0.0

    def to_dict(self) -> dict[str, Any]:
        """Serialise as the management API's rollout object."""
        return {
            "id": self.id,
            "model": self.model,
            "alias": self.alias,
            "from_version": self.from_version,
            "to_version": self.to_version,
            "steps": list(self.steps),
            "step_index": self.step_index,
            "weight": self.weight,
            "interval_s": self.interval_s,
            "guards": dict(self.guards),
            "state": self.state,
            "reason": self.reason,
            "step_started_at": self.step_started_at.isoformat(),
            "created_by": self.created_by,
            "created_at": self.created_at.isoformat(),
            "updated_at": self.updated_at.isoformat(),
            "revision": self.revision,
        }


@dataclass(frozen=True, slots=True)
class FeedbackRecord:
    """One piece of feedback about a prediction: a reward (bandits), a label (live accuracy), or both."""

    id: int
    model: str
    request_id: str
    version: int | None
    reward: float | None
    label: Any
    received_at: datetime
    #: What the version predicted for the request, when known (the server fills it in from its ledger).
    prediction: Any = None

    def to_dict(self) -> dict[str, Any]:
        """Serialise as JSON-safe values."""
        return {
            "id": self.id,
            "model": self.model,
            "request_id": self.request_id,
            "version": self.version,
            "reward": self.reward,
            "label": self.label,
            "prediction": self.prediction,
            "received_at": self.received_at.isoformat(),
        }


@dataclass(frozen=True, slots=True)
class ChangeEvent:
    """What changed in the registry, sent to subscribers after the write commits."""

    kind: str
    model: str
    version: int | None = None
    alias: str | None = None

    def __post_init__(self) -> None:
        if self.kind not in CHANGE_KINDS:
            raise ValueError(f"unknown change kind {self.kind!r}; expected one of {sorted(CHANGE_KINDS)}")
