"""The registry's tables (SQLAlchemy Core): one schema for SQLite and PostgreSQL.

Alembic migrations (``registry/migrations``) create them; ``SCHEMA_HEAD`` in ``registry/engine.py``
names the newest. Timestamps are :class:`UTCDateTime`: stored in UTC, read back timezone-aware.
"""

from datetime import UTC, datetime

from sqlalchemy import (
    BigInteger,
    Column,
    Dialect,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.types import DateTime, TypeDecorator


class UTCDateTime(TypeDecorator[datetime]):
    """A timestamp stored in UTC and always read back timezone-aware (SQLite drops the zone)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        """Convert to UTC; SQLite stores it naive."""
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("registry timestamps must be timezone-aware")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        """Attach UTC to naive values read from SQLite."""
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


metadata = MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_N_name)s",
        "uq": "uq_%(table_name)s_%(column_0_N_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
        "ck": "ck_%(table_name)s_%(constraint_name)s",
    }
)

models = Table(
    "models",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("name", String(128), nullable=False, unique=True),
    Column("description", Text, nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    # Highest version number ever given out, so a deleted number is never reused.
    Column("last_version", Integer, nullable=False, server_default=text("0")),
)

versions = Table(
    "versions",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("model_id", Integer, ForeignKey("models.id"), nullable=False),
    Column("number", Integer, nullable=False),
    Column("framework", String(64), nullable=False),
    Column("sha256", String(64), nullable=False),
    Column("size", BigInteger, nullable=False),
    Column("filename", String(255), nullable=False),
    Column("signature", Text, nullable=False),
    Column("runtime_config", Text, nullable=False),
    Column("description", Text, nullable=False),
    Column("created_by", String(255), nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    # ``ed25519:<key id>:<base64>`` over the sha256 (security/signing.py); NULL when unsigned.
    Column("artifact_signature", Text, nullable=True),
    UniqueConstraint("model_id", "number"),
    Index(None, "model_id", "sha256"),
)

aliases = Table(
    "aliases",
    metadata,
    Column("model_id", Integer, ForeignKey("models.id"), primary_key=True),
    Column("name", String(64), primary_key=True),
    Column("version_number", Integer, nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
    Column("updated_by", String(255), nullable=False),
)

alias_history = Table(
    "alias_history",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("model_id", Integer, ForeignKey("models.id"), nullable=False),
    Column("alias", String(64), nullable=False),
    Column("from_version", Integer, nullable=True),
    Column("to_version", Integer, nullable=True),
    Column("changed_by", String(255), nullable=False),
    Column("changed_at", UTCDateTime, nullable=False),
    Index(None, "model_id", "alias"),
)

registry_state = Table(
    "registry_state",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=False),
    Column("revision", Integer, nullable=False),
)

# One row per model that ever had a traffic policy. Clearing keeps the row (policy NULL) so the
# revision — the policy's ETag — only ever grows and an old If-Match can never match again.
traffic_policies = Table(
    "traffic_policies",
    metadata,
    Column("model_id", Integer, ForeignKey("models.id"), primary_key=True, autoincrement=False),
    Column("policy", Text, nullable=True),
    Column("revision", Integer, nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
    Column("updated_by", String(255), nullable=False),
)

traffic_policy_history = Table(
    "traffic_policy_history",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("model_id", Integer, ForeignKey("models.id"), nullable=False),
    Column("revision", Integer, nullable=False),
    Column("old_policy", Text, nullable=True),
    Column("new_policy", Text, nullable=True),
    Column("changed_by", String(255), nullable=False),
    Column("changed_at", UTCDateTime, nullable=False),
    Index(None, "model_id"),
)

version_policies = Table(
    "version_policies",
    metadata,
    Column("model_id", Integer, ForeignKey("models.id"), primary_key=True, autoincrement=False),
    Column("policy", Text, nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
    Column("updated_by", String(255), nullable=False),
)

rollouts = Table(
    "rollouts",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("model_id", Integer, ForeignKey("models.id"), nullable=False),
    Column("alias", String(64), nullable=False),
    Column("from_version", Integer, nullable=False),
    Column("to_version", Integer, nullable=False),
    Column("steps", Text, nullable=False),
    Column("step_index", Integer, nullable=False),
    Column("interval_s", Float, nullable=False),
    Column("guards", Text, nullable=False),
    Column("state", String(16), nullable=False),
    Column("reason", Text, nullable=False),
    Column("step_started_at", UTCDateTime, nullable=False),
    Column("created_by", String(255), nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
    # The registry revision of the rollout's latest write: unique across rollouts, so an
    # expected revision can never match a newer rollout of the same model.
    Column("revision", Integer, nullable=False),
    Index(None, "model_id"),
)

feedback = Table(
    "feedback",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("model_id", Integer, ForeignKey("models.id"), nullable=False),
    Column("request_id", String(255), nullable=False),
    Column("version", Integer, nullable=True),
    Column("reward", Float, nullable=True),
    Column("label", Text, nullable=True),
    # What the version predicted for that request (JSON), when the server still knew it: the join
    # that live accuracy and label-driven bandit rewards need.
    Column("prediction", Text, nullable=True),
    Column("received_at", UTCDateTime, nullable=False),
    Index(None, "model_id", "request_id"),
)


# API keys: only the hash of a key is stored (security/keys.py says why SHA-256 suffices).
# Revoked keys stay, so a refusal can say "revoked" in the audit trail and lineage survives.
api_keys = Table(
    "api_keys",
    metadata,
    Column("key_id", String(32), primary_key=True),
    Column("secret_hash", String(128), nullable=False),
    Column("name", String(255), nullable=False),
    Column("role", String(16), nullable=False),
    # JSON list of model names and patterns; NULL means every model.
    Column("models", Text, nullable=True),
    Column("created_at", UTCDateTime, nullable=False),
    Column("created_by", String(255), nullable=False),
    Column("expires_at", UTCDateTime, nullable=True),
    Column("revoked_at", UTCDateTime, nullable=True),
    Column("revoked_by", String(255), nullable=True),
    Column("last_used_at", UTCDateTime, nullable=True),
    # The key this one was rotated from.
    Column("replaces", String(32), nullable=True),
)

# The audit trail, a hash chain (security/audit.py). ``seq`` is handed out from audit_state, not
# by an autoincrement: gap-free, so a gap can only mean a deleted record.
audit_log = Table(
    "audit_log",
    metadata,
    Column("seq", BigInteger, primary_key=True, autoincrement=False),
    Column("at", UTCDateTime, nullable=False),
    Column("principal", String(255), nullable=False),
    Column("action", String(64), nullable=False),
    Column("target", String(512), nullable=False),
    Column("outcome", String(16), nullable=False),
    Column("source_address", String(128), nullable=False),
    Column("details", Text, nullable=False),
    Column("prev_hash", String(64), nullable=False),
    Column("hash", String(64), nullable=False),
    Index(None, "principal"),
    Index(None, "at"),
)

# The chain's head, one row: appenders lock it (FOR UPDATE on PostgreSQL) to serialise, and
# verification compares the chain's last record with it, so a deleted tail is noticed too.
audit_state = Table(
    "audit_state",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=False),
    Column("last_seq", BigInteger, nullable=False),
    Column("last_hash", String(64), nullable=False),
)


# A version's reference profile (monitoring/profile.py): from the sample pushed with it, or learned
# from its first requests. Written with append transactions, so learning one at traffic time does
# not make every process rebuild its catalog. Keyed by model id and number: numbers are never reused.
version_profiles = Table(
    "version_profiles",
    metadata,
    Column("model_id", Integer, ForeignKey("models.id"), primary_key=True, autoincrement=False),
    Column("version", Integer, primary_key=True, autoincrement=False),
    Column("source", String(16), nullable=False),
    Column("profile", Text, nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
)


# Alerts (monitoring/alerts.py). A rule's definition is one JSON document (monitoring/alert_rules.py
# validates it); its state per target (``model:version``) is one row, updated optimistically on
# ``revision`` so that of several evaluating processes exactly one fires or resolves.
alert_rules = Table(
    "alert_rules",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("name", String(128), nullable=False, unique=True),
    Column("spec", Text, nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    Column("created_by", String(255), nullable=False),
)

alert_states = Table(
    "alert_states",
    metadata,
    Column("rule_id", Integer, ForeignKey("alert_rules.id"), primary_key=True, autoincrement=False),
    Column("target", String(160), primary_key=True),
    Column("state", String(16), nullable=False),
    Column("value", Float, nullable=True),
    Column("since", UTCDateTime, nullable=True),
    Column("fired_at", UTCDateTime, nullable=True),
    Column("updated_at", UTCDateTime, nullable=False),
    Column("revision", Integer, nullable=False),
)

alert_events = Table(
    "alert_events",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("rule_name", String(128), nullable=False),
    Column("target", String(160), nullable=False),
    Column("kind", String(16), nullable=False),
    Column("severity", String(16), nullable=False),
    Column("value", Float, nullable=True),
    Column("at", UTCDateTime, nullable=False),
    Column("payload", Text, nullable=False),
    Index(None, "at"),
)

# Webhooks keep their secret in clear (it signs every delivery); the API never returns it.
webhooks = Table(
    "webhooks",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("name", String(128), nullable=False, unique=True),
    Column("url", Text, nullable=False),
    Column("secret", String(255), nullable=False),
    Column("min_severity", String(16), nullable=False),
    # JSON list of model names and patterns whose events it receives; NULL means every model.
    Column("models", Text, nullable=True),
    Column("created_at", UTCDateTime, nullable=False),
    Column("created_by", String(255), nullable=False),
)

# The outbox: one row per (event, webhook), written with the event, claimed with a lease by the
# process that sends it, so pending deliveries survive a restart and go out once.
webhook_deliveries = Table(
    "webhook_deliveries",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("webhook_id", Integer, nullable=False),
    Column("event_id", Integer, nullable=False),
    Column("state", String(16), nullable=False),
    Column("attempts", Integer, nullable=False),
    Column("next_attempt_at", UTCDateTime, nullable=False),
    Column("lease_until", UTCDateTime, nullable=True),
    Column("last_error", Text, nullable=True),
    Column("updated_at", UTCDateTime, nullable=False),
    Index(None, "state", "next_attempt_at"),
)
