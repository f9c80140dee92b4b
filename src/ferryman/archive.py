"""Deterministic folder packing and safe unpacking of uncompressed tar archives.

A folder model travels as a ``.tar``: the client packs it with :func:`pack_folder` and the
registry unpacks it with :func:`safe_extract`. Packing is reproducible (sorted entries, zeroed
times and owners, normalised modes), so the same folder always yields the same sha256 and a
re-push of unchanged files is recognised as an existing version.
"""

from __future__ import annotations

import os
import tarfile
from pathlib import Path, PurePosixPath
from typing import BinaryIO

from ferryman.errors import InvalidInput

__all__ = ["pack_folder", "safe_extract"]

_FILE_MODE = 0o644
_DIR_MODE = 0o755
_SKIPPED_DIRS = frozenset({"__pycache__"})
_SKIPPED_SUFFIXES = (".pyc",)


def _is_skipped(name: str, *, is_dir: bool) -> bool:
    """True for interpreter caches, which differ between machines and would change the hash."""
    return name in _SKIPPED_DIRS if is_dir else name.endswith(_SKIPPED_SUFFIXES)


def _entries(folder: Path) -> list[tuple[str, Path, bool]]:
    """Collect ``(archive name, path, is_dir)`` for everything under ``folder``, sorted by name."""
    entries: list[tuple[str, Path, bool]] = []
    pending = [folder]
    while pending:
        current = pending.pop()
        with os.scandir(current) as listing:
            for entry in listing:
                path = Path(entry.path)
                relative = path.relative_to(folder).as_posix()
                if entry.is_symlink():
                    raise InvalidInput(f"cannot pack {folder.name}: {relative} is a symbolic link")
                if entry.is_dir(follow_symlinks=False):
                    if not _is_skipped(entry.name, is_dir=True):
                        entries.append((relative, path, True))
                        pending.append(path)
                elif entry.is_file(follow_symlinks=False):
                    if not _is_skipped(entry.name, is_dir=False):
                        entries.append((relative, path, False))
                else:
                    raise InvalidInput(f"cannot pack {folder.name}: {relative} is not a regular file")
    # A parent's name is a prefix of its children's, so it sorts first and extracts first.
    entries.sort(key=lambda item: item[0])
    return entries


def pack_folder(folder: Path, dest: BinaryIO) -> None:
    """Write ``folder``'s contents to ``dest`` as a reproducible uncompressed tar.

    Entry names are relative to ``folder``; ``__pycache__`` folders and ``.pyc`` files are left
    out. Symbolic links and special files are refused with :class:`InvalidInput`.
    """
    if folder.is_symlink():
        raise InvalidInput(f"cannot pack {folder}: it is a symbolic link")
    if not folder.is_dir():
        raise InvalidInput(f"cannot pack {folder}: not a folder")
    entries = _entries(folder)
    with tarfile.open(fileobj=dest, mode="w|", format=tarfile.PAX_FORMAT) as tar:
        for name, path, is_dir in entries:
            info = tarfile.TarInfo(name)
            info.mtime = 0
            info.uid = info.gid = 0
            info.uname = info.gname = ""
            if is_dir:
                info.type = tarfile.DIRTYPE
                info.mode = _DIR_MODE
                tar.addfile(info)
                continue
            info.type = tarfile.REGTYPE
            info.mode = _FILE_MODE
            with path.open("rb") as handle:
                info.size = os.fstat(handle.fileno()).st_size
                tar.addfile(info, handle)


def _check_name(member: tarfile.TarInfo) -> None:
    """Refuse names that could land outside the destination folder."""
    name = member.name
    posix = PurePosixPath(name.replace("\\", "/"))
    if posix.is_absolute() or (len(name) > 1 and name[1] == ":"):
        raise InvalidInput(f"archive member {name!r} has an absolute path")
    if ".." in posix.parts:
        raise InvalidInput(f"archive member {name!r} has a '..' component")
    if "\x00" in name:
        raise InvalidInput(f"archive member {name!r} has a NUL byte in its name")


def _check_type(member: tarfile.TarInfo) -> None:
    """Allow only regular files and folders; links and devices could escape or block."""
    if member.isfile() or member.isdir():
        return
    if member.issym():
        kind = "a symbolic link"
    elif member.islnk():
        kind = "a hard link"
    elif member.isdev():
        kind = "a device or FIFO"
    else:
        kind = "of an unsupported type"
    raise InvalidInput(f"archive member {member.name!r} is {kind}")


def safe_extract(archive: Path, dest: Path, *, max_bytes: int, max_members: int = 10000) -> None:
    """Extract the tar at ``archive`` into ``dest``, refusing anything unsafe.

    Every member is checked before anything is written: absolute paths, ``..`` components,
    links, devices, more than ``max_members`` entries or more than ``max_bytes`` in total each
    raise :class:`InvalidInput` naming the member. tarfile's ``data`` filter runs as well.
    """
    try:
        with tarfile.open(archive, mode="r:") as tar:
            members: list[tarfile.TarInfo] = []
            total = 0
            while (member := tar.next()) is not None:
                if len(members) >= max_members:
                    raise InvalidInput(
                        f"archive {archive.name} has more than {max_members} members (stopped at {member.name!r})"
                    )
                _check_name(member)
                _check_type(member)
                total += member.size
                if total > max_bytes:
                    raise InvalidInput(
                        f"archive {archive.name} unpacks to more than {max_bytes} bytes "
                        f"(reached at member {member.name!r})"
                    )
                members.append(member)
            dest.mkdir(parents=True, exist_ok=True)
            tar.extractall(dest, members=members, filter="data")
    except tarfile.FilterError as exc:
        raise InvalidInput(f"archive {archive.name} refused: {exc}") from exc
    except tarfile.TarError as exc:
        raise InvalidInput(f"archive {archive.name} is not a valid tar archive: {exc}") from exc
