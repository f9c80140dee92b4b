"""Settings: defaults < ``ferryman.yaml`` < ``FERRYMAN_*`` environment < CLI flags.

No other module reads the environment; the composition root (``app.py``) and the CLI build one
:class:`Settings` and pass it down.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

__all__ = ["Settings", "load_settings"]


class Settings(BaseSettings):
    """Everything a Ferryman server can be configured with."""

    model_config = SettingsConfigDict(env_prefix="FERRYMAN_", extra="forbid")

    home: Path = Path(".ferryman")
    """Where the SQLite registry and the local artifact store live (created on first use)."""

    host: str = "127.0.0.1"
    """Address the HTTP server binds to."""

    port: int = Field(default=8080, ge=0, le=65535)
    """HTTP port (0 picks a free one)."""

    database_url: str | None = None
    """SQLAlchemy URL of the registry; default ``sqlite:///<home>/registry.db``."""

    artifacts_dir: Path | None = None
    """Artifact store folder; default ``<home>/artifacts``."""

    repositories: list[Path] = Field(default_factory=list)
    """Read-only model repository folders (``<name>/<version>/<artifact>``), served alongside the registry."""

    repository_poll_seconds: float = Field(default=2.0, gt=0)
    """How often repository folders are rescanned for new or removed versions."""

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

    log_level: str = "info"
    """Log level: debug, info, warning, error."""

    @property
    def resolved_database_url(self) -> str:
        """The registry URL, defaulting to SQLite under ``home``."""
        return self.database_url or f"sqlite:///{(self.home / 'registry.db').resolve()}"

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
