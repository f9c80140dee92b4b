"""Settings: defaults < ``ferryman.yaml`` < ``FERRYMAN_*`` environment < CLI flags.

No other module reads the environment; the composition root (``app.py``) and the CLI build one
:class:`Settings` and pass it down.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from pydantic import AliasChoices, BaseModel, ConfigDict, Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

__all__ = ["MtlsPrincipal", "Settings", "load_settings"]


class MtlsPrincipal(BaseModel):
    """Who a verified client certificate is: its role and, optionally, the models it may act on."""

    model_config = ConfigDict(extra="forbid")

    role: str
    """``admin``, ``deployer``, ``predictor`` or ``viewer``."""

    models: list[str] | None = None
    """Model names or patterns (``fraud-*``); None for every model."""


class Settings(BaseSettings):
    """Everything a Ferryman server can be configured with."""

    model_config = SettingsConfigDict(env_prefix="FERRYMAN_", extra="forbid")

    home: Path = Path(".ferryman")
    """Where the SQLite registry and the local artifact store live (created on first use)."""

    host: str = "127.0.0.1"
    """Address the HTTP server binds to."""

    port: int = Field(default=8080, ge=0, le=65535)
    """HTTP port (0 picks a free one)."""

    grpc_port: int = Field(default=8081, ge=-1, le=65535)
    """V2 gRPC port on the same host (0 picks a free one, logged; -1 turns gRPC off). Needs the ``grpc`` extra."""

    database_url: str | None = None
    """SQLAlchemy URL of the registry; default ``sqlite:///<home>/registry.db``."""

    artifacts_dir: Path | None = None
    """Artifact store folder; default ``<home>/artifacts``."""

    artifacts_url: str | None = None
    """Shared artifact store: ``s3://bucket/prefix`` or ``file:///shared/folder`` (None: ``artifacts_dir``).

    Replicas on one database must share it. Loads are cached and verified under ``<home>/artifact-cache``.
    """

    artifacts_s3_endpoint_url: str | None = None
    """Endpoint of an S3-compatible store (MinIO, Ceph); None: AWS, or ``AWS_ENDPOINT_URL_S3``.

    Credentials never go here: s3fs reads the standard AWS variables, config files or instance role.
    """

    artifacts_s3_region: str | None = None
    """Region of the bucket; None: ``AWS_REGION`` / the AWS config."""

    repositories: list[Path] = Field(default_factory=list)
    """Read-only model repository folders (``<name>/<version>/<artifact>``), served alongside the registry."""

    repository_poll_seconds: float = Field(default=2.0, gt=0)
    """How often repository folders are rescanned for new or removed versions."""

    registry_poll_seconds: float | None = Field(default=None, gt=0)
    """How often each process checks the registry revision for writes made elsewhere (default 0.25 s on SQLite;
    2 s on PostgreSQL, where LISTEN/NOTIFY brings changes at once and the poll is only the safety net)."""

    max_request_bytes: int = Field(default=64 * 1024 * 1024, gt=0)
    """Largest inference request body accepted (413 above it)."""

    max_upload_bytes: int = Field(default=4 * 1024 * 1024 * 1024, gt=0)
    """Largest artifact upload accepted by the management API (413 above it)."""

    workers: int = Field(default=1, ge=1, le=64)
    """Server processes sharing the port (SO_REUSEPORT); each holds its own copy of the models."""

    inference_threads: int = Field(default=4, ge=1)
    """Worker threads that run model predictions off the event loop."""

    batching: bool = True
    """Batch concurrent requests for runtimes that can (per-version ``runtime_config.batching`` tunes it)."""

    batch_max_size: int = Field(default=32, ge=1)
    """Default largest batch, in rows."""

    batch_max_delay_ms: float = Field(default=0.0, ge=0)
    """Default wait for more rows once a slot is free (0 = batch whatever is queued, never wait)."""

    batch_max_queue: int = Field(default=1024, ge=1)
    """Default bound on queued requests per version; beyond it requests get 429 with Retry-After."""

    memory_budget_mb: int | None = Field(default=None, gt=0)
    """Bound, in MiB, on the estimated memory of loaded versions in each server process (None = no bound).

    Past it, least-recently-used idle versions are unloaded to make room; they load again on their
    next request. A load that cannot fit even then fails with 503 naming the budget.
    """

    cache_max_entries: int = Field(default=1024, ge=1)
    """Responses one version's cache holds when its runtime config says ``cache: true`` (caching is opt-in)."""

    cache_max_mb: float = Field(default=64, gt=0)
    """Output bytes, in MiB, one version's response cache holds at most."""

    load_on_startup: bool = True
    """Load each model's default version (production alias, else latest) when the server starts."""

    drain_timeout_seconds: float = Field(default=30.0, ge=0)
    """After SIGTERM: how long in-flight and queued requests may still finish before they are cut.

    Readiness answers 503 from the signal on. The default fits the Kubernetes manifests: their
    terminationGracePeriodSeconds (40) less the preStop sleep (5) and 5 s to exit.
    """

    # -- monitoring: drift, data quality, payload logs (docs/monitoring.md) ---------------------

    monitoring_enabled: bool = True
    """Watch every version's inputs and predictions for drift and data-quality issues (off the request path)."""

    monitoring_sample_rate: float = Field(default=1.0, gt=0, le=1)
    """Share of answered requests monitored; the rest cost a dict lookup and a decrement."""

    monitoring_max_samples_per_second: float = Field(default=200.0, ge=0)
    """Most requests per second monitored per version (0 = no cap): busier versions are sampled below
    ``monitoring_sample_rate`` so monitoring costs the same whatever the traffic."""

    monitoring_window_rows: int = Field(default=1000, ge=1)
    """Rows in each version's sliding drift window."""

    monitoring_min_rows: int = Field(default=100, ge=1)
    """Rows a window needs before drift is tested (capped at the window's size)."""

    monitoring_significance: float = Field(default=0.01, gt=0, lt=1)
    """False-alarm rate of the drift verdict with no drift (Benjamini-Hochberg across all columns)."""

    monitoring_profile_rows: int = Field(default=1000, ge=1)
    """Rows of traffic a reference profile is learned from when a version was pushed without a sample."""

    monitoring_queue_records: int = Field(default=4096, ge=1)
    """Sampled requests waiting for the monitoring worker; beyond it they are dropped and counted."""

    monitoring_report_seconds: float = Field(default=10.0, gt=0)
    """How often, at most, each version's drift report behind the metrics is recomputed."""

    payload_queue_records: int = Field(default=4096, ge=1)
    """Payload-log records waiting for the writer; beyond it they are dropped and counted."""

    # -- alerts, webhooks and live accuracy (docs/monitoring.md) ---------------------------------

    alerts_enabled: bool = True
    """Evaluate alert rules, send webhooks and refresh the live-accuracy gauges in this process."""

    alerts_eval_seconds: float = Field(default=5.0, gt=0)
    """How often each process evaluates every alert rule (and refreshes the ``ferryman_live_*`` gauges)."""

    live_accuracy_window_seconds: float = Field(default=3600.0, gt=0)
    """Window of the ``ferryman_live_*`` gauges: labelled feedback received this many seconds back."""

    webhook_timeout_seconds: float = Field(default=5.0, gt=0)
    """Time limit of one webhook delivery attempt (connect + answer)."""

    webhook_max_attempts: int = Field(default=5, ge=1, le=20)
    """Attempts per delivery before it is logged and marked failed."""

    webhook_backoff_seconds: float = Field(default=2.0, gt=0)
    """Wait before the first retry; it doubles with every further attempt."""

    log_level: str = "info"
    """Log level: debug, info, warning, error."""

    # -- tracing (docs/monitoring.md; needs the ``otel`` extra) -----------------------------------

    otel_enabled: bool | None = None
    """Export OpenTelemetry traces of inference requests (None: on when an OTLP endpoint is set)."""

    otel_endpoint: str | None = Field(
        default=None,
        validation_alias=AliasChoices("otel_endpoint", "FERRYMAN_OTEL_ENDPOINT", "OTEL_EXPORTER_OTLP_ENDPOINT"),
    )
    """OTLP/HTTP collector base URL (``/v1/traces`` is appended); also read from ``OTEL_EXPORTER_OTLP_ENDPOINT``."""

    otel_service_name: str = "ferryman"
    """``service.name`` of the exported spans."""

    otel_sample_rate: float = Field(default=1.0, ge=0, le=1)
    """Share of new traces recorded (a caller's sampled ``traceparent`` is always followed)."""

    # -- security (docs/security.md) --------------------------------------------------------------

    insecure: bool = False
    """Serve on a non-loopback address without any credentials configured (refused otherwise)."""

    metrics_auth: bool = True
    """Require credentials with the ``metrics`` permission for ``/metrics`` (False: open to any scraper)."""

    oidc_issuer: str | None = None
    """Issuer (``iss``) of the OIDC bearer tokens accepted; setting it turns token authentication on."""

    oidc_audience: str | None = None
    """Audience (``aud``) the tokens must be issued for (required with ``oidc_issuer``)."""

    oidc_jwks_url: str | None = None
    """Where the issuer publishes its signing keys (JWKS); https, or http on a loopback address."""

    oidc_public_key: str | None = None
    """The issuer's public key as PEM text or the path of a PEM file (instead of ``oidc_jwks_url``)."""

    oidc_role_claim: str = "ferryman_role"
    """Claim holding the role (a name or a list of names; dotted for nested claims: ``realm_access.roles``)."""

    oidc_models_claim: str | None = None
    """Claim holding the models the token may act on (a list or a comma-separated text; absent = every model)."""

    tls_cert: Path | None = None
    """Server certificate chain (PEM); with ``tls_key`` the server speaks HTTPS only (TLS 1.2 or newer)."""

    tls_key: Path | None = None
    """Private key of ``tls_cert`` (PEM)."""

    tls_client_ca: Path | None = None
    """CA bundle (PEM) that client certificates must chain to: every connection must present one (mTLS)."""

    mtls_principals: dict[str, MtlsPrincipal] = Field(default_factory=dict)
    """Client certificate subject CN → ``{"role": ..., "models": [...]}``: who a verified certificate is."""

    rate_limit_per_s: float | None = Field(default=None, gt=0)
    """Requests per second each API key, token subject or certificate may make (None = no limit)."""

    rate_limit_burst: float | None = Field(default=None, ge=1)
    """Requests a caller may make at once before the rate applies (default: one second's worth, at least 1)."""

    max_tensor_elements: int = Field(default=16 * 1024 * 1024, gt=0)
    """Most elements one decoded input tensor may have (413 naming the input above it)."""

    allow_pickle: bool = True
    """Load pickle formats (joblib/pickle scikit-learn files, pickles inside folders); False refuses them
    at push and at load and points to skops or ONNX."""

    require_signed_models: bool = False
    """Load (and accept pushes of) only versions signed by one of ``signing_public_keys``."""

    signing_public_keys: list[Path] = Field(default_factory=list)
    """Ed25519 public keys (PEM files) whose artifact signatures this server trusts."""

    @model_validator(mode="after")
    def _signing_keys_when_required(self) -> Settings:
        if self.require_signed_models and not self.signing_public_keys:
            raise ValueError("require_signed_models needs at least one file in signing_public_keys")
        return self

    @property
    def resolved_database_url(self) -> str:
        """The registry URL, defaulting to SQLite under ``home``."""
        return self.database_url or f"sqlite:///{(self.home / 'registry.db').resolve()}"

    @property
    def resolved_registry_poll_seconds(self) -> float:
        """The revision poll interval: explicit, or 2 s on PostgreSQL and 0.25 s otherwise."""
        if self.registry_poll_seconds is not None:
            return self.registry_poll_seconds
        return 2.0 if self.resolved_database_url.startswith("postgresql") else 0.25

    @property
    def resolved_artifacts_dir(self) -> Path:
        """The artifact store folder, defaulting to ``<home>/artifacts``."""
        return self.artifacts_dir or self.home / "artifacts"


def load_settings(config_file: Path | None = None, **overrides: Any) -> Settings:
    """Build Settings from an optional YAML file, the environment, then explicit overrides.

    ``overrides`` whose value is None are ignored, so CLI flags that were not given fall through.
    """
    file_values: dict[str, Any] = {}
    path = config_file or (Path("ferryman.yaml") if Path("ferryman.yaml").is_file() else None)
    if path is not None:
        loaded = yaml.safe_load(path.read_text()) or {}
        if not isinstance(loaded, dict):
            raise ValueError(f"{path}: expected a mapping at the top level")
        file_values = loaded
    env_settings = Settings()
    env_given = env_settings.model_fields_set
    merged: dict[str, Any] = {k: v for k, v in file_values.items()}
    merged.update({k: getattr(env_settings, k) for k in env_given})
    merged.update({k: v for k, v in overrides.items() if v is not None})
    return Settings.model_validate(merged)
