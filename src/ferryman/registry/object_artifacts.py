"""Artifacts in an object store or a shared folder (fsspec), cached locally by sha256.

``FERRYMAN_ARTIFACTS_URL`` chooses the store: ``s3://bucket/prefix`` (s3fs, the ``s3`` extra) or
``file:///shared/volume``. Every replica pointed at the same URL and database serves the same
versions. Layout under the URL::

    blobs/<sha256>/<filename>              published artifacts, immutable
    blobs/<sha256>/<filename>.tmp-<uuid>   an upload in progress (never read; swept when old)

Uploads are staged and hashed on local disk as with the folder store, uploaded to a temporary key,
checked for size, and only then moved to the final key (on S3 a server-side copy: the final key
appears complete or not at all). Loads download into ``<home>/artifact-cache`` (the folder store's
layout, so the staged file of a push is this replica's cached copy), verify the sha256, and load
from there; a cached copy that no longer matches its hash is fetched again.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import time
import uuid
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from ferryman.config import Settings
from ferryman.errors import FerrymanError, ModelFailed, NotReady
from ferryman.registry.artifacts import ArtifactStore, StagedArtifact

__all__ = ["SUPPORTED_SCHEMES", "ObjectStoreArtifacts", "open_artifact_store", "redact_url"]

logger = logging.getLogger(__name__)

SUPPORTED_SCHEMES = ("file", "s3")
_TMP_MARK = ".tmp-"
_CHUNK = 1024 * 1024
# Temporary keys younger than this may belong to another replica's upload in flight.
_STALE_UPLOAD_SECONDS = 3600.0


def redact_url(url: str) -> str:
    """``url`` without any user or password part, for logs and messages."""
    parts = urlsplit(url)
    if "@" not in parts.netloc:
        return url
    return urlunsplit(parts._replace(netloc=parts.netloc.rsplit("@", 1)[1]))


def _hash_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


class ObjectStoreArtifacts(ArtifactStore):
    """Artifacts published to an fsspec filesystem, verified by sha256 on every load.

    ``cache_root`` is a local folder (staging, the verified cache, unpacked folders);
    ``storage_options`` go to the fsspec filesystem (for S3: ``endpoint_url``, ``client_kwargs``).
    Credentials are never passed here: s3fs takes them from the standard AWS environment
    variables, config files or instance roles.
    """

    def __init__(self, url: str, cache_root: Path, storage_options: dict[str, Any] | None = None) -> None:
        super().__init__(cache_root)
        scheme = urlsplit(url).scheme
        if scheme not in SUPPORTED_SCHEMES:
            raise ValueError(f"artifacts_url {redact_url(url)!r}: scheme must be one of {', '.join(SUPPORTED_SCHEMES)}")
        try:
            import fsspec
        except ImportError:  # pragma: no cover - fsspec comes with the s3 extra
            raise ValueError("artifacts_url needs fsspec: pip install 'ferryman[s3]'") from None
        options = dict(storage_options or {})
        if scheme == "file":
            options.setdefault("auto_mkdir", True)  # blobs/<sha256>/ is created by the first upload
        try:
            fs, root = fsspec.core.url_to_fs(url, **options)
        except ImportError:
            raise ValueError(f"artifacts_url {redact_url(url)!r} needs s3fs: pip install 'ferryman[s3]'") from None
        self._fs: Any = fs
        self._remote_root = str(root).rstrip("/")
        self.url = redact_url(url)

    def remote_key(self, sha256: str, filename: str) -> str:
        """The store key of the published artifact with this hash and name."""
        return f"{self._remote_root}/blobs/{sha256}/{filename}"

    def publish(self, staged: StagedArtifact) -> None:
        """Upload to a temporary key, check it, then move it to its final key; keep the local copy as cache."""
        key = self.remote_key(staged.sha256, staged.filename)
        try:
            if not self._same_size(key, staged.size):
                self._upload(staged, key)
        except FerrymanError:
            self.discard(staged)
            raise
        except Exception as exc:
            self.discard(staged)
            raise NotReady(f"artifact store {self.url} could not store {staged.filename}: {exc}") from exc
        super().publish(staged)  # into the local cache: this replica need not download it again

    def _same_size(self, key: str, size: int) -> bool:
        # The key names the content (sha256), so an object of the right size is this artifact; a
        # corrupted one is caught by the hash check of every load.
        try:
            return int(self._fs.size(key)) == size
        except FileNotFoundError:
            return False

    def _upload(self, staged: StagedArtifact, key: str) -> None:
        tmp = f"{key}{_TMP_MARK}{uuid.uuid4().hex}"
        try:
            self._fs.put_file(str(staged.path), tmp)
            uploaded = int(self._fs.size(tmp))
            if uploaded != staged.size:
                raise NotReady(
                    f"artifact store {self.url} holds {uploaded} of the {staged.size} bytes of {staged.filename}"
                )
            self._fs.mv(tmp, key)
        except BaseException:
            self._remove_quietly(tmp)
            raise

    def _remove_quietly(self, key: str) -> None:
        try:
            self._fs.rm(key)
        except FileNotFoundError:
            pass
        except Exception:
            logger.warning("could not remove %s from %s; it is swept later", key, self.url, exc_info=True)

    def materialize(self, sha256: str, filename: str, *, max_unpacked_bytes: int = 8 * 1024**3) -> Path:
        """A verified local copy (or unpacked folder) of the artifact, fetched when not cached."""
        cached = self.blob_path(sha256, filename)
        if cached.is_file():
            actual = _hash_file(cached)
            if actual == sha256:
                return self._loadable(cached, sha256, filename, max_unpacked_bytes)
            logger.warning("cached %s does not match sha256 %s (got %s); fetching it again", cached, sha256, actual)
            cached.unlink(missing_ok=True)
        self._fetch(sha256, filename, cached)
        return self._loadable(cached, sha256, filename, max_unpacked_bytes)

    def _fetch(self, sha256: str, filename: str, cached: Path) -> None:
        key = self.remote_key(sha256, filename)
        tmp = self._new_staging_path()
        try:
            try:
                self._fs.get_file(key, str(tmp))
            except FileNotFoundError:
                raise ModelFailed(
                    f"artifact {filename} failed verification: expected sha256 {sha256}, "
                    f"but {self.url} has no such object"
                ) from None
            except Exception as exc:
                raise ModelFailed(f"artifact {filename} could not be fetched from {self.url}: {exc}") from exc
            actual = _hash_file(tmp)
            if actual != sha256:
                raise ModelFailed(
                    f"artifact {filename} in {self.url} failed verification: expected sha256 {sha256}, got {actual}"
                )
            cached.parent.mkdir(parents=True, exist_ok=True)
            os.replace(tmp, cached)
        finally:
            tmp.unlink(missing_ok=True)

    def delete(self, sha256: str, filename: str) -> None:
        """Remove the published object, then this replica's cached copy."""
        key = self.remote_key(sha256, filename)
        with contextlib.suppress(FileNotFoundError):
            self._fs.rm(key)
        protocols = (self._fs.protocol,) if isinstance(self._fs.protocol, str) else tuple(self._fs.protocol)
        if "file" in protocols:  # folders are real there; on S3 they vanish with their last key
            # Fails while another file name with the same content is still published.
            with contextlib.suppress(OSError):
                self._fs.rmdir(key.rsplit("/", 1)[0])
        super().delete(sha256, filename)

    def sweep_staging(self) -> int:
        """Remove local leftovers, and temporary keys of uploads that died over an hour ago."""
        removed = super().sweep_staging()
        try:
            found = self._fs.find(f"{self._remote_root}/blobs", detail=True)
        except FileNotFoundError:
            return removed
        except Exception:
            logger.warning("could not list %s for interrupted uploads", self.url, exc_info=True)
            return removed
        now = time.time()  # object stores report wall-clock modification times
        for key, info in found.items():
            if _TMP_MARK not in key.rsplit("/", 1)[-1]:
                continue
            modified = _modified_seconds(info)
            if modified is not None and now - modified > _STALE_UPLOAD_SECONDS:
                self._remove_quietly(key)
                removed += 1
        return removed


def _modified_seconds(info: dict[str, Any]) -> float | None:
    value = info.get("LastModified", info.get("mtime"))
    if value is None:
        return None
    if isinstance(value, int | float):
        return float(value)
    timestamp = getattr(value, "timestamp", None)
    return float(timestamp()) if callable(timestamp) else None


def open_artifact_store(settings: Settings) -> ArtifactStore:
    """The artifact store ``settings`` name: the shared one of ``artifacts_url``, else the local folder."""
    if not settings.artifacts_url:
        return ArtifactStore(settings.resolved_artifacts_dir)
    options: dict[str, Any] = {}
    if urlsplit(settings.artifacts_url).scheme == "s3":
        # Other replicas write to the bucket too: never answer from a cached listing.
        options["use_listings_cache"] = False
        if settings.artifacts_s3_endpoint_url:
            options["endpoint_url"] = settings.artifacts_s3_endpoint_url
        if settings.artifacts_s3_region:
            options["client_kwargs"] = {"region_name": settings.artifacts_s3_region}
    store = ObjectStoreArtifacts(settings.artifacts_url, settings.home / "artifact-cache", options)
    logger.info("artifacts in %s (verified copies cached in %s)", store.url, store.root)
    return store
