"""Content-addressed local artifact store: stage, publish, verify, unpack, delete.

Layout under ``root``::

    staging/<uuid>                  uploads in progress (swept at startup)
    blobs/<sha256>/<filename>       published artifacts, immutable
    unpacked/<sha256>/              extracted ``.tar`` folder artifacts
    unpacked/.tmp-<uuid>/           extractions in progress (swept at startup)

Staging and blobs share one filesystem so publishing is an atomic ``os.replace``.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import sys
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from ferryman.archive import pack_folder, safe_extract
from ferryman.errors import InvalidInput, ModelFailed, PayloadTooLarge

__all__ = ["ArtifactStore", "StagedArtifact", "validate_filename"]

_CHUNK = 1024 * 1024
_TMP_PREFIX = ".tmp-"
_DEFAULT_MAX_UNPACKED = 8 * 1024**3


def validate_filename(filename: str) -> str:
    """Return ``filename`` if it is a plain file name, else raise InvalidInput saying why."""
    if not filename or filename in (".", ".."):
        raise InvalidInput(f"invalid artifact filename {filename!r}: must be a plain file name")
    if "/" in filename or "\\" in filename or "\x00" in filename:
        raise InvalidInput(f"invalid artifact filename {filename!r}: must not contain path separators or NUL")
    if ".." in filename:
        raise InvalidInput(f"invalid artifact filename {filename!r}: must not contain '..'")
    return filename


def _hash_file(path: Path) -> tuple[str, int]:
    digest = hashlib.sha256()
    size = 0
    with path.open("rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
            size += len(chunk)
    return digest.hexdigest(), size


def _fsync_dir(path: Path) -> None:
    # Makes a rename durable; some platforms cannot open a folder, which is then best effort.
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


@dataclass(frozen=True, slots=True)
class StagedArtifact:
    """An artifact copied into staging and hashed, not yet published."""

    path: Path
    sha256: str
    size: int
    filename: str


class ArtifactStore:
    """A content-addressed folder of artifacts, each verified by sha256 whenever it is loaded."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._staging = root / "staging"
        self._blobs = root / "blobs"
        self._unpacked = root / "unpacked"

    def blob_path(self, sha256: str, filename: str) -> Path:
        """Where the published artifact with this hash and name lives."""
        return self._blobs / sha256 / filename

    def _new_staging_path(self) -> Path:
        self._staging.mkdir(parents=True, exist_ok=True)
        return self._staging / uuid.uuid4().hex

    def stage(self, source: BinaryIO, filename: str, *, max_bytes: int) -> StagedArtifact:
        """Copy ``source`` into staging while hashing it; PayloadTooLarge past ``max_bytes``."""
        validate_filename(filename)
        path = self._new_staging_path()
        digest = hashlib.sha256()
        size = 0
        try:
            with path.open("xb") as out:
                while chunk := source.read(_CHUNK):
                    size += len(chunk)
                    if size > max_bytes:
                        raise PayloadTooLarge(f"artifact {filename} exceeds the upload limit of {max_bytes} bytes")
                    digest.update(chunk)
                    out.write(chunk)
                out.flush()
                os.fsync(out.fileno())
        except BaseException:
            path.unlink(missing_ok=True)
            raise
        return StagedArtifact(path=path, sha256=digest.hexdigest(), size=size, filename=filename)

    def stage_path(self, path: Path) -> StagedArtifact:
        """Stage a local file as is, or a folder packed into ``<folder name>.tar``."""
        if path.is_dir():
            filename = validate_filename(f"{path.resolve().name or 'model'}.tar")
            target = self._new_staging_path()
            try:
                with target.open("xb") as out:
                    pack_folder(path, out)
                    out.flush()
                    os.fsync(out.fileno())
                sha256, size = _hash_file(target)
            except BaseException:
                target.unlink(missing_ok=True)
                raise
            return StagedArtifact(path=target, sha256=sha256, size=size, filename=filename)
        if not path.is_file():
            raise InvalidInput(f"cannot stage {path}: no such file or folder")
        with path.open("rb") as source:
            return self.stage(source, path.name, max_bytes=sys.maxsize)

    def publish(self, staged: StagedArtifact) -> None:
        """Move a staged artifact into ``blobs/<sha256>/<filename>`` atomically."""
        target = self.blob_path(staged.sha256, staged.filename)
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            existing_size: int | None = target.stat().st_size
        except FileNotFoundError:
            existing_size = None
        if existing_size == staged.size:
            # The path names the content, so this is the same artifact; it is re-verified on every
            # load. Publishing runs under the registry's write lock, hence no re-hashing here.
            self.discard(staged)
            return
        os.replace(staged.path, target)
        _fsync_dir(target.parent)

    def discard(self, staged: StagedArtifact) -> None:
        """Remove a staged artifact that will not be published."""
        staged.path.unlink(missing_ok=True)

    def materialize(self, sha256: str, filename: str, *, max_unpacked_bytes: int = _DEFAULT_MAX_UNPACKED) -> Path:
        """Verify the blob against ``sha256`` and return a loadable path.

        A ``.tar`` is unpacked once into ``unpacked/<sha256>/`` and that folder is returned;
        any other artifact is returned as the blob file itself. A missing or altered blob
        raises :class:`ModelFailed` naming the file.
        """
        blob = self.blob_path(sha256, filename)
        try:
            actual, _size = _hash_file(blob)
        except FileNotFoundError:
            raise ModelFailed(
                f"artifact {filename} failed verification: expected sha256 {sha256}, but the file is missing"
            ) from None
        if actual != sha256:
            raise ModelFailed(f"artifact {filename} failed verification: expected sha256 {sha256}, got {actual}")
        return self._loadable(blob, sha256, filename, max_unpacked_bytes)

    def _loadable(self, blob: Path, sha256: str, filename: str, max_unpacked_bytes: int) -> Path:
        """The verified ``blob`` itself, or for a ``.tar`` the folder it unpacks to (once)."""
        if not filename.endswith(".tar"):
            return blob
        folder = self._unpacked / sha256
        if folder.is_dir():
            return folder
        self._unpacked.mkdir(parents=True, exist_ok=True)
        tmp = self._unpacked / f"{_TMP_PREFIX}{uuid.uuid4().hex}"
        try:
            safe_extract(blob, tmp, max_bytes=max_unpacked_bytes)
            try:
                os.replace(tmp, folder)
            except OSError:
                # A concurrent load finished the same extraction first; use its folder.
                if not folder.is_dir():
                    raise
        except InvalidInput as exc:
            raise ModelFailed(f"artifact {filename} cannot be unpacked: {exc}") from exc
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        return folder

    def delete(self, sha256: str, filename: str) -> None:
        """Remove a blob, and its unpacked folder once no blob with that hash remains."""
        blob = self.blob_path(sha256, filename)
        blob.unlink(missing_ok=True)
        try:
            blob.parent.rmdir()
        except FileNotFoundError:
            pass
        except OSError:
            return  # another file name with the same content is still published
        self._remove_tree(self._unpacked / sha256)

    def _remove_tree(self, folder: Path) -> None:
        # Rename first so a concurrent materialize never sees a half-deleted folder as complete.
        if not folder.exists():
            return
        doomed = folder.with_name(f"{_TMP_PREFIX}{uuid.uuid4().hex}")
        try:
            os.replace(folder, doomed)
        except FileNotFoundError:
            return
        shutil.rmtree(doomed, ignore_errors=True)

    def sweep_staging(self) -> int:
        """Delete leftovers of interrupted uploads and extractions; returns how many were removed.

        Call at startup, before this process (or any other sharing the store) starts uploads.
        """
        removed = 0
        if self._staging.is_dir():
            for entry in self._staging.iterdir():
                if entry.is_dir() and not entry.is_symlink():
                    shutil.rmtree(entry, ignore_errors=True)
                else:
                    entry.unlink(missing_ok=True)
                removed += 1
        if self._unpacked.is_dir():
            for entry in self._unpacked.iterdir():
                if entry.name.startswith(_TMP_PREFIX):
                    shutil.rmtree(entry, ignore_errors=True)
                    removed += 1
        return removed
