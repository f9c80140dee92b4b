"""Immutable records the registry hands out, the change events it emits, and name rules."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from ferryman.errors import InvalidInput
from ferryman.tensors import Signature

__all__ = [
    "CHANGE_KINDS",
    "AliasChange",
    "ChangeEvent",
    "ModelRecord",
    "VersionRecord",
    "validate_alias_name",
    "validate_model_name",
]

_MODEL_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}", re.ASCII)
_ALIAS_NAME = re.compile(r"[a-z][a-z0-9_-]{0,63}", re.ASCII)

#: Every ``ChangeEvent.kind`` the registry emits.
CHANGE_KINDS = frozenset({"version_added", "version_deleted", "alias_set", "alias_deleted"})


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
class ChangeEvent:
    """What changed in the registry, sent to subscribers after the write commits."""

    kind: str
    model: str
    version: int | None = None
    alias: str | None = None

    def __post_init__(self) -> None:
        if self.kind not in CHANGE_KINDS:
            raise ValueError(f"unknown change kind {self.kind!r}; expected one of {sorted(CHANGE_KINDS)}")
