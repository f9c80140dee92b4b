"""Turning an uploaded artifact into a registered version: detect, load, infer the signature, register.

The artifact is loaded once here, before anything is written, so a version that cannot load
never enters the registry. Every step is blocking; the management API runs it in a worker thread.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ferryman.archive import safe_extract
from ferryman.errors import FerrymanError, InvalidInput
from ferryman.monitoring.profile import Profile
from ferryman.registry.artifacts import ArtifactStore, StagedArtifact
from ferryman.registry.profiles import profile_from_sample
from ferryman.registry.records import VersionRecord, validate_model_name
from ferryman.registry.service import RegistryService
from ferryman.runtimes import FRAMEWORKS, detect_framework, load_runtime
from ferryman.runtimes.base import RuntimeConfig
from ferryman.runtimes.samples import infer_signature, read_sample
from ferryman.security.artifact_policy import ArtifactPolicy

__all__ = ["IntakeRequest", "ModelIntake"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class IntakeRequest:
    """What a push carries besides the artifact bytes."""

    name: str
    framework: str | None = None
    description: str = ""
    runtime_config: dict[str, Any] | None = None
    sample: Path | None = None
    created_by: str = "local"
    #: ``ed25519:<key id>:<base64>`` over the artifact's sha256 (security/signing.py), if signed.
    artifact_signature: str | None = None


class ModelIntake:
    """Validates and registers pushed artifacts."""

    def __init__(
        self,
        registry: RegistryService,
        artifacts: ArtifactStore,
        max_unpacked_bytes: int,
        config_checks: Sequence[Callable[[dict[str, Any]], None]] = (),
        policy: ArtifactPolicy | None = None,
    ) -> None:
        self._registry = registry
        # Signature and pickle rules (docs/security.md), checked before the artifact is interpreted.
        self._policy = policy or ArtifactPolicy()
        self._artifacts = artifacts
        self._max_unpacked = max_unpacked_bytes
        # Checks of runtime_config owned by other layers (e.g. the batching block), run before loading.
        self._config_checks = list(config_checks)

    def register(self, staged: StagedArtifact, request: IntakeRequest) -> tuple[VersionRecord, bool]:
        """Register ``staged`` as the next version of ``request.name``; (record, created)."""
        try:
            validate_model_name(request.name)
            if request.framework is not None and request.framework not in FRAMEWORKS:
                raise InvalidInput(f"unknown framework '{request.framework}'; expected one of {', '.join(FRAMEWORKS)}")
            for check in self._config_checks:
                check(dict(request.runtime_config or {}))
            artifact_signature = self._policy.check_signature(staged.sha256, request.artifact_signature)
            existing = self._registry.find_by_sha(request.name, staged.sha256)
            if existing is not None:
                self._artifacts.discard(staged)
                return existing, False
            framework, signature, profile = self._inspect(staged, request)
        except BaseException:
            self._artifacts.discard(staged)
            raise
        record, created = self._registry.register_version(
            request.name,
            staged,
            framework=framework,
            signature=signature,
            runtime_config=dict(request.runtime_config or {}),
            description=request.description,
            created_by=request.created_by,
            artifact_signature=artifact_signature,
        )
        if created and profile is not None:
            # The reference for drift and data quality (docs/monitoring.md): the sample and the model's answers.
            try:
                self._registry.set_profile(request.name, record.version, profile.to_dict(), "sample")
            except FerrymanError as exc:  # the version is registered; its profile will be learned from traffic
                logger.warning("profile of %s version %s not stored: %s", request.name, record.version, exc)
        return record, created

    def _inspect(self, staged: StagedArtifact, request: IntakeRequest) -> tuple[str, Any, Profile | None]:
        workdir = Path(tempfile.mkdtemp(prefix="inspect-", dir=staged.path.parent))
        try:
            path = self._lay_out(staged, workdir)
            self._policy.check_format(path)
            framework = request.framework or detect_framework(path)
            runtime = load_runtime(path, framework, RuntimeConfig(options=dict(request.runtime_config or {})))
            try:
                sample = read_sample(request.sample) if request.sample is not None else None
                signature = infer_signature(runtime, sample)
                profile = profile_from_sample(runtime, signature, sample) if sample is not None else None
            finally:
                runtime.unload()
            return framework, signature, profile
        finally:
            shutil.rmtree(workdir, ignore_errors=True)

    def _lay_out(self, staged: StagedArtifact, workdir: Path) -> Path:
        """Give the staged bytes their file name (runtimes detect by suffix), or unpack a folder."""
        if staged.filename.endswith(".tar"):
            target = workdir / staged.filename[: -len(".tar")]
            safe_extract(staged.path, target, max_bytes=self._max_unpacked)
            return target
        target = workdir / staged.filename
        os.link(staged.path, target)
        return target
