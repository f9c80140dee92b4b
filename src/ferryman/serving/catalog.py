"""What can be served: one immutable snapshot of every model version, from every source.

Two sources feed it: the registry (pushed versions) and read-only repository folders. A
snapshot is rebuilt off the event loop and swapped in with one assignment, so the request path
reads it without locks.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field, replace
from datetime import datetime
from pathlib import Path
from typing import Any

from ferryman.errors import FerrymanError, NotFound
from ferryman.registry.records import RolloutRecord, VersionPolicy, VersionRecord
from ferryman.registry.repository import ModelRepository
from ferryman.registry.service import RegistryService
from ferryman.registry.traffic_spec import parse_traffic_policy
from ferryman.serving.traffic import CompiledTraffic, compile_policy
from ferryman.tensors import Signature

__all__ = ["DEFAULT_ALIAS", "Catalog", "CatalogModel", "CatalogVersion"]

logger = logging.getLogger(__name__)

#: The alias a request without a version is served from, when it is set.
DEFAULT_ALIAS = "production"


@dataclass(frozen=True, slots=True)
class CatalogVersion:
    """One servable version and where its artifact comes from."""

    model: str
    version: int
    source: str
    sha256: str
    framework: str | None
    runtime_config: dict[str, Any]
    signature: Signature | None = None
    #: Registry versions: the blob's file name in the artifact store.
    filename: str | None = None
    #: Repository versions: the version folder.
    path: Path | None = None
    record: VersionRecord | None = None


@dataclass(frozen=True, slots=True)
class CatalogModel:
    """A model name with its versions and aliases."""

    name: str
    source: str
    versions: dict[int, CatalogVersion]
    aliases: dict[str, int] = field(default_factory=dict)
    description: str = ""
    created_at: datetime | None = None
    #: The model's traffic policy compiled for the request path (None: no policy).
    traffic: CompiledTraffic | None = None
    #: The model's running or paused progressive rollout, if any.
    rollout: RolloutRecord | None = None
    #: Which versions stay loaded (None: the default, aliased versions + the latest).
    version_policy: VersionPolicy | None = None

    @property
    def default_version(self) -> int | None:
        """The version a request without one gets: the production alias if set, else the latest."""
        aliased = self.aliases.get(DEFAULT_ALIAS)
        if aliased is not None and aliased in self.versions:
            return aliased
        return max(self.versions) if self.versions else None

    def aliases_of(self, version: int) -> list[str]:
        """Aliases that point at ``version``."""
        return sorted(alias for alias, target in self.aliases.items() if target == version)

    def resolve_target(self, target: str) -> int:
        """A traffic-policy target (version number or alias) as a version number; NotFound otherwise."""
        if target.isdigit() and int(target) in self.versions:
            return int(target)
        number = self.aliases.get(target)
        if number is None or number not in self.versions:
            raise NotFound(f"model '{self.name}' has no version or alias '{target}'")
        return number

    def versions_to_keep(self) -> set[int]:
        """Versions that should stay loaded: the version policy's, plus what traffic is routed to."""
        aliased = {number for number in self.aliases.values() if number in self.versions}
        if self.version_policy is not None:
            keep = self.version_policy.versions_to_keep(self.versions, aliased)
        else:
            keep = aliased | ({max(self.versions)} if self.versions else set())
        if self.traffic is not None:
            keep |= self.traffic.versions
            shadow = self.traffic.shadow_target()
            if shadow is not None:
                keep.add(shadow)
        if self.rollout is not None and self.rollout.active:
            keep |= {self.rollout.from_version, self.rollout.to_version}
        return {number for number in keep if number in self.versions}


class Catalog:
    """The current snapshot of servable models, rebuilt on demand from its sources."""

    def __init__(self, registry: RegistryService, repository: ModelRepository | None) -> None:
        self._registry = registry
        self._repository = repository
        self.models: dict[str, CatalogModel] = {}
        #: The registry revision the snapshot was built from (None before the first refresh).
        self.revision: int | None = None
        #: Per model: what its compiled traffic policy was built from, and the compiled policy.
        self._compiled: dict[str, tuple[tuple[Any, ...], CompiledTraffic]] = {}

    def registry_revision(self) -> int:
        """The registry's current change counter (one cheap query; blocking)."""
        return self._registry.revision()

    def refresh(self) -> bool:
        """Rebuild the snapshot (blocking: call off the event loop); True when anything changed."""
        revision = self._registry.revision()
        policies = self._registry.traffic_policies()
        rollouts = self._registry.active_rollouts()
        version_policies = self._registry.version_policies()
        models: dict[str, CatalogModel] = {}
        for record in self._registry.list_models():
            versions = {
                v.version: CatalogVersion(
                    model=v.model,
                    version=v.version,
                    source="registry",
                    sha256=v.sha256,
                    framework=v.framework,
                    runtime_config=v.runtime_config,
                    signature=v.signature,
                    filename=v.filename,
                    record=v,
                )
                for v in self._registry.list_versions(record.name)
            }
            model = CatalogModel(
                name=record.name,
                source="registry",
                versions=versions,
                aliases=dict(record.aliases),
                description=record.description,
                created_at=record.created_at,
                rollout=rollouts.get(record.name),
                version_policy=version_policies.get(record.name),
            )
            models[record.name] = self._with_traffic(model, policies.get(record.name))
        if self._repository is not None:
            for name, found in self._repository.scan().items():
                if name in models:
                    logger.warning("repository model %r is shadowed by the registry model of that name", name)
                    continue
                models[name] = CatalogModel(
                    name=name,
                    source="repository",
                    versions={
                        number: CatalogVersion(
                            model=name,
                            version=number,
                            source="repository",
                            sha256=entry.sha256,
                            framework=entry.framework,
                            runtime_config=entry.runtime_config,
                            path=entry.path,
                        )
                        for number, entry in found.items()
                    },
                    description=next(iter(found.values())).description if found else "",
                )
        changed = models != self.models
        self.models = models
        self.revision = revision
        return changed

    def _with_traffic(self, model: CatalogModel, stored: tuple[dict[str, Any], int] | None) -> CatalogModel:
        """Attach the compiled traffic policy, reusing the previous one (and its bandit) when unchanged."""
        if stored is None:
            return model
        policy, revision = stored
        previous = self.models.get(model.name)
        key = (revision, tuple(sorted(model.aliases.items())), tuple(sorted(model.versions)))
        cached = self._compiled.get(model.name)
        if cached is not None and cached[0] == key:
            return replace(model, traffic=cached[1])
        try:
            compiled = compile_policy(parse_traffic_policy(policy), model.resolve_target, namespace=model.name)
        except FerrymanError as exc:
            # Stored policies were valid when written; one whose target has gone is ignored, loudly.
            logger.error("traffic policy of model '%s' ignored: %s", model.name, exc.message)
            return model
        old = previous.traffic if previous is not None else None
        if old is not None and old.bandit is not None and compiled.bandit is not None:
            compiled.bandit.restore(old.bandit.state())  # the bandit keeps what it learned
        self._compiled[model.name] = (key, compiled)
        return replace(model, traffic=compiled)
