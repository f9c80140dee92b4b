"""The registry's only writer: models, immutable versions and aliases with their history.

Every write is one transaction under the registry's write lock that also bumps
``registry_state.revision``; subscribers hear about it only after the commit. Version numbers
grow per model and are never reused, even after a delete. Traffic policies, version policies,
rollouts, alias rollback and feedback are written by the classes this one is assembled from.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from typing import Any

from sqlalchemy import Engine, delete, func, insert, select, update
from sqlalchemy.exc import IntegrityError

from ferryman.errors import Conflict, NotFound
from ferryman.registry import queries, references, store
from ferryman.registry.alerts import AlertStore
from ferryman.registry.alias_rollback import AliasRollback
from ferryman.registry.api_keys import ApiKeys
from ferryman.registry.artifacts import ArtifactStore, StagedArtifact
from ferryman.registry.audit_log import AuditLog
from ferryman.registry.core import (
    Unchanged,
    quoted,
    record_alias_change,
    to_json,
    utc_now,
    write_alias,
)
from ferryman.registry.feedback import FeedbackStore
from ferryman.registry.feedback_windows import LabelledFeedback
from ferryman.registry.profiles import ProfileStore
from ferryman.registry.records import (
    AliasChange,
    ChangeEvent,
    ModelRecord,
    VersionRecord,
    validate_alias_name,
    validate_model_name,
)
from ferryman.registry.rollouts import Rollouts
from ferryman.registry.store import (
    alias_history,
    aliases,
    feedback,
    models,
    registry_state,
    rollouts,
    traffic_policies,
    traffic_policy_history,
    version_policies,
    version_profiles,
    versions,
)
from ferryman.registry.traffic_policies import TrafficPolicies
from ferryman.registry.version_policies import VersionPolicies
from ferryman.registry.webhooks import WebhookStore
from ferryman.tensors import Signature

__all__ = ["ChangeListener", "RegistryService"]

logger = logging.getLogger(__name__)

ChangeListener = Callable[[ChangeEvent], None]

_REGISTER_ATTEMPTS = 5

#: Tables holding per-model rows that go with the model when it is deleted.
_MODEL_TABLES = (
    alias_history,
    traffic_policy_history,
    traffic_policies,
    version_policies,
    rollouts,
    feedback,
    version_profiles,
)


class RegistryService(
    TrafficPolicies,
    VersionPolicies,
    Rollouts,
    AliasRollback,
    FeedbackStore,
    ApiKeys,
    AuditLog,
    ProfileStore,
    AlertStore,
    WebhookStore,
    LabelledFeedback,
):
    """Reads and writes the registry; the only code that changes it."""

    def __init__(self, engine: Engine, artifacts: ArtifactStore) -> None:
        self._engine = engine
        self._artifacts = artifacts
        self._listeners: list[ChangeListener] = []
        self._listeners_lock = threading.Lock()

    @property
    def artifacts(self) -> ArtifactStore:
        """The artifact store holding this registry's blobs."""
        return self._artifacts

    # -- reads ---------------------------------------------------------------------------------

    def revision(self) -> int:
        """The registry's change counter; it grows with every committed write."""
        with self._engine.connect() as conn:
            return int(conn.execute(select(registry_state.c.revision)).scalar_one())

    def list_models(self) -> list[ModelRecord]:
        """All models, sorted by name."""
        with self._engine.connect() as conn:
            return queries.model_records(conn)

    def get_model(self, name: str) -> ModelRecord:
        """One model; NotFound if unknown."""
        with self._engine.connect() as conn:
            found = queries.model_records(conn, name)
        if not found:
            raise NotFound(f"model '{name}' not found")
        return found[0]

    def list_versions(self, name: str) -> list[VersionRecord]:
        """A model's versions in ascending order; NotFound if the model is unknown."""
        with self._engine.connect() as conn:
            model = queries.model_row(conn, name)
            rows = conn.execute(select(versions).where(versions.c.model_id == model.id).order_by(versions.c.number))
            return [queries.version_record(model.name, row) for row in rows]

    def get_version(self, name: str, version: int) -> VersionRecord:
        """One version; NotFound naming the model or the version."""
        with self._engine.connect() as conn:
            model = queries.model_row(conn, name)
            return queries.version_record(model.name, queries.version_row(conn, model, version))

    def find_by_sha(self, name: str, sha256: str) -> VersionRecord | None:
        """The version of ``name`` whose artifact has this sha256, if any."""
        with self._engine.connect() as conn:
            row = conn.execute(
                select(versions)
                .join(models, models.c.id == versions.c.model_id)
                .where(models.c.name == name, versions.c.sha256 == sha256)
                .order_by(versions.c.number)
            ).first()
        return None if row is None else queries.version_record(name, row)

    def aliases(self, name: str) -> dict[str, int]:
        """A model's aliases and the versions they point at; NotFound if the model is unknown."""
        with self._engine.connect() as conn:
            model = queries.model_row(conn, name)
            return queries.alias_map(conn, [model.id])[model.id]

    def alias_history(self, name: str, alias: str) -> list[AliasChange]:
        """Every change of one alias, newest first (empty if it was never set)."""
        with self._engine.connect() as conn:
            model = queries.model_row(conn, name)
            rows = conn.execute(
                select(alias_history)
                .where(alias_history.c.model_id == model.id, alias_history.c.alias == alias)
                .order_by(alias_history.c.id.desc())
            )
            return [
                AliasChange(
                    model=model.name,
                    alias=row.alias,
                    from_version=row.from_version,
                    to_version=row.to_version,
                    changed_by=row.changed_by,
                    changed_at=row.changed_at,
                )
                for row in rows
            ]

    # -- writes --------------------------------------------------------------------------------

    def subscribe(self, listener: ChangeListener) -> None:
        """Call ``listener`` with every change after it commits (exceptions are logged)."""
        with self._listeners_lock:
            self._listeners.append(listener)

    def register_version(
        self,
        name: str,
        staged: StagedArtifact,
        *,
        framework: str,
        signature: Signature,
        runtime_config: dict[str, Any],
        description: str = "",
        created_by: str = "local",
        artifact_signature: str | None = None,
    ) -> tuple[VersionRecord, bool]:
        """Add ``staged`` as the model's next version, creating the model if needed.

        Returns ``(record, True)``, or ``(existing, False)`` when this model already has a
        version with the same bytes. The staged file is consumed either way: published,
        or discarded when it is a duplicate or the registration fails.
        """
        try:
            validate_model_name(name)
            existing = self.find_by_sha(name, staged.sha256)
            if existing is not None:
                self._artifacts.discard(staged)
                return existing, False
            values = {
                "framework": framework,
                "sha256": staged.sha256,
                "size": staged.size,
                "filename": staged.filename,
                "signature": to_json(signature.to_dict(), "signature"),
                "runtime_config": to_json(runtime_config, "runtime_config"),
                "description": description,
                "created_by": created_by,
                "artifact_signature": artifact_signature,
            }
        except BaseException:
            self._artifacts.discard(staged)
            raise
        attempt = 1
        while True:
            try:
                record = self._insert_version(name, staged, values)
            except Unchanged as unchanged:
                self._artifacts.discard(staged)
                duplicate: VersionRecord = unchanged.value
                return duplicate, False
            except IntegrityError:
                if attempt < _REGISTER_ATTEMPTS:
                    logger.info("version insert for %r collided with a concurrent write; retrying", name)
                    attempt += 1
                    continue
                self._abandon(staged)
                raise
            except BaseException:
                self._abandon(staged)
                raise
            self._notify([ChangeEvent("version_added", name, version=record.version)])
            return record, True

    def _insert_version(self, name: str, staged: StagedArtifact, values: dict[str, Any]) -> VersionRecord:
        with store.write_transaction(self._engine) as conn:
            now = utc_now()
            model = conn.execute(select(models).where(models.c.name == name)).first()
            if model is None:
                conn.execute(insert(models).values(name=name, description="", created_at=now))
                model = queries.model_row(conn, name)
            duplicate = conn.execute(
                select(versions).where(versions.c.model_id == model.id, versions.c.sha256 == staged.sha256)
            ).first()
            if duplicate is not None:
                raise Unchanged(queries.version_record(name, duplicate))
            # Published under the write lock so a concurrent delete cannot collect the blob
            # between its publication and the commit of the row that references it.
            self._artifacts.publish(staged)
            number = model.last_version + 1
            conn.execute(update(models).where(models.c.id == model.id).values(last_version=number))
            conn.execute(insert(versions).values(model_id=model.id, number=number, created_at=now, **values))
            return queries.version_record(name, queries.version_row(conn, model, number))

    def _abandon(self, staged: StagedArtifact) -> None:
        self._artifacts.discard(staged)
        self._collect_blob(staged.sha256, staged.filename)

    def delete_version(self, name: str, version: int) -> None:
        """Delete one version and, when nothing else references it, its artifact.

        Conflict while an alias, the traffic policy, an active rollout or an explicit version
        policy refers to the version.
        """
        with store.write_transaction(self._engine) as conn:
            model = queries.model_row(conn, name)
            row = queries.version_row(conn, model, version)
            references.refuse_version_delete(conn, model, version)
            conn.execute(delete(versions).where(versions.c.id == row.id))
            conn.execute(
                delete(version_profiles).where(
                    version_profiles.c.model_id == model.id, version_profiles.c.version == version
                )
            )
        self._notify([ChangeEvent("version_deleted", name, version=version)])
        self._collect_blob(row.sha256, row.filename)

    def delete_model(self, name: str) -> None:
        """Delete a model with all its versions and their artifacts; Conflict while it has aliases."""
        with store.write_transaction(self._engine) as conn:
            model = queries.model_row(conn, name)
            names = queries.alias_map(conn, [model.id])[model.id]
            if names:
                noun = "alias" if len(names) == 1 else "aliases"
                raise Conflict(f"model '{name}' has {noun} {quoted(list(names))}; delete the {noun} first")
            rows = conn.execute(
                select(versions).where(versions.c.model_id == model.id).order_by(versions.c.number)
            ).all()
            for table in _MODEL_TABLES:
                conn.execute(delete(table).where(table.c.model_id == model.id))
            conn.execute(delete(versions).where(versions.c.model_id == model.id))
            conn.execute(delete(models).where(models.c.id == model.id))
        self._notify([ChangeEvent("version_deleted", name, version=row.number) for row in rows])
        for sha256, filename in sorted({(row.sha256, row.filename) for row in rows}):
            self._collect_blob(sha256, filename)

    def set_alias(
        self,
        name: str,
        alias: str,
        version: int,
        *,
        changed_by: str = "local",
        expected_version: int | None = None,
    ) -> int | None:
        """Point ``alias`` at ``version``; returns the version it pointed at before (None if new).

        With ``expected_version``, Conflict unless the alias points at that version now (an
        optimistic write: read, decide, write only if nobody moved it in between). Conflict
        while a rollout moves the alias. Setting an alias to its current version changes
        nothing and records no history.
        """
        validate_alias_name(alias)
        try:
            with store.write_transaction(self._engine) as conn:
                model = queries.model_row(conn, name)
                queries.version_row(conn, model, version)
                previous = conn.execute(
                    select(aliases.c.version_number).where(aliases.c.model_id == model.id, aliases.c.name == alias)
                ).scalar_one_or_none()
                if expected_version is not None and previous != expected_version:
                    now_at = "is not set" if previous is None else f"points at version {previous}"
                    raise Conflict(
                        f"alias '{alias}' of '{name}' {now_at}, not the expected version {expected_version}; "
                        "read it again and retry"
                    )
                if previous == version:
                    raise Unchanged(previous)
                references.refuse_alias_under_rollout(conn, model, alias)
                write_alias(conn, model.id, alias, previous, version, changed_by, utc_now())
        except Unchanged as unchanged:
            same: int = unchanged.value
            return same
        self._notify([ChangeEvent("alias_set", name, version=version, alias=alias)])
        return previous

    def delete_alias(self, name: str, alias: str, *, changed_by: str = "local") -> None:
        """Remove an alias (its history stays); NotFound if it is not set."""
        with store.write_transaction(self._engine) as conn:
            model = queries.model_row(conn, name)
            previous = conn.execute(
                select(aliases.c.version_number).where(aliases.c.model_id == model.id, aliases.c.name == alias)
            ).scalar_one_or_none()
            if previous is None:
                raise NotFound(f"model '{name}' has no alias '{alias}'")
            references.refuse_alias_delete(conn, model, alias)
            conn.execute(delete(aliases).where(aliases.c.model_id == model.id, aliases.c.name == alias))
            record_alias_change(conn, model.id, alias, previous, None, changed_by, utc_now())
        self._notify([ChangeEvent("alias_deleted", name, version=previous, alias=alias)])

    def _collect_blob(self, sha256: str, filename: str) -> None:
        """Delete a blob no version references any more; failures only leave a harmless file."""
        try:
            with store.write_transaction(self._engine, bump_revision=False) as conn:
                references = conn.execute(
                    select(func.count())
                    .select_from(versions)
                    .where(versions.c.sha256 == sha256, versions.c.filename == filename)
                ).scalar_one()
                if references == 0:
                    self._artifacts.delete(sha256, filename)
        except Exception:
            logger.exception("could not collect unreferenced artifact %s/%s", sha256, filename)

    def _notify(self, events: Sequence[ChangeEvent]) -> None:
        with self._listeners_lock:
            listeners = list(self._listeners)
        for event in events:
            for listener in listeners:
                try:
                    listener(event)
                except Exception:
                    logger.exception("registry change listener %r failed on %s", listener, event)
