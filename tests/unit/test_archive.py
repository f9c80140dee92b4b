"""Deterministic packing and safe unpacking of folder artifacts."""

from __future__ import annotations

import hashlib
import io
import os
import tarfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ferryman.archive import pack_folder, safe_extract
from ferryman.errors import InvalidInput


def make_folder(root: Path) -> Path:
    folder = root / "custom"
    (folder / "pkg" / "__pycache__").mkdir(parents=True)
    (folder / "empty").mkdir()
    (folder / "model.py").write_text("class M: ...\n")
    (folder / "pkg" / "weights.bin").write_bytes(bytes(range(256)) * 10)
    (folder / "pkg" / "__pycache__" / "model.cpython-311.pyc").write_bytes(b"cache")
    (folder / "stale.pyc").write_bytes(b"cache")
    return folder


def pack(folder: Path) -> bytes:
    buffer = io.BytesIO()
    pack_folder(folder, buffer)
    return buffer.getvalue()


def write_tar(path: Path, *members: tuple[tarfile.TarInfo, bytes | None]) -> Path:
    with tarfile.open(path, "w") as tar:
        for info, data in members:
            if data is not None:
                info.size = len(data)
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    return path


def file_member(name: str, data: bytes = b"x") -> tuple[tarfile.TarInfo, bytes]:
    return tarfile.TarInfo(name), data


def link_member(name: str, kind: bytes, target: str = "") -> tuple[tarfile.TarInfo, None]:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = target
    return info, None


def test_pack_is_deterministic_across_mtimes_and_modes(tmp_path: Path) -> None:
    folder = make_folder(tmp_path)
    first = hashlib.sha256(pack(folder)).hexdigest()
    assert hashlib.sha256(pack(folder)).hexdigest() == first

    for path in [folder, *folder.rglob("*")]:
        os.utime(path, ns=(1_000_000_000_000, 1_700_000_000_000_000_000))
    (folder / "model.py").chmod(0o600)
    assert hashlib.sha256(pack(folder)).hexdigest() == first


def test_pack_content_change_changes_hash(tmp_path: Path) -> None:
    folder = make_folder(tmp_path)
    before = pack(folder)
    (folder / "model.py").write_text("class M: pass\n")
    assert pack(folder) != before


def test_pack_normalises_entries_and_skips_caches(tmp_path: Path) -> None:
    folder = make_folder(tmp_path)
    with tarfile.open(fileobj=io.BytesIO(pack(folder))) as tar:
        members = tar.getmembers()
    names = [m.name for m in members]
    assert names == sorted(names)
    assert names == ["empty", "model.py", "pkg", "pkg/weights.bin"]
    for member in members:
        assert (member.mtime, member.uid, member.gid, member.uname, member.gname) == (0, 0, 0, "", "")
        assert member.mode == (0o755 if member.isdir() else 0o644)


def test_pack_refuses_symlinks(tmp_path: Path) -> None:
    folder = make_folder(tmp_path)
    (folder / "pkg" / "link").symlink_to(folder / "model.py")
    with pytest.raises(InvalidInput, match=r"pkg/link is a symbolic link"):
        pack(folder)


def test_pack_refuses_a_file(tmp_path: Path) -> None:
    path = tmp_path / "file.bin"
    path.write_bytes(b"x")
    with pytest.raises(InvalidInput, match="not a folder"):
        pack(path)


def test_round_trip(tmp_path: Path) -> None:
    folder = make_folder(tmp_path)
    archive = tmp_path / "custom.tar"
    archive.write_bytes(pack(folder))
    out = tmp_path / "out"
    safe_extract(archive, out, max_bytes=1 << 20)
    assert (out / "model.py").read_text() == "class M: ...\n"
    assert (out / "pkg" / "weights.bin").read_bytes() == bytes(range(256)) * 10
    assert (out / "empty").is_dir()
    assert not (out / "pkg" / "__pycache__").exists()


@pytest.mark.parametrize(
    ("member", "message"),
    [
        (file_member("../evil"), r"'\.\./evil' has a '\.\.' component"),
        (file_member("ok/../../evil"), r"'ok/\.\./\.\./evil' has a '\.\.' component"),
        (file_member("/tmp/evil"), r"'/tmp/evil' has an absolute path"),
        (link_member("link", tarfile.SYMTYPE, "/etc/passwd"), r"'link' is a symbolic link"),
        (link_member("hard", tarfile.LNKTYPE, "model.py"), r"'hard' is a hard link"),
        (link_member("dev", tarfile.CHRTYPE), r"'dev' is a device or FIFO"),
        (link_member("fifo", tarfile.FIFOTYPE), r"'fifo' is a device or FIFO"),
    ],
)
def test_unsafe_members_are_refused(tmp_path: Path, member: tuple[tarfile.TarInfo, bytes | None], message: str) -> None:
    archive = write_tar(tmp_path / "evil.tar", file_member("model.py"), member)
    out = tmp_path / "sandbox" / "out"
    with pytest.raises(InvalidInput, match=message):
        safe_extract(archive, out, max_bytes=1 << 20)
    assert not out.exists(), "nothing is written when any member is refused"
    assert not (tmp_path / "sandbox" / "evil").exists()


def test_oversize_archive_is_refused(tmp_path: Path) -> None:
    archive = write_tar(tmp_path / "big.tar", file_member("a", b"x" * 600), file_member("b", b"y" * 600))
    with pytest.raises(InvalidInput, match=r"more than 1000 bytes \(reached at member 'b'\)"):
        safe_extract(archive, tmp_path / "out", max_bytes=1000)
    assert not (tmp_path / "out").exists()


def test_too_many_members_are_refused(tmp_path: Path) -> None:
    archive = write_tar(tmp_path / "many.tar", *(file_member(f"f{i}") for i in range(4)))
    with pytest.raises(InvalidInput, match=r"more than 3 members \(stopped at 'f3'\)"):
        safe_extract(archive, tmp_path / "out", max_bytes=1 << 20, max_members=3)


def test_not_a_tar_is_refused(tmp_path: Path) -> None:
    archive = tmp_path / "junk.tar"
    archive.write_bytes(b"definitely not a tar archive" * 40)
    with pytest.raises(InvalidInput, match=r"junk\.tar is not a valid tar archive"):
        safe_extract(archive, tmp_path / "out", max_bytes=1 << 20)


_names = st.text(alphabet="abcXYZ019_-.", min_size=1, max_size=8).filter(lambda n: n not in (".", ".."))


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(files=st.dictionaries(st.lists(_names, min_size=1, max_size=3).map(tuple), st.binary(max_size=64), max_size=6))
def test_pack_extract_round_trip_property(
    tmp_path_factory: pytest.TempPathFactory, files: dict[tuple[str, ...], bytes]
) -> None:
    base = tmp_path_factory.mktemp("prop")
    folder = base / "src"
    folder.mkdir()
    written: dict[str, bytes] = {}
    for parts, data in files.items():
        path = folder.joinpath(*parts)
        if any(p.exists() and p.is_file() for p in path.parents) or path.is_dir():
            continue
        if path.name.endswith(".pyc"):
            continue
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        written["/".join(parts)] = data
    archive = base / "src.tar"
    archive.write_bytes(pack(folder))
    assert pack(folder) == archive.read_bytes()
    out = base / "out"
    safe_extract(archive, out, max_bytes=1 << 20)
    found = {p.relative_to(out).as_posix(): p.read_bytes() for p in out.rglob("*") if p.is_file()}
    assert found == written
