"""What can be served: one immutable snapshot of every model version, from every source.

Two sources feed it: the registry (pushed versions) and read-only repository folders. A
snapshot is rebuilt off the event loop and swapped in with one assignment, so the request path
reads it without locks.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from ferryman.registry.records import VersionRecord
from ferryman.registry.repository import ModelRepository
from ferryman.registry.service import RegistryService
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


class Catalog:
    """The current snapshot of servable models, rebuilt on demand from its sources."""

    def __init__(self, registry: RegistryService, repository: ModelRepository | None) -> None:
        self._registry = registry
        self._repository = repository
        self.models: dict[str, CatalogModel] = {}
        #: The registry revision the snapshot was built from (None before the first refresh).
        self.revision: int | None = None

    def registry_revision(self) -> int:
        """The registry's current change counter (one cheap query; blocking)."""
        return self._registry.revision()

    def refresh(self) -> bool:
        """Rebuild the snapshot (blocking: call off the event loop); True when anything changed."""
        revision = self._registry.revision()
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
            models[record.name] = CatalogModel(
                name=record.name,
                source="registry",
                versions=versions,
                aliases=dict(record.aliases),
                description=record.description,
                created_at=record.created_at,
            )
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
