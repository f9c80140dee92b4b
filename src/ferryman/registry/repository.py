"""Read-only model repository folders, served alongside the registry.

Layout: ``<root>/<model>/<version>/...`` where each version folder is named by a positive
integer (no leading zeros), with an optional ``<root>/<model>/model.yaml`` (``framework``,
``runtime_config``, ``description``) that applies to every version of that model.

A version's sha256 covers its sorted ``(relative path, file sha256)`` pairs. File hashes are
cached by path and ``(size, mtime_ns, ctime_ns, inode)``, so rescanning unchanged folders every
few seconds reads no file contents. Entries starting with ``.`` are ignored (editor and OS
litter, and the ``..data`` indirection of Kubernetes volume mounts, whose symlinked files are
followed), as are ``__pycache__`` folders and ``.pyc`` files, which appear once a custom model
is imported. Problems are logged once as warnings and the entry is skipped; a scan never raises.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from ferryman.errors import InvalidInput
from ferryman.registry.records import validate_model_name

__all__ = ["ModelRepository", "RepositoryVersion"]

logger = logging.getLogger(__name__)

_VERSION_NAME = re.compile(r"[1-9][0-9]*", re.ASCII)
_MODEL_FILE = "model.yaml"
_MODEL_KEYS = frozenset({"framework", "runtime_config", "description"})
_CHUNK = 1024 * 1024


@dataclass(frozen=True, slots=True)
class RepositoryVersion:
    """One version folder found in a repository."""

    model: str
    version: int
    path: Path
    sha256: str
    framework: str | None
    runtime_config: dict[str, Any]
    description: str


@dataclass(frozen=True, slots=True)
class _ModelSettings:
    framework: str | None
    runtime_config: dict[str, Any]
    description: str


class _Skip(Exception):
    """An entry that cannot be served; the message says why."""


def _is_ignored(name: str) -> bool:
    return name.startswith(".") or name == "__pycache__" or name.endswith(".pyc")


def _read_settings(path: Path) -> _ModelSettings:
    if not path.is_file():
        return _ModelSettings(framework=None, runtime_config={}, description="")
    try:
        loaded = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise _Skip(f"cannot read {path}: {exc}") from exc
    loaded = {} if loaded is None else loaded
    if not isinstance(loaded, dict):
        raise _Skip(f"{path} must be a mapping with keys {sorted(_MODEL_KEYS)}")
    unknown = set(loaded) - _MODEL_KEYS
    if unknown:
        raise _Skip(f"{path} has unknown keys {sorted(map(str, unknown))}; allowed: {sorted(_MODEL_KEYS)}")
    framework = loaded.get("framework")
    runtime_config = loaded.get("runtime_config") or {}
    description = loaded.get("description") or ""
    if framework is not None and not isinstance(framework, str):
        raise _Skip(f"{path}: framework must be a string")
    if not isinstance(runtime_config, dict):
        raise _Skip(f"{path}: runtime_config must be a mapping")
    if not isinstance(description, str):
        raise _Skip(f"{path}: description must be a string")
    return _ModelSettings(framework=framework, runtime_config=runtime_config, description=description)


class ModelRepository:
    """Scans read-only repository folders for models and their numbered versions."""

    def __init__(self, roots: list[Path]) -> None:
        self.roots = list(roots)
        #: How many files have been read and hashed since creation (cache misses).
        self.files_hashed = 0
        self._hash_cache: dict[str, tuple[tuple[int, int, int, int], str]] = {}
        self._warned: set[str] = set()

    def scan(self) -> dict[str, dict[int, RepositoryVersion]]:
        """Return ``{model: {version: RepositoryVersion}}`` for every valid entry in the roots."""
        found: dict[str, dict[int, RepositoryVersion]] = {}
        origin: dict[str, Path] = {}
        seen_files: set[str] = set()
        warnings: set[str] = set()
        for root in self.roots:
            try:
                model_dirs = sorted(p for p in root.iterdir() if p.is_dir() and not _is_ignored(p.name))
            except OSError as exc:
                warnings.add(f"model repository {root} cannot be read: {exc}")
                continue
            for model_dir in model_dirs:
                name = model_dir.name
                try:
                    validate_model_name(name)
                except InvalidInput as exc:
                    warnings.add(f"skipping {model_dir}: {exc}")
                    continue
                if name in origin:
                    warnings.add(f"skipping {model_dir}: model '{name}' is already served from {origin[name]}")
                    continue
                try:
                    versions = self._scan_model(name, model_dir, seen_files, warnings)
                except (_Skip, OSError) as exc:
                    warnings.add(f"skipping model '{name}': {exc}")
                    continue
                if not versions:
                    warnings.add(f"skipping model '{name}': {model_dir} has no version folders")
                    continue
                found[name] = versions
                origin[name] = root
        for stale in self._hash_cache.keys() - seen_files:
            del self._hash_cache[stale]
        self._report(warnings)
        return found

    def _report(self, warnings: set[str]) -> None:
        # Rescans run every few seconds; each problem is logged once, and again if it recurs
        # after being fixed.
        for message in sorted(warnings - self._warned):
            logger.warning(message)
        self._warned = warnings

    def _scan_model(
        self, name: str, model_dir: Path, seen_files: set[str], warnings: set[str]
    ) -> dict[int, RepositoryVersion]:
        settings = _read_settings(model_dir / _MODEL_FILE)
        versions: dict[int, RepositoryVersion] = {}
        for entry in sorted(model_dir.iterdir()):
            if _is_ignored(entry.name) or not entry.is_dir():
                continue
            if not _VERSION_NAME.fullmatch(entry.name):
                warnings.add(f"skipping {entry}: version folders must be named by a positive integer")
                continue
            try:
                sha256 = self._folder_sha256(entry, seen_files)
            except _Skip as exc:
                warnings.add(f"skipping {entry}: {exc}")
                continue
            number = int(entry.name)
            versions[number] = RepositoryVersion(
                model=name,
                version=number,
                path=entry,
                sha256=sha256,
                framework=settings.framework,
                runtime_config=dict(settings.runtime_config),
                description=settings.description,
            )
        return versions

    def _folder_sha256(self, folder: Path, seen_files: set[str]) -> str:
        pairs: list[tuple[str, str]] = []
        for current, dirs, files in os.walk(folder, followlinks=False):
            dirs[:] = [d for d in dirs if not _is_ignored(d)]
            for file_name in files:
                if _is_ignored(file_name):
                    continue
                path = os.path.join(current, file_name)
                relative = Path(path).relative_to(folder).as_posix()
                try:
                    pairs.append((relative, self._file_sha256(path)))
                except OSError as exc:
                    raise _Skip(f"cannot read {relative}: {exc}") from exc
                seen_files.add(path)
        if not pairs:
            raise _Skip("the folder has no files")
        digest = hashlib.sha256()
        for relative, file_sha in sorted(pairs):
            digest.update(f"{relative}\0{file_sha}\n".encode())
        return digest.hexdigest()

    def _file_sha256(self, path: str) -> str:
        info = os.stat(path)
        # ctime and inode as well: copies that preserve mtime (cp -p, rsync -t) still change them.
        key = (info.st_size, info.st_mtime_ns, info.st_ctime_ns, info.st_ino)
        cached = self._hash_cache.get(path)
        if cached is not None and cached[0] == key:
            return cached[1]
        digest = hashlib.sha256()
        with open(path, "rb") as handle:
            while chunk := handle.read(_CHUNK):
                digest.update(chunk)
        self.files_hashed += 1
        self._hash_cache[path] = (key, digest.hexdigest())
        return digest.hexdigest()
